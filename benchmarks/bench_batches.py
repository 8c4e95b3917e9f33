"""Throughput of BatchSource.batch against a per-sample crop-and-stack reference.

The reference is what camvis2's Dataset.__getitem__ plus the default collate do, in numpy:
one Python iteration per sample, crop every level with clamped bounds, pad (0 RGB, -1
depth), concatenate, normalize, then torch.stack the batch. Both run on a synthetic
in-memory store with paper-sized levels (4140 x 6198 downscaled; random pixels, since
content does not change the cost).

    .venv/bin/python benchmarks/bench_batches.py                 # paper settings, CPU
    .venv/bin/python benchmarks/bench_batches.py --threads 1     # one core for every path
    .venv/bin/python benchmarks/bench_batches.py --camvis2       # also camvis2's code as written
    .venv/bin/python benchmarks/bench_batches.py --device cuda   # batched path on the GPU
    .venv/bin/python benchmarks/bench_batches.py --json benchmarks/results/batches_cpu.json
    for m in 2 4 8 16 64; do .venv/bin/python benchmarks/bench_batches.py --chunk-mib $m --ref-batches 1; done
    .venv/bin/python benchmarks/bench_batches.py --no-stream      # C kernel without streaming stores
    .venv/bin/python benchmarks/bench_batches.py --baseline-isa   # C kernel built without -march=native
    .venv/bin/python benchmarks/bench_batches.py --map /tmp/m    # also from memory-mapped level files

The iter_batches rows reuse one output buffer (BatchSource.batch(idx, out=x)), as the
training and prediction loops do (BatchSource.iter_batches): on the CPU the page faults
of a fresh 335 MB batch are a large share of its cost. On the CPU they are timed twice:
with the C kernel (camvis/job/batch_kernel.c, the default) and with torch ops (its fallback).
The two "floor" rows bound the torch-ops design from below on this machine: writing a
batch-sized buffer once, and its row gathers alone. Timings on a shared machine swing with
its load (printed); CPU time per batch is the steadier figure. With --map DIR the same levels are
also written as raw block files (an uncompressed store's layout, camvis.data.store_map) and mapped,
and the kernel's batches from the maps are timed beside those from memory (warm page cache).
"""

from __future__ import annotations

NEEDS = """needs: nothing: an in-memory synthetic store (RAM: ~26 MB per paper-size image, --images).
"""

import argparse
import os
import platform
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

import camvis.job.batches as batch_module
from camvis.job import native
from camvis.job.batches import BatchSource
from camvis.io import write_json
from camvis.data.store import PatchStore


def synthetic_store(n_images: int, n_views: int, shape: tuple[int, int], factors: Sequence[int],
                    patch_size: int, n_patches: int, seed: int = 0, preprocessing: str = "exact") -> PatchStore:
    """An in-memory store with the level shapes of `shape` (as `preprocessing` sizes them); centres
    avoid a half-patch border."""
    from camvis.data.camvis2 import level_shape

    rng = np.random.default_rng(seed)
    height, width = shape
    levels = {}
    for f in factors:
        hf, wf = level_shape(shape, f, preprocessing)
        images = rng.integers(0, 256, (n_images, 3, hf, wf), dtype=np.uint8)
        depth = rng.uniform(0.5, 5.0, (n_views, 1, hf, wf)).astype(np.float32)
        levels[f] = (images, depth)
    image_view = (np.arange(n_images) % n_views).astype(np.int32)
    image = rng.integers(0, n_images, n_patches).astype(np.int32)
    half = patch_size // 2
    table = {
        "center_h": rng.integers(half, height - half, n_patches).astype(np.int32),
        "center_w": rng.integers(half, width - half, n_patches).astype(np.int32),
        "label": rng.integers(0, 2, n_patches).astype(np.uint8),
        "depth": rng.uniform(10, 1e5, n_patches).astype(np.float32),
        "image": image, "view": image_view[image],
    }
    return PatchStore(
        path=None, factors=tuple(factors), patch_size=patch_size, image_shape=shape,
        views=tuple(f"cam{v}_1" for v in range(n_views)), images=tuple(f"img{i}" for i in range(n_images)),
        image_view=image_view, table=table,
        norm_mean=rng.uniform(50, 150, (len(factors), 4)).astype(np.float32),
        norm_std=rng.uniform(10, 60, (len(factors), 4)).astype(np.float32),
        levels=levels, attrs={"preprocessing": preprocessing},
    )


