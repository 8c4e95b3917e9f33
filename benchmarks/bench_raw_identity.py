"""What identifying a store's raw data costs (camvis.data.raw_identity): the listing digest (a stat per
file, what every reuse of a store in its own project pays) and the content digest (every file's bytes
streamed through sha256: what each build pays once, and a reuse from a moved raw folder).

    .venv/bin/python benchmarks/bench_raw_identity.py [--raw RAW_DIR] [--json benchmarks/results/raw_identity.json]

Without --raw it synthesizes 2 views x 4 images of 1035 x 1550 (a quarter of the paper's side) first.
Warm page cache: the figures are the hashing's own cost, not the disk's.
"""

from __future__ import annotations

NEEDS = """needs: nothing: without --raw it synthesizes its raw folder into a temporary folder; --raw RAW_DIR times yours.
"""

import argparse
import json
import os
import statistics
import tempfile
import time
from pathlib import Path

from camvis.data import raw, raw_identity


def _best_of(fn, n: int = 5) -> float:
    times = []
    for _ in range(n):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def main() -> None:
    p = argparse.ArgumentParser(epilog=NEEDS, description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--raw")
    p.add_argument("--json")
    args = p.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        if args.raw is None:
            from camvis.data.synth import synthesize

            args.raw = str(synthesize(Path(tmp) / "raw", views=2, images_per_view=4, size=(1035, 1550), progress=False))
        ds = raw.scan(args.raw)
        files = raw_identity.files(ds)
        size = sum(f.stat().st_size for f in files)
        raw_identity.content_digest(ds)  # the page cache warm
        listing, content = _best_of(lambda: raw_identity.listing_digest(ds)), _best_of(lambda: raw_identity.content_digest(ds))
    result = {"files": len(files), "bytes": size, "listing_s": round(listing, 5), "content_s": round(content, 4),
              "content_mb_per_s": round(size / content / 1e6, 1), "loadavg": os.getloadavg()[0],
              "cpus": os.cpu_count()}
    print(json.dumps(result))
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
