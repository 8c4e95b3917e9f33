"""Job start-up at paper size: from a job's start to its first training step, phase by phase, with the
store read from its shared path or from a node-local copy (data.stage, camvis.data.stage).

    .venv/bin/python benchmarks/bench_startup.py --store S.zarr   # an existing paper-size store
    .venv/bin/python benchmarks/bench_startup.py                  # synthesize 2 views x 2 images of
                                                                  # 4140 x 6198 and build their store first

Every measurement is a fresh process doing what a job does first (camvis.job.startup.open_job_inputs
on the CPU, then the paper model's first training step): imports, stage (copy or reuse), open
(attributes, digest, patch table), levels (read, CRC-check and pad the pyramid: factors 2..32), first
step (build the model, one batch of 2 on the CPU, forward, backward, Adam step). Each phase is timed in wall and
CPU seconds. Scenarios: the shared path with a cold and a warm page cache; data.stage for the first job
of a node (it copies) and a later one (it reuses, cold and warm); and N jobs starting at once with
data.stage. "Cold" drops the page cache first (`echo 3 > /proc/sys/vm/drop_caches`, root only; the
JSON says whether it worked). Figures: benchmarks/results/startup.json (--json).

On a cluster the shared path is a network file system and the stage folder a node-local disk; here
both are the same disk, so the figures show the mechanism's own cost and the page cache's effect, not
a network file system's.

    .venv/bin/python benchmarks/bench_startup.py --layouts --json benchmarks/results/startup_mmap.json

--layouts compares the two store layouts in one run instead (warm page cache): today's compressed one
(zstd level arrays, built with --compress, read by each job into its own memory) and the mapped one
(data.stage's node-local copy of the same store, uncompressed, which every job memory-maps), for 1 and
4 jobs started at once on this node. Per job: levels ready (open_job_inputs' levels phase), time to
the first training step, RSS and PSS (/proc/PID/smaps_rollup, read while all N jobs are alive, after
their first step), and the page cache the store's files occupy (mincore over every file).
"""

from __future__ import annotations

NEEDS = """needs: nothing (it synthesizes 2 views x 2 paper-size images and builds their store), or --store S.zarr.
"""

import argparse
import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

FACTORS = [2, 4, 8, 16, 32]
PAPER_IMAGES, PAPER_VIEWS = 121, 9


def _child(store: str, stage_root: str | None, load_threads: int | None, barrier: str | None = None) -> None:
    """In a fresh process: a job's start; one JSON line of phase -> [wall s, cpu s]."""
    t0, c0 = time.perf_counter(), time.process_time()
    import torch
    import torch.nn.functional as F

    from camvis.config import load_job_config
    from camvis.job import batches
    from camvis.job.startup import open_job_inputs
    from camvis.model import build_model

    phases = {"import": [time.perf_counter() - t0, time.process_time() - c0]}
    if load_threads is not None:
        batches.LOAD_THREADS = load_threads
    overrides = [f"data.store={store}", f"data.factors={FACTORS}", "train.batch_size=2"]
    if stage_root is not None:
        overrides.append(f"data.stage={stage_root}")
    cfg = load_job_config(None, overrides)
    t, c = time.perf_counter(), time.process_time()
    inputs, timing = open_job_inputs(cfg, torch.device("cpu"), log=lambda line: None)
    wall, cpu = time.perf_counter() - t, time.process_time() - c
    # open_job_inputs times its phases in wall seconds; the CPU time is told for them together
    phases.update({k[:-2]: [timing[k], None] for k in ("stage_s", "open_s", "verify_s", "levels_s") if k in timing})
    phases["inputs"] = [wall, cpu]
    t, c = time.perf_counter(), time.process_time()
    torch.manual_seed(0)
    model = build_model(cfg, inputs.store.patch_size)
    opt = torch.optim.Adam(model.parameters(), lr=cfg.train.lr)
    x, y, _ = inputs.source.batch(torch.as_tensor(inputs.train_idx[:cfg.train.batch_size]))
    F.binary_cross_entropy_with_logits(model(x).float(), y).backward()
    opt.step()
    phases["first_step"] = [time.perf_counter() - t, time.process_time() - c]
    phases["to_first_step"] = [time.perf_counter() - t0, time.process_time() - c0]
    memory = _wait_and_measure(Path(barrier)) if barrier else None
    print(json.dumps({"phases": phases, "stage": timing["stage"], "threads": torch.get_num_threads(),
                      "load_threads": min(torch.get_num_threads(), batches.LOAD_THREADS),
                      "pyramid_bytes": inputs.source.nbytes, "mapped": inputs.store.mapped, "memory": memory}))


