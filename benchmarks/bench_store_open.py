"""Opening a patch store (camvis.data.store.open_store): zarr's public sync API, one array after the
other (camvis as it is), against the same checks with every array and column fetched concurrently in
ONE round trip to zarr's event loop through its internal `zarr.core.sync.sync` (camvis before).

    .venv/bin/python benchmarks/bench_store_open.py --store data/processed/camvis2.zarr
    .venv/bin/python benchmarks/bench_store_open.py --store S.zarr --repeats 30 --json benchmarks/results/store_open.json

"public" is store_verify.open_root and open_arrays as they are: each level array's metadata and each
patch-table column (read and CRC-checked) through the sync API, one round trip each. "concurrent" is
the code they replaced, kept here: the async API, gathered, run by zarr.core.sync.sync. Each repeat
opens the store once in this process, warm page cache (the first open of each way is dropped); the
two ways alternate twice. The figure is the median wall and CPU seconds per open, and the load average.
"""

from __future__ import annotations

NEEDS = """needs: a camvis store (--store); make one with
  camvis-data synth data/raw/camvis2 --views 9 && camvis-data build data/raw/camvis2 data/processed/camvis2.zarr
"""

import argparse
import asyncio
import os
import statistics
import sys
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import zarr
from zarr.api import asynchronous as zarr_async
from zarr.core.sync import sync  # zarr's internal API: what the "concurrent" way needs

from camvis.data import store, store_verify


def _concurrent_open_root(path: Path) -> Any:
    return sync(zarr_async.open_group(store=path, mode="r"))


def _concurrent_open_arrays(where: str, path: Path, root: Any, schema: Any) -> Any:
    """store_verify.open_arrays' work and checks, every array and column gathered in one round trip."""
    async def node(name: str) -> Any:
        with store_verify._node_errors(where, name):
            return zarr.Array(await root.getitem(name))

    async def level(name: str, shape: tuple[int, ...]) -> Any:
        return store_verify._check_node(where, name, await node(name), shape)

    async def column(name: str) -> np.ndarray:
        array = store_verify._check_node(where, name, await node(name), None)
        entry = schema.checksums[name]
        block = np.asarray(await array._async_array.getitem(slice(0, entry["rows"])))
        store_verify._check_block(where, path, name, array, 0, block, entry)
        return block

    async def fetch() -> list[Any]:
        return await asyncio.gather(*(level(name, shape) for name, (shape, _) in schema.arrays().items()),
                                    *(column(f"patches/{c}") for c in store_verify.TABLE_COLUMNS))
    fetched = sync(fetch())
    arrays = dict(zip(schema.arrays(), fetched))
    table = dict(zip(store_verify.TABLE_COLUMNS, fetched[len(arrays):]))
    store_verify.check_table(where, table, schema)
    return {f: (arrays[f"levels/{f}/images"], arrays[f"levels/{f}/depth"]) for f in schema.factors}, table


@contextmanager
def concurrent() -> Iterator[None]:
    saved = store_verify.open_root, store_verify.open_arrays
    store_verify.open_root, store_verify.open_arrays = _concurrent_open_root, _concurrent_open_arrays
    try:
        yield
    finally:
        store_verify.open_root, store_verify.open_arrays = saved


def time_opens(path: Path, repeats: int) -> dict[str, float]:
    walls, cpus = [], []
    for i in range(repeats + 1):
        w, c = time.perf_counter(), time.process_time()
        store.open_store(path)
        if i:  # the first one warms the page cache and the imports
            walls.append(time.perf_counter() - w)
            cpus.append(time.process_time() - c)
    return {"median_s": statistics.median(walls), "median_cpu_s": statistics.median(cpus)}


def main() -> None:
    ap = argparse.ArgumentParser(epilog=NEEDS, description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--store", type=Path, required=True)
    ap.add_argument("--repeats", type=int, default=20)
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()
    if not args.store.is_dir():
        sys.exit(f"error: no store at {args.store}\n{NEEDS}")
    load = os.getloadavg()
    results = {}
    for _ in range(2):  # alternate, so that a change of load hits both ways
        for way in ("concurrent", "public"):
            if way == "concurrent":
                with concurrent():
                    r = time_opens(args.store, args.repeats)
            else:
                r = time_opens(args.store, args.repeats)
            results.setdefault(way, []).append(r)
    summary = {way: {k: statistics.median(r[k] for r in runs) for k in runs[0]} for way, runs in results.items()}
    for way, r in summary.items():
        print(f"{way:10s}: {r['median_s'] * 1e3:7.1f} ms per open ({r['median_cpu_s'] * 1e3:.1f} ms CPU)")
    print(f"load average {load[0]:.2f} at start, {os.getloadavg()[0]:.2f} at end")
    if args.json:
        from camvis.io import write_json

        write_json(args.json, {
            "benchmark": "open a camvis store: public sync API (camvis) vs concurrent through zarr.core.sync",
            "command": " ".join(["python", *sys.argv]), "store": str(args.store), "repeats": args.repeats,
            "load_avg_start": load, "load_avg_end": os.getloadavg(), "results": summary, "runs": results})


if __name__ == "__main__":
    main()
