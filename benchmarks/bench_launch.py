"""camvis-launch of configs/all_architectures.yaml (72 jobs) on the local SLURM cluster.

    bash slurm/cluster.sh start
    .venv/bin/python benchmarks/bench_launch.py                       # 3 repeats, target <= 3 s, 2 sbatch
    .venv/bin/python benchmarks/bench_launch.py --repeats 5 --json benchmarks/results/launch.json

Each repeat runs the real command, `camvis-launch configs/all_architectures.yaml`, as a fresh
process (interpreter start and imports included) with a fresh experiment name, and measures
wall-clock seconds from the command's start until it has returned, when every job is queued
(sbatch returns only once slurmctld has accepted the job; checked with squeue afterwards).
sbatch calls are counted by a shim first on PATH that logs each call and runs the real
sbatch. The local node has no GPU and 22 GB, so the paper resources are overridden to
fit (slurm.gpus_per_node=0, slurm.mem_gb=1) and the jobs are submitted held (--hold): they
never run. Everything is cancelled (scancel) afterwards.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
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
TARGET_SBATCH = 2
FIT_LOCAL = ["slurm.gpus_per_node=0", "slurm.mem_gb=1", "slurm.cpus_per_task=1", "slurm.additional.hold=true"]


def shim(folder: Path) -> Path:
    """A counting sbatch first on PATH: one line per call in calls.log, then the real sbatch."""
    real = shutil.which("sbatch")
    if real is None:
        sys.exit("sbatch is not on PATH: start the local cluster first (bash slurm/cluster.sh start)")
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "sbatch").write_text(f'#!/bin/sh\necho "$@" >> "{folder}/calls.log"\nexec "{real}" "$@"\n')
    (folder / "sbatch").chmod(0o755)
    return folder


def queued(job_id: str) -> int:
    out = subprocess.run(["squeue", "-h", "-r", "-j", job_id, "-o", "%i"], capture_output=True, text=True).stdout
    return len(out.split())


def one_launch(work: Path, index: int) -> dict:
    exp = f"bench_launch_{os.getpid()}_{index}"
    shim_dir = shim(work / f"shim{index}")
    env = {**os.environ, "PATH": f"{shim_dir}{os.pathsep}{os.environ['PATH']}"}
    command = [str(Path(sys.executable).parent / "camvis-launch"), str(GRID), f"experiment={exp}", *FIT_LOCAL,
               "--outputs", str(work / "outputs"), "--jobs-dir", str(work / "jobs")]
    t0 = time.perf_counter()
    proc = subprocess.run(command, capture_output=True, text=True, env=env, cwd=ROOT)
    seconds = time.perf_counter() - t0
    if proc.returncode != 0:
        sys.exit(f"camvis-launch failed ({proc.returncode}):\n{proc.stderr}{proc.stdout[-2000:]}")
    manifest = json.loads((work / "jobs" / exp / "manifest.json").read_text())
    launch = manifest["launches"][-1]
    calls = len((shim_dir / "calls.log").read_text().splitlines())
    in_queue = queued(launch["array_id"]) + queued(launch["aggregate_id"])
    subprocess.run(["scancel", launch["array_id"], launch["aggregate_id"]], check=True)
    return {"seconds": seconds, "sbatch_calls": calls, "manifest_sbatch_calls": launch["sbatch_calls"],
            "jobs": len(launch["submitted"]), "queued_after_return": in_queue}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--json", type=Path, help="also write the results here")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="bench_launch_") as tmp:
        runs = [one_launch(Path(tmp), i) for i in range(args.repeats)]
    seconds = [r["seconds"] for r in runs]
    result = {
        "benchmark": "launch all_architectures.yaml (72 jobs) on the local SLURM",
        "command": "camvis-launch configs/all_architectures.yaml " + " ".join(FIT_LOCAL),
        "repeats": runs, "median_s": statistics.median(seconds), "max_s": max(seconds),
        "sbatch_calls": max(r["sbatch_calls"] for r in runs), "target_s": TARGET_S, "target_sbatch": TARGET_SBATCH,
        "machine": f"{platform.node()} {os.cpu_count()} CPUs, Python {platform.python_version()}",
        "load_avg": os.getloadavg(),
    }
    for i, r in enumerate(runs):
        print(f"repeat {i}: {r['seconds']:.2f} s, {r['sbatch_calls']} sbatch calls, {r['jobs']} jobs, "
              f"{r['queued_after_return']} in the queue when the command returned")
    ok = result["median_s"] <= TARGET_S and result["sbatch_calls"] == TARGET_SBATCH and \
        all(r["queued_after_return"] == r["jobs"] + 1 for r in runs)
    print(f"median {result['median_s']:.2f} s (max {result['max_s']:.2f} s), {result['sbatch_calls']} sbatch calls; "
          f"target <= {TARGET_S} s and {TARGET_SBATCH} calls: {'met' if ok else 'NOT met'}")
    if args.json:
        from camvis.io import write_json

        write_json(args.json, result)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