def _wait_and_measure(barrier: Path) -> dict:
    """Say this job is past its first step, wait until every job of the run is, then read this process's
    /proc/self/smaps_rollup (kB -> bytes): PSS splits each shared page between the processes mapping it."""
    (barrier / f"ready-{os.getpid()}").write_text("")
    while not (barrier / "go").exists():
        time.sleep(0.05)
    out = {}
    for line in Path("/proc/self/smaps_rollup").read_text().splitlines()[1:]:
        key, value = line.split(":", 1)
        if key in ("Rss", "Pss", "Pss_Anon", "Pss_File", "Private_Dirty", "Shared_Clean"):
            out[key] = int(value.split()[0]) * 1024
    return out


def resident_bytes(root: Path) -> int:
    """Bytes of the files under `root` in the page cache (mincore over each file's map)."""
    import ctypes
    import mmap

    import numpy as np

    libc = ctypes.CDLL(None, use_errno=True)
    libc.mincore.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_void_p]
    page, total = mmap.PAGESIZE, 0
    for path in root.rglob("*"):
        size = path.stat().st_size if path.is_file() else 0
        if size == 0:
            continue
        with open(path, "rb") as f, mmap.mmap(f.fileno(), size, prot=mmap.PROT_READ) as m:
            view = np.frombuffer(m, np.uint8)  # only for the map's address: mapping reads nothing
            vec = np.zeros((size + page - 1) // page, np.uint8)
            if libc.mincore(ctypes.c_void_p(view.ctypes.data), size, ctypes.c_void_p(vec.ctypes.data)) != 0:
                raise OSError(ctypes.get_errno(), f"mincore {path}")
            total += int(np.count_nonzero(vec & 1)) * page
            del view
    return total


def _drop_caches() -> bool:
    try:
        os.sync()
        Path("/proc/sys/vm/drop_caches").write_text("3\n")
        return True
    except OSError:
        return False


def _spawn(store: str, stage_root: Path | None, load_threads: int | None = None,
           barrier: Path | None = None) -> subprocess.Popen:
    cmd = [sys.executable, __file__, "--child", store]
    if stage_root is not None:
        cmd += ["--stage-root", str(stage_root)]
    if load_threads is not None:
        cmd += ["--load-threads", str(load_threads)]
    if barrier is not None:
        cmd += ["--barrier", str(barrier)]
    return subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True)


def _result(proc: subprocess.Popen) -> dict:
    out, _ = proc.communicate()
    if proc.returncode != 0:
        raise SystemExit(f"a measured job failed (exit {proc.returncode})")
    return json.loads(out.strip().splitlines()[-1])


def _run(store: str, stage_root: Path | None, *, cold: bool = False, fresh_stage: bool = False,
         load_threads: int | None = None) -> dict:
    if fresh_stage and stage_root is not None:
        shutil.rmtree(stage_root / "camvis-stage", ignore_errors=True)
    dropped = _drop_caches() if cold else None
    result = _result(_spawn(store, stage_root, load_threads))
    result["caches_dropped"] = dropped
    return result


def _median(runs: list[dict]) -> dict:
    """Per phase, the median wall and CPU seconds over the runs."""
    phases = runs[0]["phases"]
    out = {}
    for name in phases:
        walls = [r["phases"][name][0] for r in runs]
        cpus = [r["phases"][name][1] for r in runs if r["phases"][name][1] is not None]
        out[name] = {"wall_s": round(statistics.median(walls), 3),
                     "cpu_s": round(statistics.median(cpus), 3) if cpus else None}
    return {"phases": out, "stage": runs[0]["stage"], "runs": len(runs),
            "caches_dropped": runs[0]["caches_dropped"], "load_threads": runs[0]["load_threads"]}


