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


def _child(store: str, stage_root: str | None, load_threads: int | None) -> None:
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
    # open_job_inputs times its phases in wall seconds; the CPU time is told for the three together
    phases.update({k[:-2]: [timing[k], None] for k in ("stage_s", "open_s", "levels_s") if k in timing})
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
    print(json.dumps({"phases": phases, "stage": timing["stage"], "threads": torch.get_num_threads(),
                      "load_threads": min(torch.get_num_threads(), batches.LOAD_THREADS),
                      "pyramid_bytes": inputs.source.nbytes}))


def _drop_caches() -> bool:
    try:
        os.sync()
        Path("/proc/sys/vm/drop_caches").write_text("3\n")
        return True
    except OSError:
        return False


def _spawn(store: str, stage_root: Path | None, load_threads: int | None = None) -> subprocess.Popen:
    cmd = [sys.executable, __file__, "--child", store]
    if stage_root is not None:
        cmd += ["--stage-root", str(stage_root)]
    if load_threads is not None:
        cmd += ["--load-threads", str(load_threads)]
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
    args = p.parse_args(argv)
    if args.child:
        _child(args.child, args.stage_root, args.load_threads)
        return 0
    with tempfile.TemporaryDirectory(prefix="bench-startup-") as scratch:
        store = args.store
        if store is None:
            from camvis.data import store_build, synth

            tmp = Path(args.keep or scratch)
            raw = synth.synthesize(tmp / "raw", views=2, images_per_view=2, size=synth.PAPER_SIZE, progress=False)
            store = str(store_build.build(raw, tmp / "paper.zarr", progress=False, figure=False).path)
            shutil.rmtree(raw)
        stage_root = Path(scratch) / "node-local"
        stage_root.mkdir()
        load_before = os.getloadavg()
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


if __name__ == "__main__":
    sys.exit(main())
