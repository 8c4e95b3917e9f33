"""Peak host memory of a paper-size job's start (open the store, load the pyramid), measured.

    .venv/bin/python benchmarks/bench_memory.py                 # 2 views x 1 paper-size image
    .venv/bin/python benchmarks/bench_memory.py --store S.zarr  # an existing store

Synthesizes a small paper-size raw data set (4140 x 6198), builds its store (factors 2..32,
patch 128), then in a fresh process runs what a job runs first on the CPU
(camvis.job.train.open_inputs: fold split, memory check, the padded pyramid loaded) and prints
its peak RSS beside camvis.job.memory's estimate, and the estimate for the paper's 121 images
in 9 views, on the CPU and on a GPU (where the pyramid lives in device memory).
"""

from __future__ import annotations

NEEDS = """needs: nothing (it synthesizes 2 paper-size images and builds their store), or --store S.zarr.
"""

import argparse
import json
import resource
import subprocess
import sys
import tempfile
from pathlib import Path

GIB = 1 << 30
FACTORS = [2, 4, 8, 16, 32]


def _peak_bytes() -> int:
    """This process's peak RSS (VmHWM: unlike ru_maxrss, not inherited from the parent across exec)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def _child(store_path: str) -> None:
    """In a fresh process: a job's start on the CPU; print peak RSS and the estimate as JSON."""
    import torch

    from camvis.config import load_job_config
    from camvis.job import memory
    from camvis.job.train import open_inputs

    imported = _peak_bytes()
    cfg = load_job_config(None, [f"data.store={store_path}", f"data.factors={FACTORS}"])
    inputs = open_inputs(cfg, torch.device("cpu"))
    peak = _peak_bytes()
    store = inputs.store
    shapes = memory.padded_shapes(store, FACTORS)
    print(json.dumps({
        "images": len(store.images), "views": len(store.views), "after_imports_gib": imported / GIB,
        "peak_gib": peak / GIB, "source_nbytes_gib": inputs.source.nbytes / GIB,
        "estimate_cpu_gib": memory.host_need(shapes, len(store.images), len(store.views), False) / GIB,
        "paper_estimate_cpu_gib": memory.host_need(shapes, 121, 9, False) / GIB,
        "paper_estimate_gpu_host_gib": memory.host_need(shapes, 121, 9, True) / GIB,
        "paper_pyramid_gib": memory.pyramid_bytes(shapes, 121, 9) / GIB,
    }))


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(epilog=NEEDS, description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--store", help="measure this store instead of synthesizing one")
    p.add_argument("--keep", help="synthesize and build under this folder and keep it (reuse with --store)")
    p.add_argument("--child", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.child:
        _child(args.child)
        return 0
    with tempfile.TemporaryDirectory() as scratch:
        tmp = args.keep or scratch
        store = args.store
        if store is None:
            from camvis.data import store_build, synth

            raw = synth.synthesize(Path(tmp) / "raw", views=2, images_per_view=1, size=synth.PAPER_SIZE,
                                   progress=False)
            store = str(store_build.build(raw, Path(tmp) / "paper.zarr", progress=False, figure=False).path)
        run = subprocess.run([sys.executable, __file__, "--child", store], check=True, capture_output=True,
                             text=True)
    result = json.loads(run.stdout.strip().splitlines()[-1])
    for key, value in result.items():
        print(f"{key:28s} {value:.2f}" if isinstance(value, float) else f"{key:28s} {value}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