def compare_layouts(compressed: str, stage_root: Path, counts: tuple[int, ...] = (1, 4)) -> dict:
    """Today's compressed layout (each job decodes the store into its own memory) beside the mapped one
    (data.stage's mappable copy of the same store, which every job maps), N jobs at once, warm cache."""
    from camvis.data import stage

    staged = stage.stage_store(compressed, stage_root)  # the node's copy, made (and verified) once
    layouts = {"compressed": (compressed, None), "mapped_staged": (compressed, stage_root)}
    out: dict = {"staging": {"seconds": round(staged.seconds, 3), "path": str(staged.path)}}
    for name, (store, root) in layouts.items():
        for n in counts:
            barrier = Path(tempfile.mkdtemp(prefix="barrier-", dir=stage_root))
            procs = [_spawn(store, root, barrier=barrier) for _ in range(n)]
            while len(list(barrier.glob("ready-*"))) < n:
                if any(p.poll() not in (None, 0) for p in procs):
                    raise SystemExit("a measured job failed")
                time.sleep(0.1)
            files = Path(compressed) if root is None else staged.path
            cache = resident_bytes(files)
            (barrier / "go").write_text("")
            runs = [_result(p) for p in procs]
            shutil.rmtree(barrier, ignore_errors=True)
            mem = [r["memory"] for r in runs]
            out[f"{name}_{n}_jobs"] = {
                "mapped": runs[0]["mapped"],
                # verification, once split out of the levels phase, counted in it as the recorded results do
                "levels_s": sorted(round(r["phases"]["levels"][0] + r["phases"].get("verify", [0.0])[0], 3)
                                   for r in runs),
                "to_first_step_s": sorted(round(r["phases"]["to_first_step"][0], 3) for r in runs),
                "rss_gib": sorted(round(m["Rss"] / 2**30, 3) for m in mem),
                "pss_gib": sorted(round(m["Pss"] / 2**30, 3) for m in mem),
                "pss_file_gib": sorted(round(m.get("Pss_File", 0) / 2**30, 3) for m in mem),
                "pss_anon_gib": sorted(round(m.get("Pss_Anon", 0) / 2**30, 3) for m in mem),
                "pss_sum_gib": round(sum(m["Pss"] for m in mem) / 2**30, 3),
                "private_pyramid_gib": round(max(r["pyramid_bytes"] for r in runs) / 2**30, 3),
                "store_page_cache_gib": round(cache / 2**30, 3),
                "store_files_gib": round(_store_size(files) / 2**30, 3),
            }
            print(f"{name}_{n}_jobs: {out[f'{name}_{n}_jobs']}", flush=True)
        if len(counts) > 1:
            one, many = out[f"{name}_{counts[0]}_jobs"], out[f"{name}_{counts[-1]}_jobs"]
            out[f"{name}_pss_per_extra_job_gib"] = round(
                (many["pss_sum_gib"] - one["pss_sum_gib"]) / (counts[-1] - counts[0]), 3)
    return out


