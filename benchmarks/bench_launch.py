"""camvis-launch of configs/all_architectures.yaml (72 jobs) on the local SLURM cluster.

    bash slurm/cluster.sh start
    .venv/bin/python benchmarks/bench_launch.py                       # 3 repeats, target <= 3 s, 2 sbatch
    .venv/bin/python benchmarks/bench_launch.py --repeats 5 --json benchmarks/results/launch.json
    .venv/bin/python benchmarks/bench_launch.py --jobs 5000 --hold    # a grid over MaxArraySize

--jobs N launches a grid of exactly N jobs instead: all_architectures.yaml's base and resources
with one axis, train.seed = 0..N-1 (fold 1). Over the cluster's MaxArraySize (scontrol show config,
1001 by default) it is split into several arrays: the expected sbatch calls are then the arrays + 1.

Each repeat runs the real command, `camvis-launch configs/all_architectures.yaml`, as a fresh
process (interpreter start and imports included) with a fresh experiment name, and measures
wall-clock seconds from the command's start until it has returned, when every job is queued
(sbatch returns only once slurmctld has accepted the job; checked with squeue afterwards).
sbatch calls are counted by a shim first on PATH that logs each call and runs the real
sbatch. `cpu_s` is the CPU time (user + system) of the command and the processes it waited for
(sbatch, sinfo, scontrol, git), beside the load average when it started: on a shared machine the
wall-clock time grows with the load, the CPU time much less. `sbatch_s` is the time spent in sbatch
calls (slurmctld accepting the jobs, measured by the shim). --pause S waits S seconds before
each repeat after the first: slurmctld answers sbatch slowly while it purges thousands of
cancelled jobs (MinJobAge), and a repeat should time a launch, not that. The local node has no
GPU and 22 GB, so the paper resources are overridden to fit (slurm.gpus_per_node=0,
slurm.mem_gb=1) and the jobs are submitted held (--hold, the default;
slurm.additional.hold=true): they never run. Everything is cancelled (scancel) afterwards.
(train.batch_size=4 too: the launch's memory preflight would refuse the paper batch in 1 GB.)

    .venv/bin/python benchmarks/bench_launch.py --jobs 5000 --map-array   # submitit's public map_array

--map-array runs the same command with each array submitted by submitit's public map_array (one
pickle file per task) instead of camvis's tasks file (camvis.cluster.array_submit, which needs
submitit's private _submit_command: camvis/adapters/submitit_api.py): what that private use gains.
"""

from __future__ import annotations

NEEDS = """needs: the local SLURM cluster (bash slurm/cluster.sh start) and configs/all_architectures.yaml's store,
data/processed/camvis2.zarr (9 views); make it with
  camvis-data synth data/raw/camvis2 --views 9 && camvis-data build data/raw/camvis2 data/processed/camvis2.zarr
"""

import argparse
import json
import os
import platform
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
GRID = ROOT / "configs" / "all_architectures.yaml"
TARGET_S = 3.0
TARGET_SBATCH = 2  # the array and the aggregate job (--jobs N: one sbatch per array + 1)
FIT_LOCAL = ["slurm.gpus_per_node=0", "slurm.mem_gb=1", "slurm.cpus_per_task=1", "train.batch_size=4"]
HOLD = "slurm.additional.hold=true"
MAP_ARRAY = ("import sys; import camvis.cluster.launch as launch; "
             "launch.submit_array = lambda ex, fn, args: ex.map_array(fn, *zip(*args)); "
             "from camvis.cli.launch import main; sys.argv[0] = 'camvis-launch'; sys.exit(main())")


def grid_of(jobs: int, folder: Path) -> Path:
    """A grid of exactly `jobs` jobs: all_architectures.yaml's base and slurm, one axis train.seed."""
    import yaml

    raw = yaml.safe_load(GRID.read_text())
    raw.update(experiment=f"bench_launch_{jobs}", description=f"{jobs} jobs for bench_launch.py",
               axes={"train.seed": list(range(jobs))})
    raw["base"]["data"]["store"] = str(ROOT / raw["base"]["data"]["store"])  # the grid is written elsewhere
    raw.pop("folds", None)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"grid_{jobs}.yaml"
    path.write_text(yaml.safe_dump(raw, sort_keys=False))
    return path


def expected_sbatch(jobs: int | None) -> int:
    """The arrays camvis-launch splits `jobs` into under this cluster's MaxArraySize, + the aggregate."""
    if jobs is None:
        return TARGET_SBATCH
    from camvis.cluster.sbatch import max_array_size, split_arrays

    return len(split_arrays(jobs, max_array_size())) + 1


def shim(folder: Path) -> Path:
    """A counting sbatch first on PATH: the real sbatch, then one line per call in calls.log with its
    start and end (seconds): how long slurmctld took to accept the job."""
    real = shutil.which("sbatch")
    if real is None:
        sys.exit("sbatch is not on PATH: start the local cluster first (bash slurm/cluster.sh start)")
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "sbatch").write_text(f'#!/bin/sh\nstart=$(date +%s.%N)\n"{real}" "$@"\nrc=$?\n'
                                   f'echo "$start $(date +%s.%N) $*" >> "{folder}/calls.log"\nexit $rc\n')
    (folder / "sbatch").chmod(0o755)
    return folder


def queued(job_id: str) -> int:
    out = subprocess.run(["squeue", "-h", "-r", "-j", job_id, "-o", "%i"], capture_output=True, text=True).stdout
    return len(out.split())


