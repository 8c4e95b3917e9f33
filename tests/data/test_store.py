"""The Zarr patch store: build round trip, statistics, safety of rebuilds, the figure."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import zarr

from camvis.data import levels, raw
from camvis import atomic_folder
from camvis.data import store
from camvis.data import store_build
from camvis.errors import StoreError

BUILD = dict(factors=(2, 4), patch_size=16, patches_per_image=40, seed=3, progress=False)


@pytest.fixture(scope="module")
def built(synth_raw: Path, tmp_path_factory: pytest.TempPathFactory) -> store.PatchStore:
    """One store of the synthetic raw dir, shared by the read-only tests."""
    out = tmp_path_factory.mktemp("store") / "s.zarr"
    return store_build.build(synth_raw, out, **BUILD)


# --------------------------------------------------------------------------- round trip


def test_build_round_trip_shapes_dtypes_table(built: store.PatchStore, synth_raw: Path) -> None:
    ds = raw.scan(synth_raw)
    s = store.open_store(built.path)
    height, width = s.image_shape
    assert s.views == ds.views and s.images == tuple(i.name for i in ds.images)
    assert s.factors == (2, 4) and s.patch_size == 16
    for f in s.factors:
        images, depth = s.levels[f]
        assert images.dtype == np.uint8 and images.shape == (12, 3, height // f, width // f)
        assert depth.dtype == np.float32 and depth.shape == (3, 1, height // f, width // f)
        assert images.chunks == (1, 3, height // f, width // f)
    t = s.table
    assert set(t) == set(store.TABLE_COLUMNS)
    assert {k: v.dtype.name for k, v in t.items()} == store.TABLE_COLUMNS
    assert len({v.size for v in t.values()}) == 1 and s.n_patches == t["label"].size > 0
    assert set(np.unique(t["label"])) <= {0, 1}
    assert np.all(np.bincount(t["image"], minlength=12) <= 40)
    assert np.array_equal(t["view"], s.image_view[t["image"]])
    assert np.all(np.diff(t["image"]) >= 0)
    assert t["center_h"].min() >= 8 and t["center_h"].max() < height - 8
    assert t["center_w"].min() >= 8 and t["center_w"].max() < width - 8


def test_build_records_what_raw_says(built: store.PatchStore, synth_raw: Path) -> None:
    ds = raw.scan(synth_raw)
    t, f = built.table, 2
    img = ds.images[5]
    rows = t["image"] == 5
    labels, depth = raw.load_labels(img), raw.load_depth(ds, img.view)
    h, w = t["center_h"][rows], t["center_w"][rows]
    assert np.array_equal(t["label"][rows], labels[h, w])
    assert np.array_equal(t["depth"][rows], depth[h, w])
    # Level pixel j is the mean of full-resolution block j (PIL rounds: off by at most 1).
    rgb = raw.load_image(img).astype(np.float64)
    hf, wf = rgb.shape[0] // f, rgb.shape[1] // f
    block_mean = rgb[: hf * f, : wf * f].reshape(hf, f, wf, f, 3).mean(axis=(1, 3))
    level = built.levels[f][0][5].transpose(1, 2, 0).astype(np.float64)
    assert np.abs(level - block_mean).max() <= 1.0
    v = built.views.index(img.view)
    expected = levels.log_depth(depth[f // 2 :: f, f // 2 :: f][:hf, :wf])
    stored = built.levels[f][1][v, 0]
    assert np.array_equal(stored, expected)
    assert np.all(stored[np.isnan(depth[f // 2 :: f, f // 2 :: f][:hf, :wf])] == -1.0)


def test_normalization_statistics_match_numpy(built: store.PatchStore) -> None:
    for k, f in enumerate(built.factors):
        images = built.levels[f][0][:].astype(np.float64)
        depth = built.levels[f][1][:]
        valid = depth[depth != -1.0].astype(np.float64)
        mean = [*images.mean(axis=(0, 2, 3)), valid.mean()]
        std = [*images.std(axis=(0, 2, 3)), valid.std()]
        np.testing.assert_allclose(built.norm_mean[k], mean, rtol=1e-5)
        np.testing.assert_allclose(built.norm_std[k], std, rtol=1e-5)
    assert built.norm_mean.dtype == np.float32 and built.norm_mean.shape == (2, 4)


def test_attrs_provenance_and_version(built: store.PatchStore, synth_raw: Path) -> None:
    a = built.attrs
    assert a["format"] == "camvis-patch-store" and a["format_version"] == store.FORMAT_VERSION == 4
    assert a["image_shape"] == list(built.image_shape)
    p = a["provenance"]
    assert p["raw_dir"] == str(synth_raw.resolve()) and p["seed"] == 3
    assert p["patches_per_image"] == 40 and p["synth_sidecar"] is True
    assert p["created"] and p["camvis_version"]
    truth = raw.read_visibility(synth_raw)
    assert a["visibility_m"] == [truth[name] for name in built.images]


def test_build_is_deterministic_for_a_seed(built: store.PatchStore, synth_raw: Path,
                                           tmp_path: Path) -> None:
    again = store_build.build(synth_raw, tmp_path / "a.zarr", **BUILD, figure=False)
    other = store_build.build(synth_raw, tmp_path / "b.zarr", **{**BUILD, "seed": 4}, figure=False)
    for k in store.TABLE_COLUMNS:
        assert np.array_equal(again.table[k], built.table[k]), k
    np.testing.assert_array_equal(again.levels[4][0][:], built.levels[4][0][:])
    np.testing.assert_array_equal(again.norm_std, built.norm_std)
    assert not np.array_equal(other.table["center_h"], built.table["center_h"])


# --------------------------------------------------------------------------- opening


def test_open_store_errors_name_the_path(built: store.PatchStore, tmp_path: Path) -> None:
    with pytest.raises(StoreError, match="no such store") as e:
        store.open_store(tmp_path / "missing.zarr")
    assert str(tmp_path / "missing.zarr") in str(e.value)
    plain = tmp_path / "plain"
    plain.mkdir()
    with pytest.raises(StoreError, match="not a Zarr group") as e:
        store.open_store(plain)
    assert str(plain) in str(e.value)
    other = tmp_path / "other.zarr"
    zarr.open_group(other, mode="w", zarr_format=3).attrs["x"] = 1
    with pytest.raises(StoreError, match="not a camvis store"):
        store.open_store(other)


def test_open_store_rejects_another_format_version(synth_raw: Path, tmp_path: Path) -> None:
    path = tmp_path / "s.zarr"
    store_build.build(synth_raw, path, **BUILD, figure=False)
    zarr.open_group(path, mode="r+").attrs["format_version"] = 99
    with pytest.raises(StoreError) as e:
        store.open_store(path)
    message = str(e.value)
    assert str(path) in message and "99" in message and "version 4 (and 2, 3" in message


# --------------------------------------------------------------------------- rebuilding


def _identity(path: Path) -> tuple[int, int]:
    """Changes whenever the store is rewritten (timestamps have only 1 s resolution)."""
    stat = (path / "zarr.json").stat()
    return stat.st_ino, stat.st_mtime_ns


def test_existing_store_is_kept_without_force(synth_raw: Path, tmp_path: Path) -> None:
    path = tmp_path / "s.zarr"
    first = store_build.build(synth_raw, path, **BUILD, figure=False)
    before = _identity(path)
    same = store_build.build(synth_raw, path, **BUILD, figure=False)
    assert _identity(path) == before and same.path == path
    with pytest.raises(StoreError, match="seed=3 \\(asked 9\\).*force"):
        store_build.build(synth_raw, path, **{**BUILD, "seed": 9}, figure=False)
    kept = store.open_store(path)
    assert np.array_equal(kept.table["center_w"], first.table["center_w"])
    assert kept.attrs["provenance"]["seed"] == 3 and _identity(path) == before


def test_same_build_in_an_older_format_is_rebuilt(synth_raw: Path, tmp_path: Path) -> None:
    path = tmp_path / "s.zarr"
    store_build.build(synth_raw, path, **BUILD, figure=False)
    root = zarr.open_group(path, mode="r+")
    root.attrs.update({"format_version": 1, "checksums": None, "digest": None})  # as version 1 left it
    before = _identity(path)
    with pytest.raises(StoreError, match="version 1, this camvis reads version 4.*--force"):  # other parameters
        store_build.build(synth_raw, path, **{**BUILD, "seed": 9}, figure=False)
    assert _identity(path) == before
    rebuilt = store_build.build(synth_raw, path, **BUILD, figure=False)
    assert _identity(path) != before and rebuilt.attrs["format_version"] == store.FORMAT_VERSION
    assert store.open_store(path).attrs["checksums"]


def test_interrupted_forced_rebuild_keeps_old_store(synth_raw: Path, tmp_path: Path,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "s.zarr"
    first = store_build.build(synth_raw, path, **BUILD, figure=False)
    before = _identity(path)
    calls = []
    real = store_build.image_part

    def failing(*args: object, **kwargs: object) -> object:
        calls.append(1)
        if len(calls) >= 3:
            raise RuntimeError("disk full (simulated)")
        return real(*args, **kwargs)

    monkeypatch.setattr(store_build, "image_part", failing)
    with pytest.raises(RuntimeError, match="simulated"):
        store_build.build(synth_raw, path, **{**BUILD, "seed": 5}, force=True, figure=False)
    kept = store.open_store(path)
    assert _identity(path) == before
    assert np.array_equal(kept.table["center_h"], first.table["center_h"])
    assert sorted(p.name for p in tmp_path.iterdir()) == ["s.zarr"]
    # A fresh build that fails leaves nothing at all under the final name.
    with pytest.raises(RuntimeError):
        store_build.build(synth_raw, tmp_path / "new.zarr", **BUILD, figure=False)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["s.zarr"]


def test_forced_rebuild_replaces_store_but_never_other_data(synth_raw: Path,
                                                            tmp_path: Path) -> None:
    path = tmp_path / "s.zarr"
    store_build.build(synth_raw, path, **BUILD, figure=False)
    rebuilt = store_build.build(synth_raw, path, **{**BUILD, "seed": 5}, force=True, figure=False)
    assert store.open_store(path).attrs["provenance"]["seed"] == 5 == rebuilt.attrs["build"]["seed"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["s.zarr"]
    precious = tmp_path / "precious"
    precious.mkdir()
    (precious / "thesis.tex").write_text("years of work")
    with pytest.raises(StoreError, match="refusing to replace"):
        store_build.build(synth_raw, precious, **BUILD, force=True, figure=False)
    assert (precious / "thesis.tex").read_text() == "years of work"


# --------------------------------------------------------------------------- info, figure


def test_summary_counts_add_up(built: store.PatchStore) -> None:
    info = store.summary(built.path)
    assert info["images"] == 12 and len(info["views"]) == 3
    assert sum(v["visible"] + v["nonvisible"] for v in info["views"]) == built.n_patches
    assert sum(v["images"] for v in info["views"]) == 12
    assert [lv["factor"] for lv in info["levels"]] == [2, 4]
    assert info["size_bytes"] > 0 and info["provenance"]["seed"] == 3
    text = store.format_summary(built)
    assert all(view in text for view in built.views) and "provenance" in text


def test_sampling_figure_is_a_png(built: store.PatchStore, tmp_path: Path) -> None:
    default = built.path.with_name(built.path.name + ".sampling.png")
    assert default.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    out = store.sampling_figure(built.path, built.images[-1], tmp_path / "fig.png")
    assert out.stat().st_size > 10_000 and out.read_bytes()[:4] == b"\x89PNG"
    with pytest.raises(StoreError, match="no image 'nope'"):
        store.sampling_figure(built, "nope", tmp_path / "x.png")


def test_leftovers_of_a_killed_build_are_cleaned_or_restored(synth_raw: Path,
                                                             tmp_path: Path) -> None:
    dead = 999_999_999  # above any pid_max: no such process
    path = tmp_path / "s.zarr"
    store_build.build(synth_raw, path, **BUILD, figure=False)
    before = _identity(path)
    host = atomic_folder.host()
    (tmp_path / f".s.zarr.tmp-{host}-{dead}" / "levels").mkdir(parents=True)   # died while writing
    path.rename(tmp_path / f".s.zarr.old-{host}-{dead}")                        # died between renames
    store_build.build(synth_raw, path, **BUILD, figure=False)
    assert _identity(path) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["s.zarr"]