def _store_size(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def measure(store: str, stage_root: Path, repeats: int, concurrent: int) -> dict:
    scenarios = {
        "shared_cold": lambda: _run(store, None, cold=True),
        "shared_warm": lambda: _run(store, None),
        "shared_warm_1_load_thread": lambda: _run(store, None, load_threads=1),
        "staged_first_job_cold": lambda: _run(store, stage_root, cold=True, fresh_stage=True),
        "staged_later_job_cold": lambda: _run(store, stage_root, cold=True),
        "staged_later_job_warm": lambda: _run(store, stage_root),
    }
    results = {}
    for name, scenario in scenarios.items():
        runs = []
        for _ in range(repeats):
            runs.append(scenario())
        results[name] = _median(runs)
        print(f"{name:28s} " + "  ".join(f"{k} {v['wall_s']:.2f}" for k, v in results[name]["phases"].items()),
              flush=True)
    results.update(_concurrent(store, stage_root, concurrent))
    return results


def _concurrent(store: str, stage_root: Path, n: int) -> dict:
    """n jobs started together on one node, cold cache: from the shared path, then with data.stage
    (one copies, the others wait for its copy)."""
    out = {}
    for name, root in ((f"{n}_jobs_at_once_shared_cold", None), (f"{n}_jobs_at_once_staged_cold", stage_root)):
        shutil.rmtree(stage_root / "camvis-stage", ignore_errors=True)
        dropped = _drop_caches()
        start = time.perf_counter()
        runs = [_result(p) for p in [_spawn(store, root) for _ in range(n)]]
        out[name] = {"wall_s_all_started": round(time.perf_counter() - start, 3), "caches_dropped": dropped,
                     "stage": sorted(str(r["stage"]) for r in runs),
                     "to_first_step_wall_s": sorted(round(r["phases"]["to_first_step"][0], 3) for r in runs),
                     "stage_wall_s": sorted(round(r["phases"].get("stage", [0.0])[0], 3) for r in runs)}
        print(f"{name:28s} {out[name]}", flush=True)
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(epilog=NEEDS, description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--store", help="a paper-size store (default: synthesize 2 views x 2 images and build it)")
    p.add_argument("--keep", help="synthesize and build under this folder and keep it (reuse with --store)")
    p.add_argument("--repeats", type=int, default=2, help="runs per scenario, median reported (default 2)")
    p.add_argument("--concurrent", type=int, default=3, help="jobs started at once (default 3)")
    p.add_argument("--json", help="write the figures here (e.g. benchmarks/results/startup.json)")
    p.add_argument("--child", help=argparse.SUPPRESS)
    p.add_argument("--stage-root", help=argparse.SUPPRESS)
    p.add_argument("--load-threads", type=int, help=argparse.SUPPRESS)
    p.add_argument("--barrier", help=argparse.SUPPRESS)
    p.add_argument("--layouts", action="store_true",
                   help="compare the compressed and the mapped store layout, 1 and 4 jobs at once (warm cache)")
    args = p.parse_args(argv)
    if args.child:
        _child(args.child, args.stage_root, args.load_threads, args.barrier)
        return 0
    with tempfile.TemporaryDirectory(prefix="bench-startup-") as scratch:
        store = args.store
        if store is None:
            from camvis.data import store_build, synth

            tmp = Path(args.keep or scratch)
            raw = synth.synthesize(tmp / "raw", views=2, images_per_view=2, size=synth.PAPER_SIZE, progress=False)
            store = str(store_build.build(raw, tmp / "paper.zarr", progress=False, figure=False,
                                          compress=args.layouts).path)
            shutil.rmtree(raw)
        stage_root = Path(scratch) / "node-local"
        stage_root.mkdir()
        load_before = os.getloadavg()
        if args.layouts:
            return _layouts_report(args, argv, store, stage_root, load_before)
        scenarios = measure(store, stage_root, args.repeats, args.concurrent)
        from camvis.data.store import open_store

        opened = open_store(store)
        n_images, n_views = len(opened.images), len(opened.views)
        levels = scenarios["shared_warm"]["phases"]["levels"]["wall_s"]
        result = {
            "command": "benchmarks/bench_startup.py " + " ".join(argv if argv is not None else sys.argv[1:]),
            "host": socket.gethostname(), "cpu_threads": os.cpu_count(),
            "load_average_before": load_before, "load_average_after": os.getloadavg(),
            "store": {"images": n_images, "views": n_views, "image_shape": list(opened.image_shape),
                      "factors": FACTORS, "bytes_on_disk": _store_size(Path(store))},
            "shared_and_stage_on_one_disk": True,
            "scenarios": scenarios,
            "levels_s_per_image_warm": round(levels / n_images, 3),
            "paper_levels_s_estimate_warm": round(levels / n_images * PAPER_IMAGES, 1),
        }
    text = json.dumps(result, indent=2)
    print(text)
    if args.json:
        Path(args.json).write_text(text + "\n")
    return 0


def _layouts_report(args: argparse.Namespace, argv: list[str] | None, store: str, stage_root: Path,
                    load_before: tuple[float, float, float]) -> int:
    from camvis.data.store import open_store

    opened = open_store(store)
    if opened.mapped:
        raise SystemExit(f"--layouts compares a compressed store with its mapped copy: {store} is uncompressed "
                         "(build it with camvis-data build --compress)")
    layouts = compare_layouts(store, stage_root)
    result = {
        "command": "benchmarks/bench_startup.py " + " ".join(argv if argv is not None else sys.argv[1:]),
        "host": socket.gethostname(), "cpu_threads": os.cpu_count(),
        "load_average_before": load_before, "load_average_after": os.getloadavg(),
        "store": {"images": len(opened.images), "views": len(opened.views), "image_shape": list(opened.image_shape),
                  "factors": FACTORS, "compressed_bytes": _store_size(Path(store))},
        "page_cache": "warm (the store was just built and staged)",
        "layouts": layouts,
    }
    text = json.dumps(result, indent=2)
    print(text)
    if args.json:
        Path(args.json).write_text(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
