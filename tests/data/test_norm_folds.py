"""Statistics per fold (issue 11, item 5): in `exact` stores each leave-one-view-out fold's
normalization statistics come from its training views only, so the held-out view's pixels never
reach its inputs; camvis2 stores keep camvis2's global rule."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from camvis.data import raw, store_build
from camvis.data.store import PatchStore, format_summary, summary

BUILD = dict(factors=(2, 4), patch_size=16, patches_per_image=30, seed=1, progress=False, figure=False)


def _numpy_stats(store: PatchStore, views: list[int]) -> tuple[np.ndarray, np.ndarray]:
    """Mean and population std per factor over the levels of `views`, straight from the arrays:
    RGB of their images, log-depth of their depth maps without the -1 sentinel."""
    mean, std = [], []
    images = np.isin(store.image_view, views)
    for f in store.factors:
        rgb = np.asarray(store.levels[f][0][:])[images].astype(np.float64)
        depth = np.asarray(store.levels[f][1][:])[views].astype(np.float64)
        valid = depth[depth != -1.0]
        mean.append([*rgb.mean(axis=(0, 2, 3)), valid.mean()])
        std.append([*rgb.std(axis=(0, 2, 3)), valid.std()])
    return np.array(mean), np.array(std)


def test_each_folds_statistics_are_those_of_its_training_views(synth_store: PatchStore) -> None:
    assert synth_store.norm_rule == "per-fold" and synth_store.attrs["norm_rule"] == "per-fold"
    n_views = len(synth_store.views)
    assert synth_store.norm_mean_folds.shape == (n_views, len(synth_store.factors), 4)
    for fold, held_out in enumerate(sorted(synth_store.views), start=1):
        training = [v for v, name in enumerate(synth_store.views) if name != held_out]
        mean, std = _numpy_stats(synth_store, training)
        norm = synth_store.normalization(fold)
        assert norm.rule == "per-fold" and norm.label == "per-fold (training views)"
        np.testing.assert_allclose(norm.mean, mean, rtol=1e-6)
        np.testing.assert_allclose(norm.std, std, rtol=1e-6)
    # the global statistics (no fold) still cover every view
    mean, std = _numpy_stats(synth_store, list(range(n_views)))
    np.testing.assert_allclose(synth_store.normalization(None).mean, mean, rtol=1e-6)
    np.testing.assert_allclose(synth_store.norm_std, std, rtol=1e-6)
    assert synth_store.normalization(None).rule == "global"


def test_the_held_out_views_pixels_do_not_reach_its_folds_statistics(raw_copy: Path, tmp_path: Path) -> None:
    before = store_build.build(raw_copy, tmp_path / "a.zarr", **BUILD)
    held_out = sorted(before.views)[-1]
    ds = raw.RawReader(raw_copy).dataset
    for img in ds.images:  # the held-out view's images inverted, its depth map stretched
        if img.view == held_out:
            Image.fromarray(255 - raw.load_image(img)).save(img.path)
    depth_file = ds.depth_path(held_out)
    depth = np.load(depth_file)
    np.save(depth_file, depth * 1.5)
    after = store_build.build(raw_copy, tmp_path / "b.zarr", **BUILD)
    fold = len(before.views)  # holds out the last view in sorted order
    for k in ("mean", "std"):
        a, b = (getattr(s.normalization(fold), k) for s in (before, after))
        np.testing.assert_array_equal(a, b)  # bit for bit: nothing of the held-out view is in them
        assert not np.array_equal(getattr(before.normalization(1), k), getattr(after.normalization(1), k))
        assert not np.array_equal(getattr(before.normalization(None), k), getattr(after.normalization(None), k))


def test_parallel_build_writes_the_same_per_fold_statistics(synth_raw: Path, tmp_path: Path) -> None:
    serial = store_build.build(synth_raw, tmp_path / "s.zarr", **BUILD, workers=1)
    parallel = store_build.build(synth_raw, tmp_path / "p.zarr", **BUILD, workers=2)
    for key in ("norm_rule", "norm_mean_folds", "norm_std_folds", "norm_mean", "norm_std"):
        assert serial.attrs[key] == parallel.attrs[key], key


def test_info_says_the_rule(synth_store: PatchStore) -> None:
    text = " ".join(format_summary(synth_store).split())
    assert "normalization: per-fold: a fold's job uses statistics over its training views" in text
    folds = summary(synth_store)["folds"]
    assert [f["held_out"] for f in folds] == sorted(synth_store.views)
    assert folds[0]["norm_mean"] == synth_store.normalization(1).mean.tolist()


def test_camvis2_stores_keep_camvis2s_global_rule(synth_raw: Path, tmp_path: Path) -> None:
    pytest.importorskip("cv2")
    built = store_build.build(synth_raw, tmp_path / "c2.zarr", **BUILD, preprocessing="camvis2")
    assert built.attrs["norm_rule"] == "global" and "norm_mean_folds" not in built.attrs
    norm = built.normalization(1)
    assert norm.rule == "global" and norm.label == "global (all views)"
    np.testing.assert_array_equal(norm.mean, built.norm_mean)
    assert "global: statistics over all views, held-out view included" in " ".join(format_summary(built).split())