def one_launch(work: Path, index: int, grid: Path, overrides: list[str], map_array: bool = False) -> dict:
    exp = f"bench_launch_{os.getpid()}_{index}"
    shim_dir = shim(work / f"shim{index}")
    env = {**os.environ, "PATH": f"{shim_dir}{os.pathsep}{os.environ['PATH']}"}
    launcher = [sys.executable, "-c", MAP_ARRAY] if map_array else [str(Path(sys.executable).parent / "camvis-launch")]
    command = [*launcher, str(grid), f"experiment={exp}", *overrides,
               "--outputs", str(work / "outputs"), "--jobs-dir", str(work / "jobs")]
    load = os.getloadavg()  # the machine is shared: wall-clock seconds grow with it, CPU seconds much less
    used0 = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    proc = subprocess.run(command, capture_output=True, text=True, env=env, cwd=ROOT)
    seconds = time.perf_counter() - t0
    used = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (used.ru_utime - used0.ru_utime) + (used.ru_stime - used0.ru_stime)
    if proc.returncode != 0:
        sys.exit(f"camvis-launch failed ({proc.returncode}):\n{proc.stderr}{proc.stdout[-2000:]}")
    manifest = json.loads((work / "jobs" / exp / "manifest.json").read_text())
    launch = manifest["launches"][-1]
    lines = [line.split() for line in (shim_dir / "calls.log").read_text().splitlines()]
    calls, in_sbatch = len(lines), sum(float(end) - float(start) for start, end, *_ in lines)
    arrays = launch.get("array_ids") or [launch["array_id"]]
    in_queue = sum(queued(a) for a in arrays) + queued(launch["aggregate_id"])
    subprocess.run(["scancel", *arrays, launch["aggregate_id"]], check=True)
    return {"seconds": seconds, "cpu_s": cpu, "sbatch_s": in_sbatch, "load_avg": load, "sbatch_calls": calls,
            "manifest_sbatch_calls": launch["sbatch_calls"],
            "jobs": len(launch["submitted"]), "arrays": len(arrays), "queued_after_return": in_queue,
            "tasks_files": len(list((work / "jobs" / exp).glob("*_tasks.pkl")))}  # 0 with --map-array


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(epilog=NEEDS, description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--pause", type=float, default=0.0,
                        help="seconds to wait before each repeat after the first (slurmctld purging the last one)")
    parser.add_argument("--json", type=Path, help="also write the results here")
    parser.add_argument("--jobs", type=int, help="a grid of exactly this many jobs (default: all_architectures, 72)")
    parser.add_argument("--hold", action=argparse.BooleanOptionalAction, default=True,
                        help="submit the jobs held (default): they never run")
    parser.add_argument("--map-array", action="store_true",
                        help="submit each array through submitit's public map_array instead of the tasks file")
    args = parser.parse_args(argv)
    store = ROOT / "data" / "processed" / "camvis2.zarr"
    if not store.exists():  # preflight would refuse every launch: say so, and how to make it
        print(f"bench_launch.py: no {store}; {NEEDS}", file=sys.stderr, end="")
        return 2
    overrides = [*FIT_LOCAL, *([HOLD] if args.hold else [])]
    target_sbatch = expected_sbatch(args.jobs)
    with tempfile.TemporaryDirectory(prefix="bench_launch_") as tmp:
        grid = GRID if args.jobs is None else grid_of(args.jobs, Path(tmp))
        runs = []
        for i in range(args.repeats):
            time.sleep(args.pause if i else 0)
            runs.append(one_launch(Path(tmp), i, grid, overrides, args.map_array))
    seconds = [r["seconds"] for r in runs]
    what = "all_architectures.yaml (72 jobs)" if args.jobs is None else f"a {args.jobs}-job grid (--jobs)"
    what += ", submitit's map_array" if args.map_array else ""
    result = {
        "benchmark": f"launch {what} on the local SLURM",
        "command": "python benchmarks/bench_launch.py " + " ".join(argv if argv is not None else sys.argv[1:]),
        "overrides": overrides,
        "repeats": runs, "median_s": statistics.median(seconds), "max_s": max(seconds),
        "median_cpu_s": statistics.median(r["cpu_s"] for r in runs),
        "median_sbatch_s": statistics.median(r["sbatch_s"] for r in runs),
        "sbatch_calls": max(r["sbatch_calls"] for r in runs), "target_s": TARGET_S, "target_sbatch": target_sbatch,
        "machine": f"{platform.node()} {os.cpu_count()} CPUs, Python {platform.python_version()}",
        "load_avg": os.getloadavg(),
    }
    for i, r in enumerate(runs):
        print(f"repeat {i}: {r['seconds']:.2f} s ({r['sbatch_s']:.2f} s of it in sbatch; {r['cpu_s']:.2f} s CPU, "
              f"load {r['load_avg'][0]:.1f}), "
              f"{r['sbatch_calls']} sbatch calls, {r['jobs']} jobs in "
              f"{r['arrays']} array(s), "
              f"{r['queued_after_return']} in the queue when the command returned")
    ok = result["median_s"] <= TARGET_S and result["sbatch_calls"] == target_sbatch and \
        all(r["queued_after_return"] == r["jobs"] + 1 for r in runs)
    print(f"median {result['median_s']:.2f} s (max {result['max_s']:.2f} s), {result['sbatch_calls']} sbatch calls; "
          f"target <= {TARGET_S} s and {target_sbatch} calls: {'met' if ok else 'NOT met'}")
    if args.json:
        from camvis.io import write_json

        write_json(args.json, result)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
