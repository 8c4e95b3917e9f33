"""Reading a store's pyramid (BatchSource's levels: read, CRC-32 check, pad) with 1 and N threads.

    python benchmarks/bench_level_threads.py STORE [--threads 1 2] [--repeats 5] [--cold]

Each run is a fresh process (one per thread count and repeat, interleaved) that opens STORE and builds
a BatchSource of all its factors on the CPU with torch.set_num_threads(T), which caps the pyramid's
reader threads (camvis.job.batches.LOAD_THREADS). --cold drops the page cache before each read
(root only). Prints each run and the median wall and CPU seconds per thread count.
"""

from __future__ import annotations

NEEDS = """needs: STORE, a patch store (camvis-data build RAW_DIR STORE; a paper-size one:
  python benchmarks/bench_memory.py --keep DIR makes DIR/paper.zarr).
"""

import argparse
import json
import os
import statistics
import subprocess
import sys

CHILD = """
import json, os, sys, time, torch
from camvis.data.store import open_store
from camvis.job.batches import BatchSource
torch.set_num_threads(int(sys.argv[2]))
store = open_store(sys.argv[1])
if sys.argv[3] == "1":
    os.system("sync; echo 3 > /proc/sys/vm/drop_caches")
wall, cpu = time.perf_counter(), time.process_time()
BatchSource(store, store.factors)
print(json.dumps({"wall_s": time.perf_counter() - wall, "cpu_s": time.process_time() - cpu}))
"""


def main() -> None:
    parser = argparse.ArgumentParser(epilog=NEEDS, formatter_class=argparse.RawDescriptionHelpFormatter, description=__doc__.splitlines()[0])
    parser.add_argument("store")
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--cold", action="store_true", help="drop the page cache before each read (root)")
    args = parser.parse_args()
    runs: dict[int, list[dict[str, float]]] = {t: [] for t in args.threads}
    for _ in range(args.repeats):
        for t in args.threads:
            out = subprocess.run([sys.executable, "-c", CHILD, args.store, str(t), "1" if args.cold else "0"],
                                 check=True, capture_output=True, text=True).stdout
            runs[t].append(json.loads(out.splitlines()[-1]))
            print(f"threads {t}: {runs[t][-1]['wall_s']:.2f} s wall, {runs[t][-1]['cpu_s']:.2f} s CPU", flush=True)
    for t, rs in runs.items():
        print(f"median, {t} thread(s): {statistics.median(r['wall_s'] for r in rs):.2f} s wall, "
              f"{statistics.median(r['cpu_s'] for r in rs):.2f} s CPU ({len(rs)} runs, "
              f"{'cold' if args.cold else 'warm'} cache, load {os.getloadavg()[0]:.1f})")


if __name__ == "__main__":
    main()
