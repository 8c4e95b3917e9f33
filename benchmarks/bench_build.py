"""Store build time, size and peak memory: the demo data set and paper-size images.

    .venv/bin/python benchmarks/bench_build.py            # demo (4 x 6) + paper size (1 x 2)
    .venv/bin/python benchmarks/bench_build.py --quick    # demo (4 x 6) + paper size (1 x 1)
    .venv/bin/python benchmarks/bench_build.py --no-demo --workers 1 2   # paper size, serial vs 2 processes

Raw data is synthesized first (camvis.data.synth, timed apart); every build runs in a fresh
child process so its peak resident memory is its own. Builds use the defaults
(factors 2..32, patch size 128, 500 patches per image).
"""

from __future__ import annotations

NEEDS = """needs: nothing: it synthesizes its raw data (camvis.data.synth) in a temporary folder.
"""

import argparse
import json
import os
import platform
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def _size(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def _child_build(raw_dir: str, out: str, workers: int = 1, preprocessing: str = "exact") -> None:
    """Runs in the child: build, print seconds and peak RSS as JSON (workers: the largest worker's)."""
    from camvis.data import store_build

    start = time.perf_counter()
    s = store_build.build(raw_dir, out, progress=False, figure=False, workers=workers,
                            preprocessing=preprocessing)
    seconds = time.perf_counter() - start
    peak_mib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux
    worker_mib = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    print(json.dumps({"build_s": seconds, "peak_mib": peak_mib, "worker_peak_mib": worker_mib,
                      "patches": s.n_patches}))


def _case(name: str, work: Path, views: int, images_per_view: int,
          size: tuple[int, int] | None = None, workers: tuple[int, ...] = (1,),
          preprocessing: str = "exact") -> list[dict[str, object]]:
    """size None: camvis.data.synth's default size."""
    from camvis.data import synth

    raw_dir, out = work / f"{name}-raw", work / f"{name}.zarr"
    extra = {"size": size} if size else {}
    start = time.perf_counter()
    synth.synthesize(raw_dir, views=views, images_per_view=images_per_view, progress=False,
                     force=True, **extra)
    synth_s = time.perf_counter() - start
    rows = []
    for n in workers:
        child = subprocess.run([sys.executable, __file__, "--child", str(raw_dir), str(out), str(n),
                                preprocessing],
                               check=True, capture_output=True, text=True)
        result = json.loads(child.stdout.strip().splitlines()[-1])
        n_images = views * images_per_view
        height, width = json.loads((raw_dir / "synth.json").read_text())["size"]
        rows.append({"case": f"{name} ({preprocessing})", "workers": n, "images": n_images, "size": f"{height}x{width}",
                     "synth_s": synth_s, "build_s": result["build_s"],
                     "per_image_s": result["build_s"] / n_images, "peak_mib": result["peak_mib"],
                     "worker_peak_mib": result["worker_peak_mib"],
                     "patches": result["patches"], "raw_mib": _size(raw_dir) / 2**20,
                     "store_mib": _size(out) / 2**20})
        shutil.rmtree(out)
    return rows


def _table(rows: list[dict[str, object]]) -> str:
    head = ("case", "workers", "images", "size", "synth s", "build s", "s/image", "peak MiB", "worker peak MiB",
            "patches", "raw MiB", "store MiB")
    keys = ("case", "workers", "images", "size", "synth_s", "build_s", "per_image_s", "peak_mib", "worker_peak_mib",
            "patches", "raw_mib", "store_mib")
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for row in rows:
        cells = [f"{row[k]:.2f}" if isinstance(row[k], float) else str(row[k]) for k in keys]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(epilog=NEEDS, description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="one paper-size image, not two")
    parser.add_argument("--no-paper", action="store_true", help="demo data set only")
    parser.add_argument("--workdir", help="where raw data and stores go (default: a temp dir)")
    parser.add_argument("--json", help="also write the results to this JSON file")
    parser.add_argument("--no-demo", action="store_true", help="paper size only")
    parser.add_argument("--workers", type=int, nargs="+", default=[1],
                        help="build each case with these worker counts (default: 1)")
    parser.add_argument("--preprocessing", choices=("exact", "camvis2"), default="exact",
                        help="the stores' preprocessing (camvis2 needs camvis[camvis2]) (default: exact)")
    parser.add_argument("--child", nargs=4, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        _child_build(args.child[0], args.child[1], int(args.child[2]), args.child[3])
        return 0
    from camvis.data import synth
    from camvis.io import write_json

    with tempfile.TemporaryDirectory(dir=args.workdir) as tmp:
        work = Path(tmp)
        workers = tuple(args.workers)
        rows = [] if args.no_demo else _case("demo", work, 4, 6, workers=workers,
                                                         preprocessing=args.preprocessing)
        if not args.no_paper:
            rows += _case("paper", work, 1, 1 if args.quick else 2, synth.PAPER_SIZE, workers, args.preprocessing)
    print(f"# store build on {platform.node()} ({os.cpu_count()} CPUs), "
          f"python {platform.python_version()}")
    print(_table(rows))
    if args.json:
        write_json(args.json, rows)
    return 0


if __name__ == "__main__":
    sys.exit(main())