class PerSampleReference:
    """camvis2-style loading: crop one sample at a time, then collate with torch.stack."""

    def __init__(self, store: PatchStore, factors: Sequence[int]) -> None:
        self.store, self.factors, self.p = store, tuple(factors), store.patch_size
        rows = [store.factors.index(f) for f in factors]
        self.mean = store.norm_mean[rows].reshape(-1, 1, 1)
        self.std = store.norm_std[rows].reshape(-1, 1, 1)

    def item(self, j: int) -> tuple[np.ndarray, float, float]:
        t, p = self.store.table, self.p
        img = int(t["image"][j])
        parts = []
        for f in self.factors:
            images, depth = self.store.levels[f]
            hf, wf = images.shape[2:]
            h, w = int(t["center_h"][j]) // f, int(t["center_w"][j]) // f
            if self.store.attrs.get("preprocessing") == "camvis2":  # camvis2's dataset.py
                h, w = int(round(t["center_h"][j] / f)), int(round(t["center_w"][j] / f))
            h0, h1, w0, w1 = max(h - p // 2, 0), min(h - p // 2 + p, hf), max(w - p // 2, 0), min(w - p // 2 + p, wf)
            pad = ((h0 - (h - p // 2), (h - p // 2 + p) - h1), (w0 - (w - p // 2), (w - p // 2 + p) - w1))
            rgb = images[img, :, h0:h1, w0:w1].astype(np.float32)
            dep = depth[self.store.image_view[img], :, h0:h1, w0:w1]
            parts.append(np.pad(rgb, ((0, 0), *pad), constant_values=0.0))
            parts.append(np.pad(dep, ((0, 0), *pad), constant_values=-1.0))
        x = (np.concatenate(parts) - self.mean) / self.std
        return x, float(t["label"][j]), float(t["depth"][j])

    def batch(self, idx: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        items = [self.item(j) for j in idx.tolist()]
        x = torch.stack([torch.from_numpy(x) for x, _, _ in items])  # default_collate
        return x, torch.tensor([i[1] for i in items]), torch.tensor([i[2] for i in items])


class Camvis2AsWritten:
    """camvis2's MultiMagnificationPatches.__getitem__ as written (pandas row lookup, float
    levels scaled to 0..1, torch.cat per level, F.pad, Normalize), with the default collate.
    camvis2 rounds h / f; this port floors like camvis, which does not change the cost."""

    def __init__(self, store: PatchStore, factors: Sequence[int]) -> None:
        import pandas as pd

        self.factors, self.p = tuple(factors), store.patch_size
        t = store.table
        self.metadata = pd.DataFrame({"h_canvas": t["center_h"], "w_canvas": t["center_w"], "label": t["label"],
                                      "depth": t["depth"], "image_index": t["image"],
                                      "depth_index": store.image_view[t["image"]]})
        self.data = {f: (torch.from_numpy(store.levels[f][0]).float() / 255, torch.from_numpy(store.levels[f][1]))
                     for f in self.factors}
        rows = [store.factors.index(f) for f in factors]
        scale = np.array([255, 255, 255, 1], np.float32)
        self.mean = torch.from_numpy((store.norm_mean[rows] / scale).reshape(-1))[:, None, None]
        self.std = torch.from_numpy((store.norm_std[rows] / scale).reshape(-1))[:, None, None]

    def item(self, idx: int) -> tuple[torch.Tensor, int, float]:
        entry, p = self.metadata.iloc[idx], self.p
        patch = torch.empty((0, p, p))
        for f in self.factors:
            images, depths = self.data[f]
            h, w = int(entry["h_canvas"]) // f, int(entry["w_canvas"]) // f
            h_from, h_to = max(h - p // 2, 0), min(h + p // 2, images.size(2))
            w_from, w_to = max(w - p // 2, 0), min(w + p // 2, images.size(3))
            sub = torch.cat([images[int(entry["image_index"]), :, h_from:h_to, w_from:w_to],
                             depths[int(entry["depth_index"]), :, h_from:h_to, w_from:w_to]])
            pad = (-min(w - p // 2, 0), max(w + p // 2 - images.size(3), 0),
                   -min(h - p // 2, 0), max(h + p // 2 - images.size(2), 0))
            sub = torch.cat([F.pad(sub[:3], pad, value=0), F.pad(sub[3], pad, value=-1).unsqueeze(0)])
            patch = torch.cat([patch, sub])
        return (patch - self.mean) / self.std, int(entry["label"]), float(entry["depth"])

    def batch(self, idx: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        items = [self.item(j) for j in idx.tolist()]
        return (torch.stack([i[0] for i in items]), torch.tensor([i[1] for i in items]),
                torch.tensor([i[2] for i in items]))


def gather_only(source: BatchSource, idx: torch.Tensor) -> None:
    """The row gathers of BatchSource.batch alone, chunk by chunk as it does them, into two
    small reused buffers (no widening, normalizing or writing of the batch)."""
    rgb_runs, depth_runs = source._window_runs(idx)
    chunk, lv = source._chunk or idx.numel(), source._levels
    rgb = torch.empty((rgb_runs[:chunk].numel(), source.patch_size), dtype=torch.uint8, device=idx.device)
    depth = torch.empty((depth_runs[:chunk].numel(), source.patch_size), device=idx.device)
    for start in range(0, idx.numel(), chunk):
        part = slice(start, start + chunk)
        torch.index_select(lv.rgb_rows, 0, rgb_runs[part].reshape(-1), out=rgb[:rgb_runs[part].numel()])
        torch.index_select(lv.depth_rows, 0, depth_runs[part].reshape(-1), out=depth[:depth_runs[part].numel()])


def time_batches(fn: Callable[[torch.Tensor], object], batches: list[torch.Tensor],
                 sync: Callable[[], None]) -> tuple[float, float]:
    """(wall, process CPU) seconds per batch over `batches`, after one warm-up call.

    CPU time (all threads) is the steadier figure on a shared machine; wall time is what a
    training loop sees.
    """
    fn(batches[0])
    sync()
    wall, cpu = time.perf_counter(), time.process_time()
    for idx in batches:
        fn(idx)
    sync()
    return (time.perf_counter() - wall) / len(batches), (time.process_time() - cpu) / len(batches)


def mapped_copy(store: PatchStore, folder: Path) -> PatchStore:
    """`store` with its levels written to `folder` as one raw file per block and memory-mapped, as an
    uncompressed store's are (camvis.data.store_map.MappedArray)."""
    from dataclasses import replace

    from camvis.data.store_map import MappedArray

    levels = {}
    for f, pair in store.levels.items():
        mapped = []
        for kind, array in zip(("images", "depth"), pair):
            blocks, files = [], {}
            for k, block in enumerate(array):
                path = folder / f"{f}-{kind}-{k}"
                path.write_bytes(np.ascontiguousarray(block).tobytes())
                blocks.append(np.memmap(path, dtype=block.dtype, mode="r", shape=block.shape))
                files[path.name] = (path.stat().st_size, path.stat().st_mtime_ns)
            mapped.append(MappedArray(f"levels/{f}/{kind}", tuple(array.shape), array.dtype, tuple(blocks), files))
        levels[f] = tuple(mapped)
    return replace(store, levels=levels)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(epilog=NEEDS, formatter_class=argparse.RawDescriptionHelpFormatter, description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=20, help="images in the store (RAM: ~26 MB each at paper size)")
    parser.add_argument("--views", type=int, default=4)
    parser.add_argument("--shape", type=int, nargs=2, default=(4140, 6198), metavar=("H", "W"))
    parser.add_argument("--factors", type=int, nargs="+", default=[2, 4, 8, 16, 32])
    parser.add_argument("--patch-size", type=int, default=128)
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--batches", type=int, default=10, help="timed batches of the batched path")
    parser.add_argument("--ref-batches", type=int, default=3, help="timed batches of the reference")
    parser.add_argument("--device", default="cpu", help="device of BatchSource (the reference runs on the CPU)")
    parser.add_argument("--camvis2", action="store_true",
                        help="also time camvis2's __getitem__ as written (float levels: 4x the RAM)")
    parser.add_argument("--threads", type=int, help="torch CPU threads (default: torch's choice)")
    parser.add_argument("--chunk-mib", type=float,
                        help=f"CPU chunk of output per step (default {batch_module.CPU_CHUNK_BYTES / 2**20:g} MiB)")
    parser.add_argument("--no-stream", action="store_true", help="C kernel: never use streaming stores")
    parser.add_argument("--baseline-isa", action="store_true",
                        help="C kernel: build for the baseline ISA of this architecture, not -march=native")
    parser.add_argument("--preprocessing", choices=("exact", "camvis2"), default="exact",
                        help="the store's preprocessing: level sizes and crop-centre rule (default: exact)")
    parser.add_argument("--map", type=Path, metavar="DIR",
                        help="also time the C kernel reading the levels from raw block files mapped from DIR")
    parser.add_argument("--json", type=Path, help="also write the figures here (atomically)")
    args = parser.parse_args(argv)

    device = torch.device(args.device)
    if args.threads:
        torch.set_num_threads(args.threads)
    t0 = time.perf_counter()
    store = synthetic_store(args.images, args.views, tuple(args.shape), args.factors, args.patch_size, 50_000,
                            preprocessing=args.preprocessing)
    t1 = time.perf_counter()
    if args.chunk_mib:
        batch_module.CPU_CHUNK_BYTES = int(args.chunk_mib * 2**20)
    if args.no_stream:
        batch_module.STREAM_MIN_BYTES = 2**62
    if args.baseline_isa:
        native.FLAGS = tuple(f for f in native.FLAGS if f != "-march=native")
    source = BatchSource(store, args.factors, device)
    torch_ops = BatchSource(store, args.factors, device, kernel=False) if source.uses_kernel else None
    t2 = time.perf_counter()
    reference = PerSampleReference(store, args.factors)
    gen = torch.Generator().manual_seed(0)
    batches = [torch.randint(0, store.n_patches, (args.batch_size,), generator=gen) for _ in range(args.batches + 1)]

    x_ref = reference.batch(batches[0])[0]  # every path computes the same numbers
    torch.testing.assert_close(source.batch(batches[0].to(device))[0].cpu(), x_ref)
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    timings = {"per_sample_reference": time_batches(reference.batch, batches[1:args.ref_batches + 1], lambda: None)}
    if args.camvis2:
        camvis2 = Camvis2AsWritten(store, args.factors)
        torch.testing.assert_close(camvis2.batch(batches[0])[0], x_ref, rtol=1e-4, atol=1e-4)
        timings["camvis2_as_written"] = time_batches(camvis2.batch, batches[1:args.ref_batches + 1], lambda: None)
        del camvis2
    timings["batch_source"] = time_batches(lambda i: source.batch(i.to(device, non_blocking=True)), batches[1:], sync)
    buffer = source.batch(batches[0].to(device))[0]
    timings["batch_source_out"] = time_batches(
        lambda i: source.batch(i.to(device, non_blocking=True), out=buffer), batches[1:], sync)
    if args.map is not None and source.uses_kernel:
        args.map.mkdir(parents=True, exist_ok=True)
        mapped = BatchSource(mapped_copy(store, args.map), args.factors, device)
        assert torch.equal(mapped.batch(batches[0])[0], source.batch(batches[0])[0])  # bit for bit
        mapped.batch(torch.arange(store.n_patches)[::7])  # the maps' pages faulted in once, as after a job's start
        timings["batch_source_out_mapped"] = time_batches(lambda i: mapped.batch(i, out=buffer), batches[1:], sync)
        # memory, then maps, then memory again: the order's share of the difference
        timings["batch_source_out_again"] = time_batches(lambda i: source.batch(i, out=buffer), batches[1:], sync)
    if torch_ops is not None:
        torch.testing.assert_close(torch_ops.batch(batches[0])[0], x_ref)
        timings["batch_source_out_torch_ops"] = time_batches(lambda i: torch_ops.batch(i, out=buffer), batches[1:], sync)

    # Floors of this design on this machine: writing a batch-sized buffer once, and the
    # row gathers alone (every level's RGB and depth windows of a batch, no output).
    timings["floor_write"] = time_batches(lambda i: buffer.fill_(1.0), batches[1:], sync)
    timings["floor_gather"] = time_batches(lambda i: gather_only(torch_ops or source, i.to(device)), batches[1:], sync)

    names = {"per_sample_reference": "per-sample reference (cpu)", "camvis2_as_written": "camvis2 __getitem__ (cpu)",
             "batch_source": f"BatchSource.batch ({device.type})",
             "batch_source_out": f"BatchSource.iter_batches ({device.type}{', C kernel' if source.uses_kernel else ''})",
             "batch_source_out_torch_ops": "BatchSource.iter_batches (cpu, torch ops)",
             "batch_source_out_mapped": "BatchSource.iter_batches (C kernel, maps)",
             "batch_source_out_again": "  again from memory (after the maps)",
             "floor_write": "  floor: fill_ of the batch (write)", "floor_gather": "  floor: torch-ops row gathers alone"}
    ref_wall, ref_cpu = timings["per_sample_reference"]
    print(f"store: {args.images} images, {args.views} views, {args.shape[0]}x{args.shape[1]}, factors {args.factors}, "
          f"P={args.patch_size}, batch {args.batch_size}; made in {t1 - t0:.1f} s, to {device} in {t2 - t1:.1f} s "
          f"({source.nbytes / 2**30:.2f} GiB held); torch threads {torch.get_num_threads()}, "
          f"load average {os.getloadavg()[0]:.1f}")
    print(f"{'path':<42}{'wall ms/batch':>14}{'samples/s':>11}{'speedup':>9}{'cpu ms/batch':>14}{'cpu speedup':>13}")
    for key, (wall, cpu) in timings.items():
        print(f"{names[key]:<42}{wall * 1e3:>14.1f}{args.batch_size / wall:>11.0f}{ref_wall / wall:>8.1f}x"
              f"{cpu * 1e3:>14.1f}{ref_cpu / cpu:>12.1f}x")
    if args.json:
        write_json(args.json, {
            "command": " ".join(["benchmarks/bench_batches.py", *(argv if argv is not None else sys.argv[1:])]),
            "settings": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
            "host": platform.node(), "cpu_threads": torch.get_num_threads(), "torch": torch.__version__,
            "load_average": list(os.getloadavg()),
            "wall_ms_per_batch": {k: w * 1e3 for k, (w, _) in timings.items()},
            "cpu_ms_per_batch": {k: c * 1e3 for k, (_, c) in timings.items()},
            "samples_per_s": {k: args.batch_size / w for k, (w, _) in timings.items()},
            "speedup_wall": {k: ref_wall / w for k, (w, _) in timings.items()},
        })
    return 0


if __name__ == "__main__":
    sys.exit(main())
