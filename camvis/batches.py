"""Patch indices -> normalized multi-magnification batches, gathered on the training device.

`BatchSource` moves the pyramid levels a job uses to its device once (images stay uint8,
padded so that every window lies inside the padded level) and then builds each batch with a
handful of batched tensor ops per level: no per-sample Python, no DataLoader workers.
`fold_split` makes camvis2's leave-one-view-out folds; `EpochSampler` draws each epoch's
class-rebalanced, shuffled training patches and shards them over the ranks with
`shard_batches` (which validation uses too).

Crop rule (the store's contract): a patch centred at full-resolution (h, w) is centred at
(h // f, w // f) on level f and covers rows [h // f - P // 2, h // f - P // 2 + P), same for
columns; outside the level image RGB reads 0 and log-depth -1, before normalization.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import torch

from camvis.errors import ConfigError, StoreError
from camvis.raw import LABEL_NONVISIBLE, LABEL_VISIBLE

if TYPE_CHECKING:
    from camvis.store import PatchStore


@dataclass(frozen=True)
class _Level:
    """One pyramid level on the device, as overlapping length-P row windows.

    `rgb_rows[k]` / `depth_rows[k]` is the P-element run starting at flat offset k of the
    padded level (a strided view, no copy), so a (B, P, P) crop is one `index_select` of
    B * P runs. Padding on both axes: P // 2 before, as much as the last window needs after.
    """

    factor: int
    rgb: torch.Tensor          # uint8 (n_images, 3, Hp, Wp), padded with 0
    depth: torch.Tensor        # float32 (n_views, Hp, Wp), padded with -1, then normalized
    rgb_rows: torch.Tensor     # view (rgb.numel() - P + 1, P)
    depth_rows: torch.Tensor   # view (depth.numel() - P + 1, P)
    rgb_lanes: torch.Tensor    # int64 (3, P): flat offset of channel c, window row k
    depth_lanes: torch.Tensor  # int64 (P,): flat offset of window row k


class BatchSource:
    """Builds normalized (B, L*4, P, P) batches from patch indices, on one device.

    Channels are level-major: [R, G, B, D] of factors[0], then of factors[1], ...
    Normalization: (x - mean) / std with the store's statistics of each chosen factor
    (RGB on the 0..255 scale, D = log10 depth). Device memory: the chosen levels' uint8
    images and float32 depth maps, each a little larger for the padding.
    """

    def __init__(self, store: PatchStore, factors: Sequence[int], device: torch.device | str = "cpu") -> None:
        self.store = store
        self.factors = _check_factors(store, factors)
        self.device = torch.device(device)
        self.patch_size = int(store.patch_size)
        rows = [store.factors.index(f) for f in self.factors]
        mean = np.asarray(store.norm_mean, dtype=np.float32)[rows].reshape(-1)
        std = np.asarray(store.norm_std, dtype=np.float32)[rows].reshape(-1)
        self.mean = torch.from_numpy(mean).to(self.device).view(1, -1, 1, 1)
        self.std = torch.from_numpy(std).to(self.device).view(1, -1, 1, 1)
        if not np.all(std > 0):
            raise StoreError(f"store {store.path}: norm_std of factors {list(self.factors)} must be > 0, "
                             f"got {std.tolist()}")
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
        self.levels = [self._load_level(store, f, k) for k, f in enumerate(self.factors)]

    @property
    def n_channels(self) -> int:
        return 4 * len(self.factors)

    @property
    def nbytes(self) -> int:
        """Device memory held by the padded pyramid."""
        return sum(lv.rgb.nbytes + lv.depth.nbytes for lv in self.levels)

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
        n, p = idx.numel(), self.patch_size
        shape = (n, self.n_channels, p, p)
        if out is None:
            out = self._empty(shape, channels_last)
        elif tuple(out.shape) != shape or out.dtype != torch.float32 or out.device != self.device:
            raise ValueError(f"out must be float32 {shape} on {self.device}, "
                             f"got {out.dtype} {tuple(out.shape)} on {out.device}")
        col = {k: v.index_select(0, idx) for k, v in self._columns.items()}
        for i, lv in enumerate(self.levels):
            # With P // 2 rows of padding before, the window's first padded row is h // f.
            r0, c0 = col["center_h"] // lv.factor, col["center_w"] // lv.factor
            hp, wp = lv.depth.shape[1:]
            base = (col["image"] * 3 * hp + r0) * wp + c0
            rgb = lv.rgb_rows.index_select(0, (base[:, None, None] + lv.rgb_lanes).reshape(-1))
            chans = slice(4 * i, 4 * i + 3)
            out[:, chans] = rgb.view(n, 3, p, p)  # uint8 -> float32 in the copy
            out[:, chans].sub_(self.mean[:, chans]).div_(self.std[:, chans])
            base = (col["view"] * hp + r0) * wp + c0
            depth = lv.depth_rows.index_select(0, (base[:, None] + lv.depth_lanes).reshape(-1))
            out[:, 4 * i + 3] = depth.view(n, p, p)  # normalized on the device already
        return out, self.labels.index_select(0, idx), self.depths.index_select(0, idx)

    # ----------------------------------------------------------------------- setup

    def _tensor(self, values: np.ndarray, dtype: torch.dtype) -> torch.Tensor:
        return torch.as_tensor(np.asarray(values)).to(self.device, dtype)

    def _empty(self, shape: tuple[int, int, int, int], channels_last: bool) -> torch.Tensor:
        if self.device.type != "cpu":
            fmt = torch.channels_last if channels_last else torch.contiguous_format
            return torch.empty(shape, dtype=torch.float32, device=self.device, memory_format=fmt)
        # numpy asks for transparent huge pages on large buffers; torch's CPU allocator does
        # not, and first-touch page faults on a fresh 300 MB batch cost more than the gather.
        n, c, h, w = shape
        if channels_last:
            return torch.from_numpy(np.empty((n, h, w, c), dtype=np.float32)).permute(0, 3, 1, 2)
        return torch.from_numpy(np.empty(shape, dtype=np.float32))

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

    def _load_level(self, store: PatchStore, f: int, k: int) -> _Level:
        """Copies level f (the k-th chosen) to the device once, one image at a time (bounded host memory).

        The depth maps are small (one per view), so they are normalized here once, padding
        included, and batches only copy them.
        """
        images, depth = store.levels[f]
        n_img, _, hf, wf = images.shape
        if tuple(images.shape[1:2]) != (3,) or tuple(depth.shape) != (len(store.views), 1, hf, wf):
            raise StoreError(f"store {store.path}: level {f} has images {tuple(images.shape)} and depth "
                             f"{tuple(depth.shape)}; expected (n_images, 3, H, W) and ({len(store.views)}, 1, H, W)")
        p, before = self.patch_size, self.patch_size // 2
        # The last window starts at row (H - 1) // f, which may be one past the level's end.
        after_h = max(0, (store.image_shape[0] - 1) // f + p - before - hf)
        after_w = max(0, (store.image_shape[1] - 1) // f + p - before - wf)
        hp, wp = hf + before + after_h, wf + before + after_w
        rgb = torch.zeros((n_img, 3, hp, wp), dtype=torch.uint8, device=self.device)
        for i in range(n_img):
            rgb[i, :, before:before + hf, before:before + wf] = torch.from_numpy(np.asarray(images[i]))
        dep = torch.full((depth.shape[0], hp, wp), -1.0, dtype=torch.float32, device=self.device)
        for v in range(depth.shape[0]):
            dep[v, before:before + hf, before:before + wf] = torch.from_numpy(np.asarray(depth[v, 0], dtype=np.float32))
        dep.sub_(self.mean[0, 4 * k + 3]).div_(self.std[0, 4 * k + 3])
        row = torch.arange(p, device=self.device) * wp
        chan = torch.arange(3, device=self.device) * hp * wp
        return _Level(
            factor=f, rgb=rgb, depth=dep,
            rgb_rows=rgb.view(-1).unfold(0, p, 1), depth_rows=dep.view(-1).unfold(0, p, 1),
            rgb_lanes=chan[:, None] + row[None, :], depth_lanes=row,
        )


def _check_factors(store: PatchStore, factors: Sequence[int]) -> tuple[int, ...]:
    factors = tuple(int(f) for f in factors)
    where = f"store {store.path}" if store.path else "the store"
    if not factors:
        raise ConfigError("data.factors must name at least one level, got []")
    missing = [f for f in factors if f not in store.factors]
    if missing:
        raise ConfigError(f"data.factors {list(factors)}: {missing} not among the levels of {where} "
                          f"(levels: {list(store.factors)})")
    if len(set(factors)) != len(factors):
        raise ConfigError(f"data.factors must not repeat a factor, got {list(factors)}")
    return factors


# --------------------------------------------------------------------------- folds


def fold_split(store: PatchStore, fold: int) -> tuple[np.ndarray, np.ndarray, str]:
    """camvis2's leave-one-view-out fold: (train indices, val indices, held-out view).

    Fold k (1-based) holds out the k-th view in sorted order; training uses the patches
    of every other view. Indices are int64 and ascending.
    """
    views = sorted(store.views)
    if not isinstance(fold, (int, np.integer)) or isinstance(fold, bool) or not 1 <= fold <= len(views):
        listing = ", ".join(f"{k}={v}" for k, v in enumerate(views, start=1))
        raise ConfigError(f"data.fold = {fold!r} is out of range: expected an integer in 1..{len(views)}, "
                          f"one fold per view in sorted order ({listing})")
    view = views[fold - 1]
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
