"""camvis.job.batches: batched crops against a per-sample reference, folds, rebalancing, sharding."""

from __future__ import annotations

import dataclasses
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from camvis.job import batches
from camvis.job.batches import BatchSource, EpochSampler, fold_split, shard_batches
from camvis.errors import ConfigError, StoreError
from camvis.data.store import PatchStore, open_store

STORE_FACTORS = (1, 2, 4, 8, 16)
HAS_AVX2 = Path("/proc/cpuinfo").exists() and "avx2" in Path("/proc/cpuinfo").read_text().split()


@pytest.fixture(autouse=True)
def _kernels_enabled(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("CAMVIS_NATIVE", raising=False)


def make_source(store: PatchStore, factors: tuple[int, ...], kernel: bool) -> BatchSource:
    """BatchSource built with the C kernel or with torch ops, as asked (CI has a compiler)."""
    if kernel and shutil.which(os.environ.get("CC") or "cc") is None:
        pytest.skip("no C compiler: the C kernel cannot be built here")
    source = BatchSource(store, factors, kernel=kernel)
    assert source.uses_kernel == kernel
    return source


def make_store(height: int, width: int, patch_size: int, *, factors: tuple[int, ...] = STORE_FACTORS,
               n_views: int = 3, images_per_view: int = 2, random_centres: int = 4, seed: int = 0,
               preprocessing: str = "exact") -> PatchStore:
    """An in-memory store with random levels; every image has centres on all four borders.
    `preprocessing`: the level sizes and crop-centre rule recorded (exact, or camvis2's rounding)."""
    from camvis.data.camvis2 import level_shape

    rng = np.random.default_rng(seed)
    views = tuple(f"cam{v}_{v + 1}" for v in range(n_views))
    image_view = np.repeat(np.arange(n_views, dtype=np.int32), images_per_view)
    n_img = image_view.size
    levels = {}
    for f in factors:
        hf, wf = level_shape((height, width), f, preprocessing)
        images = rng.integers(0, 256, (n_img, 3, hf, wf), dtype=np.uint8)
        depth = rng.uniform(0.5, 5.0, (n_views, 1, hf, wf)).astype(np.float32)
        depth[rng.random(depth.shape) < 0.1] = -1.0  # sky
        levels[f] = (images, depth)
    border = [(0, 0), (0, width - 1), (height - 1, 0), (height - 1, width - 1), (height // 2, 0), (0, width // 2)]
    rows = []
    for i in range(n_img):
        inside = zip(rng.integers(0, height, random_centres), rng.integers(0, width, random_centres))
        hw = np.array(border + list(inside))
        rows.append(np.column_stack([hw, np.full(len(hw), i)]))
    table_hw = np.concatenate(rows)
    n = len(table_hw)
    image = table_hw[:, 2].astype(np.int32)
    table = {
        "center_h": table_hw[:, 0].astype(np.int32), "center_w": table_hw[:, 1].astype(np.int32),
        "label": rng.integers(0, 2, n).astype(np.uint8), "depth": rng.uniform(10, 1e4, n).astype(np.float32),
        "image": image, "view": image_view[image].astype(np.int32),
    }
    return PatchStore(
        path=None, factors=factors, patch_size=patch_size, image_shape=(height, width), views=views,
        images=tuple(f"{views[v]}_2024-01-0{i % 9 + 1}_1200" for i, v in enumerate(image_view)),
        image_view=image_view, table=table,
        norm_mean=rng.uniform(50, 150, (len(factors), 4)).astype(np.float32),
        norm_std=rng.uniform(0.5, 60, (len(factors), 4)).astype(np.float32),
        levels=levels, attrs={"preprocessing": preprocessing} if preprocessing != "exact" else {},
    )


def reference_batch(store: PatchStore, factors: tuple[int, ...], idx: np.ndarray) -> np.ndarray:
    """Plain per-sample crop with explicit bounds checks (0 / -1 outside), stack, normalize.
    Crop centre h // f, or camvis2's int(round(h / f)) (Python's round) for a camvis2 store."""
    p = store.patch_size
    centre = ((lambda h, f: int(round(h / f))) if store.attrs.get("preprocessing") == "camvis2"
              else (lambda h, f: h // f))
    rows = [store.factors.index(f) for f in factors]
    mean = np.asarray(store.norm_mean)[rows].reshape(-1)[:, None, None]
    std = np.asarray(store.norm_std)[rows].reshape(-1)[:, None, None]
    out = []
    for j in idx:
        img = int(store.table["image"][j])
        view = int(store.image_view[img])
        channels = []
        for f in factors:
            images, depth = (np.asarray(a) for a in store.levels[f])
            hf, wf = images.shape[2:]
            top = centre(int(store.table["center_h"][j]), f) - p // 2
            left = centre(int(store.table["center_w"][j]), f) - p // 2
            rgb = np.zeros((3, p, p), np.float32)
            dep = np.full((1, p, p), -1.0, np.float32)
            for r in range(p):
                if not 0 <= top + r < hf:
                    continue
                for c in range(p):
                    if 0 <= left + c < wf:
                        rgb[:, r, c] = images[img, :, top + r, left + c]
                        dep[0, r, c] = depth[view, 0, top + r, left + c]
            channels += [rgb, dep]
        out.append((np.concatenate(channels) - mean) / std)
    return np.stack(out).astype(np.float32)


# --------------------------------------------------------------------------- BatchSource


@pytest.mark.parametrize("kernel", [True, False], ids=["c-kernel", "torch-ops"])
@pytest.mark.parametrize("factors", [(1,), (2, 4, 8), (1, 2, 4, 8, 16), (8, 2)])
@pytest.mark.parametrize("patch_size", [8, 16, 32, 13])
def test_batch_matches_per_sample_reference(factors: tuple[int, ...], patch_size: int, kernel: bool) -> None:
    store = make_store(37, 53, patch_size, seed=patch_size)
    source = make_source(store, factors, kernel)
    idx = np.arange(store.n_patches)
    x, label, depth = source.batch(torch.from_numpy(idx))
    assert x.shape == (len(idx), 4 * len(factors), patch_size, patch_size)
    assert x.dtype == torch.float32 and x.is_contiguous()
    torch.testing.assert_close(x, torch.from_numpy(reference_batch(store, factors, idx)))
    torch.testing.assert_close(label, torch.from_numpy(store.table["label"].astype(np.float32)))
    torch.testing.assert_close(depth, torch.from_numpy(store.table["depth"]))


@pytest.mark.parametrize("kernel", [True, False], ids=["c-kernel", "torch-ops"])
def test_batch_odd_shapes_order_duplicates_channels_last_and_out(kernel: bool) -> None:
    # 61x45 with P=16: level 2 is 30x22 and centre row 60 maps to level row 30, one past the end.
    store = make_store(61, 45, 16, seed=3)
    factors = (16, 1, 2)
    source = make_source(store, factors, kernel)
    idx = np.array([3, 3, 0, store.n_patches - 1, 7, 2, 1])
    expected = torch.from_numpy(reference_batch(store, factors, idx))
    x, _, _ = source.batch(torch.from_numpy(idx))
    torch.testing.assert_close(x, expected)
    xl, _, _ = source.batch(torch.from_numpy(idx), channels_last=True)
    assert xl.is_contiguous(memory_format=torch.channels_last)
    torch.testing.assert_close(xl, expected)
    buffer = torch.full_like(expected, float("nan"))
    xo, _, _ = source.batch(torch.from_numpy(idx), out=buffer)
    assert xo is buffer
    torch.testing.assert_close(xo, expected)
    with pytest.raises(ValueError, match="out must be float32"):
        source.batch(torch.from_numpy(idx[:3]), out=buffer)


@pytest.mark.parametrize("chunk_samples", [1, 3, 1000])
def test_cpu_chunks_of_any_size_give_the_same_batch(monkeypatch: pytest.MonkeyPatch, chunk_samples: int) -> None:
    # The CPU builds a batch a few samples at a time; 3 does not divide the 11-sample batch.
    store = make_store(61, 45, 16, seed=5)
    factors = (2, 1, 8)
    sample_bytes = 4 * 4 * len(factors) * 16 * 16
    monkeypatch.setattr(batches, "CPU_CHUNK_BYTES", chunk_samples * sample_bytes)
    source = make_source(store, factors, kernel=False)
    idx = np.array([0, 5, 5, 9, 1, store.n_patches - 1, 2, 8, 3, 4, 6])
    expected = torch.from_numpy(reference_batch(store, factors, idx))
    torch.testing.assert_close(source.batch(torch.from_numpy(idx))[0], expected)
    xl, _, _ = source.batch(torch.from_numpy(idx), channels_last=True)
    assert xl.is_contiguous(memory_format=torch.channels_last)
    torch.testing.assert_close(xl, expected)


@pytest.mark.parametrize("threads", [1, 3, 64])
def test_c_kernel_equals_torch_ops_bit_for_bit_on_any_thread_count(threads: int) -> None:
    store = make_store(61, 45, 16, seed=6)
    idx = torch.from_numpy(np.resize(np.arange(store.n_patches), 50)[::-1].copy())
    kernel, torch_ops = make_source(store, STORE_FACTORS, True), make_source(store, STORE_FACTORS, False)
    before = torch.get_num_threads()
    torch.set_num_threads(threads)  # the kernel splits the batch over torch's thread count
    try:
        for a, b in zip(kernel.batch(idx), torch_ops.batch(idx)):
            assert torch.equal(a, b)
        assert torch.equal(kernel.batch(idx[::3])[0], torch_ops.batch(idx[::3])[0])  # strided indices
    finally:
        torch.set_num_threads(before)


@pytest.mark.parametrize("threads", [1, 3])
@pytest.mark.parametrize("patch_size", [16, 13])
def test_c_kernel_takes_camvis2s_rounded_centres_bit_for_bit(threads: int, patch_size: int) -> None:
    # Odd sizes (61 x 45: round(H / f) levels, one row past h // f's) and many centres, so that
    # every factor meets ties (h % f == f / 2: half to even goes down or up) and round-ups.
    factors = (1, 2, 3, 4, 8, 16)
    store = make_store(61, 45, patch_size, factors=factors, random_centres=60, seed=11, preprocessing="camvis2")
    h = np.concatenate([store.table["center_h"], store.table["center_w"]]).astype(np.int64)
    for f in (2, 4, 8, 16):
        ties = h[2 * (h % f) == f]
        assert (ties // f % 2 == 0).any() and (ties // f % 2 == 1).any(), f"factor {f}: both kinds of tie"
    idx = torch.from_numpy(np.resize(np.arange(store.n_patches), 3 * store.n_patches)[::-1].copy())
    kernel, torch_ops = make_source(store, factors, True), make_source(store, factors, False)
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        x, label, depth = kernel.batch(idx)
        for a, b in zip((x, label, depth), torch_ops.batch(idx)):
            assert torch.equal(a, b)
    finally:
        torch.set_num_threads(before)
    torch.testing.assert_close(x, torch.from_numpy(reference_batch(store, factors, idx.numpy())))
    floor = make_source(dataclasses.replace(store, attrs={}), factors, True)  # same levels, h // f
    assert not torch.equal(floor.batch(idx)[0], x)  # the rule matters on these centres


def test_c_kernel_streams_large_aligned_batches(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(batches, "STREAM_MIN_BYTES", 0)  # stream even this small batch
    store = make_store(61, 45, 16, seed=7)
    factors = (16, 1, 2)
    source = make_source(store, factors, kernel=True)
    idx = torch.arange(store.n_patches)
    expected = torch.from_numpy(reference_batch(store, factors, idx.numpy()))
    aligned = source._empty(tuple(expected.shape), channels_last=False)
    assert aligned.data_ptr() % 64 == 0
    assert source._kernel_batch(idx, aligned) == HAS_AVX2  # streaming needs AVX2
    torch.testing.assert_close(aligned, expected)
    unaligned = torch.empty(expected.numel() + 1)[1:].view(expected.shape)  # 4 bytes past 32-byte alignment
    assert not source._kernel_batch(idx, unaligned)
    torch.testing.assert_close(unaligned, expected)
    monkeypatch.setattr(batches, "STREAM_MIN_BYTES", expected.nbytes + 1)
    assert not source._kernel_batch(idx, aligned)  # below the threshold: cached stores


def test_c_kernel_rejects_patch_indices_out_of_range() -> None:
    store = make_store(21, 33, 8)
    source = make_source(store, (1, 2), kernel=True)
    last = store.n_patches - 1
    with pytest.raises(IndexError, match=rf"patch indices must be in 0\.\.{last}, got -1\.\.3"):
        source.batch(torch.tensor([3, -1]))
    with pytest.raises(IndexError, match=rf"got 0\.\.{last + 1}"):
        source.batch(torch.tensor([0, last + 1]))


def test_iter_batches_refills_one_buffer_and_matches_batch() -> None:
    store = make_store(37, 53, 8, seed=11)
    source = BatchSource(store, (1, 4))
    index_batches = [torch.tensor([0, 5, 9]), torch.tensor([2, 2, 7]), torch.tensor([1]),
                     torch.zeros(0, dtype=torch.int64), torch.tensor([3, 4, 6, 8])]
    seen = []
    for idx, x, label, depth in source.iter_batches(index_batches):
        assert x.shape == (len(idx), 8, 8, 8)
        if len(idx):
            torch.testing.assert_close(x, torch.from_numpy(reference_batch(store, (1, 4), idx.numpy())))
        torch.testing.assert_close(label, torch.from_numpy(store.table["label"][idx.numpy()].astype(np.float32)))
        assert depth.shape == idx.shape
        seen.append(x.data_ptr() if len(idx) else None)
    # one buffer while batches fit in it; a larger batch gets a new one
    assert seen[0] == seen[1] == seen[2] and seen[4] is not None


def test_batch_empty_and_list_indices() -> None:
    store = make_store(21, 33, 8)
    source = BatchSource(store, (1, 2))
    x, label, depth = source.batch(torch.zeros(0, dtype=torch.int64))
    assert x.shape == (0, 8, 8, 8) and label.shape == (0,) and depth.shape == (0,)
    x, _, _ = source.batch(torch.tensor([4, 0], dtype=torch.int32))
    torch.testing.assert_close(x, torch.from_numpy(reference_batch(store, (1, 2), np.array([4, 0]))))


def test_depth_is_gathered_from_the_view_of_the_patch_image() -> None:
    store = make_store(24, 24, 8, n_views=2, images_per_view=1)
    for f in store.factors:  # view v's depth is the constant v + 1 (before normalization)
        store.levels[f][1][:] = np.arange(1, 3, dtype=np.float32)[:, None, None, None]
    source = BatchSource(store, (1,))
    centre = np.flatnonzero((store.table["center_h"] == 12) & (store.table["center_w"] == 0))
    x, _, _ = source.batch(torch.from_numpy(centre))
    raw_depth = x[:, 3] * source.std[0, 3] + source.mean[0, 3]
    for row, j in zip(raw_depth, centre):
        view = store.image_view[store.table["image"][j]]
        assert torch.allclose(row[:, 4:], torch.tensor(float(view + 1)))  # inside the image
        assert torch.allclose(row[:, :4], torch.tensor(-1.0))              # left of column 0


def test_unknown_factor_is_a_config_error() -> None:
    store = make_store(21, 33, 8)
    with pytest.raises(ConfigError, match=r"data\.factors.*\[3\].*levels: \[1, 2, 4, 8, 16\]"):
        BatchSource(store, (1, 3))


def test_centres_outside_the_image_are_a_store_error() -> None:
    store = make_store(21, 33, 8)
    store.table["center_w"][4] = 33
    with pytest.raises(StoreError, match="1 patch centres lie outside the image shape 21x33"):
        BatchSource(store, (1,))


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_batches_equal_cpu_batches() -> None:
    store = make_store(61, 45, 16, seed=4)
    idx = torch.arange(store.n_patches)
    cpu = BatchSource(store, (1, 4, 16)).batch(idx)
    gpu = BatchSource(store, (1, 4, 16), "cuda").batch(idx.cuda(), channels_last=True)
    assert gpu[0].is_cuda and gpu[0].is_contiguous(memory_format=torch.channels_last)
    for a, b in zip(cpu, gpu):
        torch.testing.assert_close(b.cpu(), a)


# --------------------------------------------------------------------------- folds


def test_fold_split_holds_out_one_view_per_fold() -> None:
    store = make_store(21, 33, 8, n_views=3)
    seen_val = []
    for fold in range(1, 4):
        train, val, view = fold_split(store, fold)
        assert view == sorted(store.views)[fold - 1]
        assert np.array_equal(np.sort(np.concatenate([train, val])), np.arange(store.n_patches))
        assert not np.intersect1d(train, val).size
        names = np.array(store.views)[store.table["view"]]
        assert np.all(names[val] == view) and np.all(names[train] != view) and val.size
        seen_val.append(val)
    assert np.array_equal(np.sort(np.concatenate(seen_val)), np.arange(store.n_patches))


@pytest.mark.parametrize("fold", [0, 4, -1])
def test_fold_out_of_range_names_key_value_and_views(fold: int) -> None:
    store = make_store(21, 33, 8, n_views=3)
    with pytest.raises(ConfigError) as err:
        fold_split(store, fold)
    message = str(err.value)
    assert "data.fold" in message and repr(fold) in message and "1..3" in message
    assert all(view in message for view in store.views)


# --------------------------------------------------------------------------- rebalancing


def _labels(n_neg: int, n_pos: int, n_other: int = 0, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """A label column and training indices that skip the first n_other patches."""
    labels = np.concatenate([np.zeros(n_neg), np.ones(n_pos)]).astype(np.uint8)
    labels = np.concatenate([np.zeros(n_other, np.uint8), np.random.default_rng(seed).permutation(labels)])
    return labels, np.arange(n_other, labels.size)


def test_rebalancing_equal_classes_fresh_each_epoch_and_reproducible() -> None:
    labels, train = _labels(30, 200, n_other=17)
    sampler = EpochSampler(train, labels, batch_size=8, seed=5)
    epochs = [sampler.epoch_indices(e) for e in range(3)]
    for idx in epochs:
        assert len(np.unique(idx)) == len(idx) == 60 == sampler.epoch_size
        assert np.all(idx >= 17)  # only training patches
        assert np.sum(labels[idx] == 0) == np.sum(labels[idx] == 1) == 30
        assert set(idx[labels[idx] == 0]) == set(sampler.negatives)
    positives = [set(idx[labels[idx] == 1]) for idx in epochs]
    assert positives[0] != positives[1] and positives[1] != positives[2]
    assert np.array_equal(EpochSampler(train, labels, batch_size=8, seed=5).epoch_indices(1), epochs[1])
    assert not np.array_equal(EpochSampler(train, labels, batch_size=8, seed=6).epoch_indices(1), epochs[1])
    assert not np.array_equal(np.sort(epochs[0]), epochs[0])  # shuffled


def test_rebalancing_takes_every_visible_patch_when_fewer() -> None:
    labels, train = _labels(50, 20)
    idx = EpochSampler(train, labels, batch_size=8, seed=0).epoch_indices(0)
    assert np.sum(labels[idx] == 0) == 50 and np.sum(labels[idx] == 1) == 20 and len(np.unique(idx)) == 70


def test_epoch_patches_caps_after_rebalancing() -> None:
    labels, train = _labels(40, 100)
    sampler = EpochSampler(train, labels, batch_size=7, seed=1, epoch_patches=25)
    idx = sampler.epoch_indices(2)
    assert len(idx) == len(np.unique(idx)) == 25 == sampler.epoch_size
    assert sum(len(b) for b in sampler.batches(2)) == 25 and len(sampler.batches(2)) == sampler.steps_per_epoch
    assert not np.array_equal(idx, sampler.epoch_indices(3))


@pytest.mark.parametrize("world_size", [1, 2, 3, 4])
def test_sampler_ranks_share_one_epoch(world_size: int) -> None:
    labels, train = _labels(53, 80)
    samplers = [EpochSampler(train, labels, batch_size=9, seed=2, rank=r, world_size=world_size)
                for r in range(world_size)]
    for epoch in (0, 1):
        per_rank = [s.batches(epoch) for s in samplers]
        assert len({len(b) for b in per_rank}) == 1 and len(per_rank[0]) == samplers[0].steps_per_epoch
        union = torch.cat([b for batches in per_rank for b in batches]).numpy()
        assert np.array_equal(np.sort(union), np.sort(samplers[0].epoch_indices(epoch)))


def test_sampler_without_non_visible_patches_is_an_error() -> None:
    labels = np.array([1, 1, 0, 1], np.uint8)
    with pytest.raises(StoreError, match="no non-visible"):
        EpochSampler(np.array([0, 1, 3]), labels, batch_size=2, seed=0)


# --------------------------------------------------------------------------- sharding


@pytest.mark.parametrize("world_size", [1, 2, 3, 4])
@pytest.mark.parametrize("n", [0, 1, 2, 5, 7, 64, 101, 1000, 1023])
@pytest.mark.parametrize("batch_size", [1, 3, 32])
def test_shard_batches_cover_every_index_once_with_equal_counts(world_size: int, n: int, batch_size: int) -> None:
    indices = np.random.default_rng(n).permutation(n * 3)[:n]
    shards = [shard_batches(indices, batch_size, r, world_size) for r in range(world_size)]
    counts = {len(s) for s in shards}
    assert len(counts) == 1
    steps = counts.pop()
    assert steps == -(-(-(-n // world_size)) // batch_size)
    flat = [b for s in shards for b in s]
    assert all(b.dtype == torch.int64 and len(b) <= batch_size for b in flat)
    union = torch.cat(flat).numpy() if flat else np.zeros(0, np.int64)
    assert np.array_equal(np.sort(union), np.sort(indices))  # no duplicates, nothing lost
    assert np.array_equal(union, indices)  # contiguous parts keep the epoch's order
    if n >= world_size * steps:
        assert all(len(b) > 0 for b in flat)


def test_shard_batches_accepts_tensors_and_rejects_bad_ranks() -> None:
    batches = shard_batches(torch.arange(10), 4, 1, 2)
    assert [b.tolist() for b in batches] == [[5, 6, 7], [8, 9]]
    with pytest.raises(ValueError, match="rank"):
        shard_batches(np.arange(10), 4, 2, 2)
    with pytest.raises(ValueError, match="batch_size"):
        shard_batches(np.arange(10), 0, 0, 1)


# --------------------------------------------------------------------------- a real store


def test_real_store_from_synthetic_data(synth_store: PatchStore) -> None:
    store = open_store(synth_store.path)  # zarr-backed levels, as a job sees them
    factors = (2, 8)
    source = BatchSource(store, factors)
    in_memory = {f: tuple(np.asarray(a[...]) for a in store.levels[f]) for f in store.factors}
    reference_store = PatchStore(**{**store.__dict__, "levels": in_memory})
    idx = np.random.default_rng(0).permutation(store.n_patches)[:200]
    x, label, depth = source.batch(torch.from_numpy(idx))
    torch.testing.assert_close(x, torch.from_numpy(reference_batch(reference_store, factors, idx)))
    torch.testing.assert_close(label, torch.from_numpy(np.asarray(store.table["label"], np.float32)[idx]))
    torch.testing.assert_close(depth, torch.from_numpy(np.asarray(store.table["depth"], np.float32)[idx]))
    train, val, view = fold_split(store, 2)
    assert view == sorted(store.views)[1]
    names = np.array(store.views)[np.asarray(store.table["view"])]
    assert np.all(names[val] == view) and val.size and train.size + val.size == store.n_patches


@pytest.mark.parametrize("kernel", [True, False])
def test_a_folds_batches_are_normalized_with_its_training_views_statistics(synth_store: PatchStore,
                                                                           kernel: bool) -> None:
    """Fold k's batches: (x - mean) / std with the statistics of every view but the one it holds out
    (the store's per-fold rule), never those over all views."""
    factors, fold = (2, 8), 3
    held_out = synth_store.views.index(sorted(synth_store.views)[fold - 1])
    in_memory = {f: tuple(np.asarray(a[...]) for a in synth_store.levels[f]) for f in synth_store.factors}
    reference_store = PatchStore(**{**synth_store.__dict__, "levels": in_memory,
                                    "norm_mean": synth_store.norm_mean_folds[held_out],
                                    "norm_std": synth_store.norm_std_folds[held_out]})
    if kernel and shutil.which(os.environ.get("CC") or "cc") is None:
        pytest.skip("no C compiler: the C kernel cannot be built here")
    source = BatchSource(synth_store, factors, kernel=kernel, fold=fold)
    assert source.uses_kernel == kernel and source.normalization.rule == "per-fold"
    idx = np.random.default_rng(1).permutation(synth_store.n_patches)[:100]
    x, _, _ = source.batch(torch.from_numpy(idx))
    torch.testing.assert_close(x, torch.from_numpy(reference_batch(reference_store, factors, idx)))
    everywhere = BatchSource(synth_store, factors, kernel=kernel)  # no fold: the statistics over all views
    assert everywhere.normalization.rule == "global"
    assert not torch.allclose(everywhere.batch(torch.from_numpy(idx))[0], x)


def test_a_jobs_inputs_use_its_folds_statistics(synth_store: PatchStore) -> None:
    from camvis.config import load_job_config
    from camvis.job.train import open_inputs

    for fold in (1, 2):
        cfg = load_job_config(None, [f"data.store={synth_store.path}", "data.factors=[4,8]", f"data.fold={fold}",
                                     "train.device=cpu"])
        norm = open_inputs(cfg, torch.device("cpu"), synth_store).source.normalization
        v = synth_store.views.index(sorted(synth_store.views)[fold - 1])
        np.testing.assert_array_equal(norm.mean, synth_store.norm_mean_folds[v][[1, 2]])
        np.testing.assert_array_equal(norm.std, synth_store.norm_std_folds[v][[1, 2]])
        assert norm.rule == "per-fold"
