"""Patch indices -> normalized multi-magnification batches, gathered on the training device.

On the CPU, `BatchSource` builds each batch with one call of a C kernel (camvis/job/batch_kernel.c)
that reads every window straight from the pyramid's blocks where they lie: the store's memory-mapped
chunk files (an uncompressed store, camvis.data.store_map: shared by every job of the node through the
page cache, never copied) or, for a compressed store, blocks decoded into memory once. Elsewhere (a
GPU, or the CPU without a C compiler) it moves the levels a job uses to its device once (images stay
uint8, padded so that every window lies inside the padded level; to a GPU in pinned chunks, one pass,
bounded host memory) and builds each batch with a handful of batched tensor ops. No per-sample
Python, no DataLoader workers.
`fold_split` makes camvis2's leave-one-view-out folds; `EpochSampler` draws each epoch's
class-rebalanced, shuffled training patches and shards them over the ranks with
`shard_batches` (which validation uses too).

Crop rule (the store's contract): a patch centred at full-resolution (h, w) is centred at
(h // f, w // f) on level f and covers rows [h // f - P // 2, h // f - P // 2 + P), same for
columns; outside the level image RGB reads 0 and log-depth -1, before normalization. A store
built with `preprocessing: camvis2` records camvis2's rule instead, int(round(h / f)) half to
even; `level_centre` holds both rules, and the C kernel computes the same two in integers.
"""

from __future__ import annotations

import ctypes
import warnings
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from camvis.data.store_map import MappedArray
from camvis.job import native
from camvis.config import factor_problems
from camvis.data.store_info import fold_view, missing_levels
from camvis.errors import ConfigError, StoreError
from camvis.data.raw import LABEL_NONVISIBLE, LABEL_VISIBLE

if TYPE_CHECKING:
    from camvis.data.store import PatchStore

# Without the C kernel, the CPU builds a batch with torch ops a few samples at a time, so
# that each part is widened and normalized while it is still in cache; measured in
# benchmarks/bench_batches.py. Devices with their own memory take the batch whole.
CPU_CHUNK_BYTES = 8 * 2**20
# The C kernel writes a batch at least this large with streaming stores (bypassing caches
# it would not fit in anyway); smaller ones stay in cache for the model to read.
STREAM_MIN_BYTES = 64 * 2**20
# Threads reading the pyramid at a job's start (at most the job's torch threads).
LOAD_THREADS = 8
# Host memory a level upload to a GPU goes through: two pinned buffers of this size, one filled
# from the blocks while the other is copied to the device.
UPLOAD_CHUNK_BYTES = 64 * 2**20


@dataclass(frozen=True)
class _Blocks:
    """The chosen levels as the C kernel reads them: each level's image and depth blocks where they lie
    (C-order (3, H, W) uint8 and (1, H, W) float32, unpadded), as tables of their addresses."""

    rgb: torch.Tensor        # int64 (L * n_images,): address of level l's image i at l * n_images + i
    depth: torch.Tensor      # int64 (L * n_views,)
    geometry: torch.Tensor   # int64 (3, L): factor, height, width
    held: tuple[np.ndarray, ...]  # the arrays behind the addresses (maps or decoded), kept alive
    private_bytes: int       # of them, the bytes this process holds itself (decoded), not maps


@dataclass(frozen=True)
class _Levels:
    """The chosen levels on the device, each padded, concatenated level after level in
    one flat uint8 RGB buffer and one flat float32 (normalized) depth buffer.

    `rgb_rows[k]` / `depth_rows[k]` is the P-element run starting at flat offset k (a
    strided view, no copy), so the crops of all levels are one `index_select` of runs.
    Per-level geometry is held as (L,) int64 tensors so window offsets are computed for
    all levels at once. Padding on both axes: P // 2 before, as much as the last window
    needs after.
    """

    rgb: torch.Tensor           # uint8, level l: (n_images, 3, height[l], width[l]), padded with 0
    depth: torch.Tensor         # float32, level l: (n_views, height[l], width[l]), padded with -1
    rgb_rows: torch.Tensor      # view (rgb.numel() - P + 1, P)
    depth_rows: torch.Tensor    # view (depth.numel() - P + 1, P)
    factor: torch.Tensor        # (L,) int64
    height: torch.Tensor        # (L,) padded rows
    width: torch.Tensor         # (L,) padded columns
    rgb_start: torch.Tensor     # (L,) flat offset of each level in rgb
    depth_start: torch.Tensor   # (L,) flat offset of each level in depth
    rgb_lanes: torch.Tensor     # (L, 3, P): flat offset of channel c, window row k
    depth_lanes: torch.Tensor   # (L, P): flat offset of window row k
    geometry: torch.Tensor      # (5, L): factor, height, width, rgb_start, depth_start (C kernel)


class BatchSource:
    """Builds normalized (B, L*4, P, P) batches from patch indices, on one device.

    Channels are level-major: [R, G, B, D] of factors[0], then of factors[1], ...
    Normalization: (x - mean) / std with the store's statistics of each chosen factor
    (RGB on the 0..255 scale, D = log10 depth): `fold`'s (PatchStore.normalization: under the
    store's per-fold rule, over the fold's training views only), or with `fold` None the
    statistics over all views. Device memory: the chosen levels' uint8
    images and float32 depth maps, each a little larger for the padding.
    `kernel`: on the CPU, build batches with the C kernel where it compiles (else torch
    ops, with a warning); the two give equal batches, bit for bit.
    """

    def __init__(self, store: PatchStore, factors: Sequence[int], device: torch.device | str = "cpu",
                 kernel: bool = True, fold: int | None = None) -> None:
        self.store = store
        self._rule = store.attrs.get("preprocessing", "exact")  # the crop-centre rule, see level_centre
        self.factors = _check_factors(store, factors)
        self.device = torch.device(device)
        self.patch_size = int(store.patch_size)
        self.normalization = store.normalization(fold, self.factors)
        mean = np.asarray(self.normalization.mean, dtype=np.float32)
        std = np.asarray(self.normalization.std, dtype=np.float32)
        if not np.all(std > 0):
            raise StoreError(f"store {store.path}: norm_std of factors {list(self.factors)} must be > 0, "
                             f"got {std.reshape(-1).tolist()}")
        self.mean = torch.from_numpy(mean.reshape(-1)).to(self.device).view(1, -1, 1, 1)
        self.std = torch.from_numpy(std.reshape(-1)).to(self.device).view(1, -1, 1, 1)
        # RGB statistics shaped to broadcast over a (B, L, 3, P, P) view of the batch.
        self._rgb_mean = self.mean.view(1, -1, 4, 1, 1)[:, :, :3].contiguous()
        self._rgb_std = self.std.view(1, -1, 4, 1, 1)[:, :, :3].contiguous()
        self._check_table(store)
        image = np.asarray(store.table["image"], dtype=np.int64)
        view = np.asarray(store.image_view, dtype=np.int64)[image]  # depth map of the patch's image
        self._columns = {
            "center_h": self._tensor(store.table["center_h"], torch.int64),
            "center_w": self._tensor(store.table["center_w"], torch.int64),
            "image": self._tensor(image, torch.int64),
            "view": self._tensor(view, torch.int64),
        }
        self.labels = self._tensor(store.table["label"], torch.float32)
        self.depths = self._tensor(store.table["depth"], torch.float32)
        self._kernel = _cpu_kernel() if kernel and self.device.type == "cpu" else None
        store.verify_levels()  # a mapped store: every block's CRC-32, once per node (compressed: as read)
        self._blocks: _Blocks | None = None
        self._levels: _Levels | None = None
        if self._kernel is not None:
            self._blocks = self._block_table(store)
        else:
            self._levels = self._load_levels(store)
        sample_bytes = 4 * self.n_channels * self.patch_size ** 2
        self._chunk = max(1, CPU_CHUNK_BYTES // sample_bytes) if self.device.type == "cpu" else None

    @property
    def uses_kernel(self) -> bool:
        """Whether batches are built by the C kernel (else by torch ops)."""
        return self._kernel is not None

    @property
    def n_channels(self) -> int:
        return 4 * len(self.factors)

    @property
    def nbytes(self) -> int:
        """Memory this source holds itself: the padded pyramid on its device, or on the CPU with the C
        kernel the decoded blocks of a compressed store (a mapped store's blocks are the page cache's)."""
        if self._blocks is not None:
            return self._blocks.private_bytes
        assert self._levels is not None
        return self._levels.rgb.nbytes + self._levels.depth.nbytes

    def batch(self, idx: torch.Tensor, channels_last: bool = False,
              out: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(x, label, depth) of the patches `idx` (int64, any device; may be empty).

        x float32 (B, L*4, P, P) normalized, contiguous (or channels_last);
        label float32 (B,) in {0, 1}; depth float32 (B,) in metres.
        `out`: a float32 (B, L*4, P, P) tensor on the device to fill and return as x (any
        memory format) instead of a fresh one. On the CPU, page faults on a fresh batch cost
        more than building it, so a loop that is done with x before the next call can pass
        the previous x back in.
        """
        idx = torch.as_tensor(idx).to(self.device, torch.int64).reshape(-1)
        n, p, n_levels = idx.numel(), self.patch_size, len(self.factors)
        shape = (n, self.n_channels, p, p)
        if out is None:
            out = self._empty(shape, channels_last)
        elif tuple(out.shape) != shape or out.dtype != torch.float32 or out.device != self.device:
            raise ValueError(f"out must be float32 {shape} on {self.device}, "
                             f"got {out.dtype} {tuple(out.shape)} on {out.device}")
        if self._kernel is not None and not out.is_contiguous():
            out.copy_(self.batch(idx)[0])  # the kernel writes contiguous batches
            return out, self.labels.index_select(0, idx), self.depths.index_select(0, idx)
        if self._kernel is not None:
            self._kernel_batch(idx, out)
            return out, self.labels.index_select(0, idx), self.depths.index_select(0, idx)
        assert self._levels is not None
        rgb_runs, depth_runs = self._window_runs(idx)
        x = out.view(n, n_levels, 4, p, p)
        lv, step = self._levels, self._chunk or max(n, 1)
        for start in range(0, n, step):
            part = slice(start, min(n, start + step))
            k = part.stop - part.start
            rgb = x[part, :, :3]
            rgb.copy_(lv.rgb_rows.index_select(0, rgb_runs[part].reshape(-1)).view(k, n_levels, 3, p, p))
            rgb.sub_(self._rgb_mean).div_(self._rgb_std)
            x[part, :, 3] = lv.depth_rows.index_select(0, depth_runs[part].reshape(-1)).view(k, n_levels, p, p)
        return out, self.labels.index_select(0, idx), self.depths.index_select(0, idx)

    def iter_batches(self, batches: Sequence[torch.Tensor], channels_last: bool = False
                     ) -> Iterator[tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]]:
        """(idx, x, label, depth) of each index batch, on the device, as `batch` makes them.

        x is one buffer refilled batch after batch (a smaller batch uses its first rows): no
        fresh 100s-of-MB allocation per step, whose page faults dominate on the CPU. The
        caller must be done with x (forward and backward run) before taking the next batch.
        """
        buffer: torch.Tensor | None = None
        for idx in batches:
            idx = torch.as_tensor(idx).to(self.device, torch.int64, non_blocking=True).reshape(-1)
            n, p = idx.numel(), self.patch_size
            if buffer is None or len(buffer) < n:
                buffer = None  # freed before its successor is allocated
                buffer = self._empty((n, self.n_channels, p, p), channels_last)
            x, label, depth = self.batch(idx, out=buffer[:n])
            yield idx, x, label, depth

    def _kernel_batch(self, idx: torch.Tensor, out: torch.Tensor) -> bool:
        """Fills out with the C kernel, which trusts its indices: they are checked here.
        Returns whether the kernel streamed its writes."""
        n = idx.numel()
        if n == 0:
            return False
        low, high = int(idx.min()), int(idx.max())
        if low < 0 or high >= len(self.labels):
            raise IndexError(f"patch indices must be in 0..{len(self.labels) - 1}, got {low}..{high}")
        idx, bl, col = idx.contiguous(), self._blocks, self._columns
        assert bl is not None and self._kernel is not None
        return bool(self._kernel(
            bl.rgb.data_ptr(), bl.depth.data_ptr(), bl.geometry.data_ptr(), col["center_h"].data_ptr(),
            col["center_w"].data_ptr(), col["image"].data_ptr(), col["view"].data_ptr(), idx.data_ptr(), n,
            self.mean.data_ptr(), self.std.data_ptr(), out.data_ptr(), len(self.factors), len(self.store.images),
            len(self.store.views), self.patch_size, torch.get_num_threads(), STREAM_MIN_BYTES,
            int(self._rule == "camvis2")))

    def _window_runs(self, idx: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Flat offsets of every window row of `idx`, all levels at once:
        RGB (B, L, 3, P) and depth (B, L, P)."""
        lv, col = self._levels, self._columns
        assert lv is not None
        # With P // 2 rows of padding before, the window's first padded row is the level centre.
        row = level_centre(col["center_h"].index_select(0, idx)[:, None], lv.factor, self._rule)
        column = level_centre(col["center_w"].index_select(0, idx)[:, None], lv.factor, self._rule)
        image = col["image"].index_select(0, idx)[:, None]
        view = col["view"].index_select(0, idx)[:, None]
        rgb = lv.rgb_start + (image * 3 * lv.height + row) * lv.width + column
        depth = lv.depth_start + (view * lv.height + row) * lv.width + column
        return rgb[:, :, None, None] + lv.rgb_lanes, depth[:, :, None] + lv.depth_lanes

    # ----------------------------------------------------------------------- setup

    def _tensor(self, values: np.ndarray, dtype: torch.dtype) -> torch.Tensor:
        return torch.as_tensor(np.asarray(values)).to(self.device, dtype)

    def _empty(self, shape: tuple[int, int, int, int], channels_last: bool) -> torch.Tensor:
        if self.device.type != "cpu":
            fmt = torch.channels_last if channels_last else torch.contiguous_format
            return torch.empty(shape, dtype=torch.float32, device=self.device, memory_format=fmt)
        # numpy asks for transparent huge pages on large buffers; torch's CPU allocator does
        # not, and first-touch page faults on a fresh 300 MB batch cost more than the gather.
        # Aligned to 64 bytes, so that the C kernel can stream whole rows.
        n, c, h, w = shape
        count = n * c * h * w
        raw = np.empty(count + 16, dtype=np.float32)
        start = (-raw.ctypes.data % 64) // 4
        x = torch.from_numpy(raw[start:start + count])
        return x.view(n, h, w, c).permute(0, 3, 1, 2) if channels_last else x.view(shape)

    def _check_table(self, store: PatchStore) -> None:
        """Centres inside the image and valid image indices, so every window is in bounds."""
        height, width = store.image_shape
        h, w = np.asarray(store.table["center_h"]), np.asarray(store.table["center_w"])
        image = np.asarray(store.table["image"])
        where = f"patch table of store {store.path}" if store.path else "patch table"
        bad = (h < 0) | (h >= height) | (w < 0) | (w >= width)
        if bad.any():
            raise StoreError(f"{where}: {int(bad.sum())} patch centres lie outside the image "
                             f"shape {height}x{width} (first: patch {int(np.argmax(bad))})")
        if image.size and (image.min() < 0 or image.max() >= len(store.images)):
            raise StoreError(f"{where}: image indices must be in 0..{len(store.images) - 1}, "
                             f"got {int(image.min())}..{int(image.max())}")

    def _block_table(self, store: PatchStore) -> _Blocks:
        """The C kernel's view of the chosen levels: the blocks where they lie (maps, or an in-memory
        store's arrays), or a compressed store's decoded into memory once (threads: zstd and the CRC-32
        check release the GIL)."""
        for f in self.factors:
            self._padded_shape(store, f)  # checks the level's shapes: the kernel trusts them
        rgb, depth, held, private = [], [], [], 0
        with ThreadPoolExecutor(max(1, min(torch.get_num_threads(), LOAD_THREADS))) as pool:
            for f in self.factors:
                for kind, table in (("images", rgb), ("depth", depth)):
                    blocks, decoded = _level_blocks(store, f, kind, pool)
                    table.extend(b.ctypes.data for b in blocks)
                    held.extend(blocks)
                    private += sum(b.nbytes for b in blocks) if decoded else 0
        shapes = [store.levels[f][0].shape[2:] for f in self.factors]
        geometry = np.array([self.factors, [h for h, _ in shapes], [w for _, w in shapes]], np.int64)
        return _Blocks(torch.tensor(rgb, dtype=torch.int64), torch.tensor(depth, dtype=torch.int64),
                       torch.from_numpy(geometry), tuple(held), private)

    def _load_levels(self, store: PatchStore) -> _Levels:
        """Copies the chosen levels to the device once, padded: on the CPU one image at a time per
        thread (threads because decoding (zstd) and the CRC-32 check release the GIL); to a GPU in
        pinned chunks (`_upload`: one pass over the blocks, bounded host memory).

        The depth maps are small (one per view), so they are normalized here once, padding
        included, and batches only copy them.
        """
        p, before = self.patch_size, self.patch_size // 2
        n_views = len(store.views)
        shapes = [self._padded_shape(store, f) for f in self.factors]
        n_images = len(store.images)
        rgb_sizes = [n_images * 3 * hp * wp for hp, wp in shapes]
        depth_sizes = [n_views * hp * wp for hp, wp in shapes]
        rgb = torch.zeros(sum(rgb_sizes), dtype=torch.uint8, device=self.device)
        dep = torch.full((sum(depth_sizes),), -1.0, dtype=torch.float32, device=self.device)
        rgb_start, depth_start = np.cumsum([0, *rgb_sizes])[:-1], np.cumsum([0, *depth_sizes])[:-1]
        with ThreadPoolExecutor(max(1, min(torch.get_num_threads(), LOAD_THREADS))) as pool:
            for k, (f, (hp, wp)) in enumerate(zip(self.factors, shapes)):
                hf, wf = store.levels[f][0].shape[2:]
                level_rgb = rgb[rgb_start[k]:rgb_start[k] + rgb_sizes[k]].view(n_images, 3, hp, wp)
                inner = (slice(None), slice(before, before + hf), slice(before, before + wf))
                level_depth = dep[depth_start[k]:depth_start[k] + depth_sizes[k]].view(n_views, 1, hp, wp)
                for level, read in ((level_rgb, _reader(store, f, "images")), (level_depth, _reader(store, f, "depth"))):
                    if self.device.type == "cpu":
                        _fill(pool, level, inner, read)
                    else:
                        _upload(pool, level, inner, read, UPLOAD_CHUNK_BYTES)
                level_depth.sub_(self.mean[0, 4 * k + 3]).div_(self.std[0, 4 * k + 3])
        geometry = self._tensor(np.array([self.factors, *zip(*shapes), rgb_start, depth_start]), torch.int64)
        factor, height, width, rgb_start, depth_start = geometry
        row = torch.arange(p, device=self.device)
        return _Levels(
            rgb=rgb, depth=dep, rgb_rows=rgb.unfold(0, p, 1), depth_rows=dep.unfold(0, p, 1),
            factor=factor, height=height, width=width, rgb_start=rgb_start, depth_start=depth_start,
            rgb_lanes=(torch.arange(3, device=self.device)[None, :, None] * (height * width)[:, None, None]
                       + row[None, None, :] * width[:, None, None]),
            depth_lanes=row[None, :] * width[:, None], geometry=geometry,
        )

    def _padded_shape(self, store: PatchStore, f: int) -> tuple[int, int]:
        """(rows, columns) of level f padded for every window; checks the level's arrays."""
        images, depth = store.levels[f]
        n_img, _, hf, wf = images.shape
        if (tuple(images.shape[:2]) != (len(store.images), 3)
                or tuple(depth.shape) != (len(store.views), 1, hf, wf)):
            raise StoreError(f"store {store.path}: level {f} has images {tuple(images.shape)} and depth "
                             f"{tuple(depth.shape)}; expected ({len(store.images)}, 3, H, W) and "
                             f"({len(store.views)}, 1, H, W)")
        p, before = self.patch_size, self.patch_size // 2
        # The last window starts at the centre of row H - 1, which may be one past the level's end.
        last_h, last_w = (int(level_centre(torch.tensor(n - 1), torch.tensor(f), self._rule))
                          for n in store.image_shape)
        after_h = max(0, last_h + p - before - hf)
        after_w = max(0, last_w + p - before - wf)
        return hf + before + after_h, wf + before + after_w


def _reader(store: PatchStore, f: int, kind: str) -> Callable[[int], np.ndarray]:
    """Block j of level f's images or depth: in place where mapped (its CRC-32 checked once per node),
    else read and checked (PatchStore.read_image / read_depth)."""
    array = store.levels[f][0 if kind == "images" else 1]
    if isinstance(array, MappedArray):
        return lambda j: array.blocks[j]
    return (lambda j: store.read_image(f, j)) if kind == "images" else (lambda j: store.read_depth(f, j))


def _level_blocks(store: PatchStore, f: int, kind: str, pool: ThreadPoolExecutor) -> tuple[list[np.ndarray], bool]:
    """Level f's blocks for the C kernel, C-contiguous in the format's dtype, and whether they were
    decoded into memory: a mapped store's and an in-memory store's as they are (no copy), a
    compressed store's decoded once into one array."""
    array = store.levels[f][0 if kind == "images" else 1]
    dtype = np.uint8 if kind == "images" else np.float32
    if isinstance(array, (MappedArray, np.ndarray)):
        blocks = array.blocks if isinstance(array, MappedArray) else tuple(array)
        if all(b.dtype == dtype and b.flags.c_contiguous for b in blocks):
            return list(blocks), False
    out = np.empty(array.shape, dtype)
    _fill(pool, out, (slice(None),) * (out.ndim - 1), _reader(store, f, kind))
    return list(out), True


def _fill(pool: ThreadPoolExecutor, level: torch.Tensor | np.ndarray, inner: tuple[slice, ...],
          read: Callable[[int], np.ndarray]) -> None:
    """level[j][inner] = read(j) for every j (a CPU tensor or an array), on the pool's threads; each
    holds one block at a time. The first failure in j order is raised; the reads not yet started are
    dropped."""
    target = level.numpy() if isinstance(level, torch.Tensor) else level  # numpy copies read-only maps too

    def put(j: int) -> None:
        target[j][inner] = read(j)
    futures = [pool.submit(put, j) for j in range(len(level))]
    try:
        for future in futures:
            future.result()
    except BaseException:
        for future in futures:
            future.cancel()
        raise


def _upload(pool: ThreadPoolExecutor, level: torch.Tensor, inner: tuple[slice, ...],
            read: Callable[[int], np.ndarray], chunk_bytes: int) -> None:
    """level[j][inner] = read(j) for every j, for a level on another device: blocks are gathered into
    a host buffer of about `chunk_bytes` (pinned for CUDA, at least one block) and copied over in one
    transfer per chunk; two buffers alternate, so one is filled while the other's copy runs. One pass
    over the blocks, host memory bounded by two chunks whatever the level's size."""
    n = len(level)
    if n == 0:
        return
    first = read(0)
    per = max(1, min(n, chunk_bytes // max(1, first.nbytes)))
    pinned = level.device.type == "cuda"
    dtype = level.dtype
    buffers = [torch.empty((per, *first.shape), dtype=dtype, pin_memory=pinned) for _ in range(2)]
    done: list[Any] = [None, None]  # the event after each buffer's last copy
    for step, start in enumerate(range(0, n, per)):
        k, b = min(per, n - start), step % 2
        if done[b] is not None:
            done[b].synchronize()  # its previous copy has left the buffer
        host = buffers[b].numpy()
        _fill(pool, host[:k], (slice(None),) * first.ndim,
              lambda j, start=start: first if start + j == 0 else read(start + j))
        staged = buffers[b][:k].to(level.device, non_blocking=pinned)
        level[start:start + k][(slice(None), *inner)] = staged
        if pinned:
            done[b] = torch.cuda.Event()
            done[b].record()
    for event in done:  # the level is complete before the caller normalizes or reads it
        if event is not None:
            event.synchronize()


def level_centre(h: torch.Tensor, f: torch.Tensor, rule: str = "exact") -> torch.Tensor:
    """Level-f coordinate of full-resolution coordinate h: h // f ("exact", camvis's rule, the
    block that holds h) or int(round(h / f)) with ties to even ("camvis2", camvis2's dataset.py)."""
    q = torch.div(h, f, rounding_mode="floor")
    if rule == "exact":
        return q
    if rule != "camvis2":
        raise StoreError(f"store attribute preprocessing = {rule!r}: expected exact or camvis2")
    r2 = 2 * (h - q * f)
    return q + ((r2 > f) | ((r2 == f) & (q % 2 == 1))).to(q.dtype)


def _cpu_kernel() -> ctypes._CFuncPtr | None:
    """camvis_batch of camvis/job/batch_kernel.c, or None (with a warning) where it cannot be built."""
    try:
        kernel = native.load("batch_kernel").camvis_batch
    except native.NativeUnavailable as e:
        warnings.warn(f"{e}; CPU batches fall back to torch ops (about 2x slower)", RuntimeWarning, stacklevel=3)
        return None
    pointer, size = ctypes.c_void_p, ctypes.c_int64
    kernel.argtypes = [*[pointer] * 8, size, *[pointer] * 3, *[size] * 7]
    kernel.restype = ctypes.c_int
    return kernel


def _check_factors(store: PatchStore, factors: Sequence[int]) -> tuple[int, ...]:
    """The config's rules (camvis.config.factor_problems) and the store's (store_info.missing_levels)."""
    factors = tuple(int(f) for f in factors)
    problems = factor_problems(factors)
    missing = missing_levels(factors, store.factors, f"store {store.path}" if store.path else "the store")
    if problems or missing:
        raise ConfigError(problems[0] if problems else missing)
    return factors


# --------------------------------------------------------------------------- folds


def inner_split(store: PatchStore, train_idx: np.ndarray, fraction: float, seed: int
                ) -> tuple[np.ndarray, np.ndarray]:
    """(fit indices, inner validation indices) of `train_idx`, split by whole images: a seeded
    `fraction` of its images (at least one, at most all but one) go to the inner split."""
    image = np.asarray(store.table["image"])[train_idx]
    images = np.unique(image)
    if len(images) < 2:
        raise ConfigError(f"train.selection inner needs at least 2 training images, got {len(images)}")
    n_inner = min(max(1, int(round(fraction * len(images)))), len(images) - 1)
    inner = np.random.default_rng([seed, 1]).choice(images, n_inner, replace=False)
    is_inner = np.isin(image, inner)
    return train_idx[~is_inner], train_idx[is_inner]


def fold_split(store: PatchStore, fold: int) -> tuple[np.ndarray, np.ndarray, str]:
    """camvis2's leave-one-view-out fold: (train indices, val indices, held-out view).

    Fold k (1-based) holds out the k-th view in sorted order; training uses the patches
    of every other view. Indices are int64 and ascending.
    """
    view = fold_view(store.views, fold)
    if view is None:
        views = sorted(store.views)
        listing = ", ".join(f"{k}={v}" for k, v in enumerate(views, start=1))
        raise ConfigError(f"data.fold = {fold!r} is out of range: expected an integer in 1..{len(views)}, "
                          f"one fold per view in sorted order ({listing})")
    held_out = np.asarray(store.table["view"]) == store.views.index(view)
    return np.flatnonzero(~held_out).astype(np.int64), np.flatnonzero(held_out).astype(np.int64), view


# --------------------------------------------------------------------------- sampling and sharding


class EpochSampler:
    """Per-epoch class rebalancing, seeded shuffle and sharding over ranks.

    Each epoch takes every non-visible training patch plus as many visible ones (all of
    them if there are fewer), drawn afresh without replacement; then at most
    `epoch_patches` of those (a random subset); then shuffles. All randomness comes from a
    generator seeded by (seed, epoch) alone, so every rank computes the same epoch and
    `shard_batches` hands each rank its part. `labels` is the store's label column
    (indexed by patch index), not the labels of `train_idx`.
    """

    def __init__(self, train_idx: np.ndarray | torch.Tensor, labels: np.ndarray | torch.Tensor, *,
                 batch_size: int, seed: int, rank: int = 0, world_size: int = 1,
                 epoch_patches: int | None = None) -> None:
        _check_shard_args(batch_size, rank, world_size)
        if epoch_patches is not None and epoch_patches < 1:
            raise ValueError(f"epoch_patches must be >= 1 or None, got {epoch_patches}")
        train_idx = np.asarray(train_idx, dtype=np.int64).reshape(-1)
        labels = np.asarray(labels).reshape(-1)
        if train_idx.size and (train_idx.min() < 0 or train_idx.max() >= labels.size):
            raise ValueError(f"train_idx must index the label column (0..{labels.size - 1}), "
                             f"got {train_idx.min()}..{train_idx.max()}")
        self.negatives = np.sort(train_idx[labels[train_idx] == LABEL_NONVISIBLE])
        self.positives = np.sort(train_idx[labels[train_idx] == LABEL_VISIBLE])
        if train_idx.size and not self.negatives.size:
            raise StoreError("the training patches hold no non-visible (label 0) patch: class rebalancing "
                             "would leave every epoch empty")
        self.batch_size, self.seed, self.rank, self.world_size = batch_size, seed, rank, world_size
        self.epoch_patches = epoch_patches

    @property
    def epoch_size(self) -> int:
        """Patches per epoch over all ranks (the same every epoch)."""
        n = len(self.negatives) + min(len(self.positives), len(self.negatives))
        return n if self.epoch_patches is None else min(n, self.epoch_patches)

    @property
    def steps_per_epoch(self) -> int:
        """Batches per epoch on every rank."""
        return _steps(self.epoch_size, self.batch_size, self.world_size)

    def epoch_indices(self, epoch: int) -> np.ndarray:
        """The whole epoch's patches in training order (identical on every rank)."""
        rng = np.random.default_rng([self.seed, epoch])
        n_pos = min(len(self.positives), len(self.negatives))
        chosen = np.concatenate([self.negatives, rng.choice(self.positives, n_pos, replace=False)])
        if self.epoch_patches is not None and self.epoch_patches < chosen.size:
            chosen = rng.choice(chosen, self.epoch_patches, replace=False)
        return rng.permutation(chosen)

    def batches(self, epoch: int) -> list[torch.Tensor]:
        """This rank's index batches of `epoch`; the same count on every rank."""
        return shard_batches(self.epoch_indices(epoch), self.batch_size, self.rank, self.world_size)


def shard_batches(indices: np.ndarray | torch.Tensor | Sequence[int], batch_size: int,
                  rank: int, world_size: int) -> list[torch.Tensor]:
    """This rank's batches of `indices`: every rank gets the same number of batches.

    The indices are cut into `world_size` near-equal contiguous parts (sizes differ by at
    most one); with S = ceil(ceil(N / world_size) / batch_size) steps, every rank cuts its
    part into exactly S near-equal batches of at most `batch_size`. Every index lands in
    exactly one batch of one rank. Batches are empty only when a part is shorter than S,
    i.e. when N < world_size * S (tiny N): callers must accept empty batches then (a rank
    with an empty batch still has to join the step's collectives).
    """
    _check_shard_args(batch_size, rank, world_size)
    if isinstance(indices, torch.Tensor):
        idx = indices.detach().to("cpu", torch.int64).reshape(-1)
    else:
        idx = torch.from_numpy(np.asarray(indices, dtype=np.int64).reshape(-1))
    steps = _steps(idx.numel(), batch_size, world_size)
    if steps == 0:
        return []
    part = torch.tensor_split(idx, world_size)[rank]
    return [b.clone() for b in torch.tensor_split(part, steps)]


def _steps(n: int, batch_size: int, world_size: int) -> int:
    per_rank = -(-n // world_size)
    return -(-per_rank // batch_size)


def _check_shard_args(batch_size: int, rank: int, world_size: int) -> None:
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    if world_size < 1 or not 0 <= rank < world_size:
        raise ValueError(f"rank must be in 0..world_size-1 with world_size >= 1, "
                         f"got rank={rank}, world_size={world_size}")
