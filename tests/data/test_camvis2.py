"""camvis's `camvis2` preprocessing against fixtures made by camvis2's own code.

tests/data/camvis2/reference.npz was written by benchmarks/camvis2_reference/make_fixtures.py,
which runs camvis2's make_dataset.py and MultiMagnificationPatches on a synthetic raw dir; the
raw dir is made again here with the same synth call (its files' SHA-256 are in the fixture).
"""

import os
import shutil
from pathlib import Path

import numpy as np
import pytest

from camvis.data import camvis2, raw, synth

FIXTURE = Path(__file__).parent / "camvis2" / "reference.npz"


@pytest.fixture(scope="module")
def ref():
    pytest.importorskip("cv2")  # camvis[camvis2]; requirements.lock installs it
    return dict(np.load(FIXTURE))


@pytest.fixture(scope="module")
def raw_dir(camvis2_raw_dir: Path) -> Path:
    return camvis2_raw_dir


@pytest.fixture(scope="module")
def decoded(raw_dir):
    """(name, rgb, labels, depth) of every image, in name order."""
    reader = raw.RawReader(raw_dir)
    out = sorted(((img.name, rgb, labels, depth) for img, rgb, labels, depth in reader.images()),
                 key=lambda t: t[0])
    reader.raise_problems()
    return out


def test_level_shapes_round_half_to_even(ref):
    shape = tuple(int(v) for v in ref["image_shape"])
    for f in ref["factors"]:
        assert camvis2.level_shape(shape, int(f), camvis2.CAMVIS2) == ref[f"images_x{f}"].shape[2:]
    assert camvis2.level_shape((203, 311), 2, camvis2.CAMVIS2) == (102, 156)  # 101.5 -> 102, 155.5 -> 156
    assert camvis2.level_shape((203, 311), 2) == (101, 155)


def test_rgb_levels_within_one_grey_level(ref, decoded):
    assert [d[0] for d in decoded] == ref["images"].tolist()
    for f in ref["factors"]:
        for i, (_, rgb, _, _) in enumerate(decoded):
            got = camvis2.rgb_level(rgb, int(f)).transpose(2, 0, 1).astype(np.int16)
            assert np.abs(got - ref[f"images_x{f}"][i]).max() <= 1, f"factor {f}, image {i}"


def test_depth_levels_within_1e_6(ref, decoded):
    maps = {}
    for name, _, _, depth in decoded:
        maps.setdefault(name[:6], depth)
    for f in ref["factors"]:
        for v, depth in enumerate(maps.values()):
            np.testing.assert_allclose(camvis2.depth_level(depth, int(f)), ref[f"depths_x{f}"][v, 0], atol=1e-6,
                                       rtol=0)


def test_sampling_draws_camvis2s_centres(ref, decoded):
    rng = np.random.RandomState(int(ref["seed"]))
    h, w = [], []
    for _, _, labels, depth in decoded:
        hh, ww = camvis2.sample_centres(labels, depth, int(ref["patch_number"]), int(ref["patch_size"]), rng)
        h.append(hh)
        w.append(ww)
    np.testing.assert_array_equal(np.concatenate(h), ref["meta_h_canvas"])
    np.testing.assert_array_equal(np.concatenate(w), ref["meta_w_canvas"])


def test_statistics_equal_camvis2s_to_float32_rounding(ref, decoded):
    factors = tuple(int(f) for f in ref["factors"])
    stats = camvis2.Camvis2Stats(factors)
    for f in factors:
        for i in range(len(decoded)):
            stats.add_rgb(f, ref[f"images_x{f}"][i].transpose(1, 2, 0))
        for v in range(len(ref[f"depths_x{f}"])):
            stats.add_depth(f, ref[f"depths_x{f}"][v, 0])
    mean, std = stats.result()
    scale = np.array([255, 255, 255, 1], np.float32)
    np.testing.assert_allclose((mean / scale).ravel(), ref["norm_mean"], rtol=2e-6)
    np.testing.assert_allclose((std / scale).ravel(), ref["norm_std"], rtol=2e-6)


@pytest.fixture(scope="module")
def store(camvis2_store):
    return camvis2_store


def _store_rows(store, ref):
    """The store's patch rows in camvis2's metadata order (images by name, centres in raster order)."""
    names = np.asarray(store.images)[store.table["image"]]
    return np.lexsort((store.table["center_w"], store.table["center_h"], names))


def test_store_in_camvis2_mode_holds_camvis2s_levels_table_and_statistics(store, ref):
    assert store.attrs["preprocessing"] == "camvis2" and store.attrs["build"]["preprocessing"] == "camvis2"
    order = [list(store.images).index(n) for n in ref["images"]]
    for f in ref["factors"]:
        images = np.asarray(store.levels[int(f)][0])[order].astype(np.int16)
        assert images.shape == ref[f"images_x{f}"].shape
        assert np.abs(images - ref[f"images_x{f}"]).max() <= 1
        np.testing.assert_allclose(np.asarray(store.levels[int(f)][1]), ref[f"depths_x{f}"], atol=1e-6, rtol=0)
    rows = _store_rows(store, ref)
    np.testing.assert_array_equal(store.table["center_h"][rows], ref["meta_h_canvas"])
    np.testing.assert_array_equal(store.table["center_w"][rows], ref["meta_w_canvas"])
    np.testing.assert_array_equal(store.table["label"][rows], ref["meta_label"])
    np.testing.assert_array_equal(store.table["depth"][rows], ref["meta_depth"])
    scale = np.array([255, 255, 255, 1], np.float32)
    np.testing.assert_allclose((store.norm_mean / scale).ravel(), ref["norm_mean"], rtol=2e-6)
    np.testing.assert_allclose((store.norm_std / scale).ravel(), ref["norm_std"], rtol=2e-6)


@pytest.mark.parametrize("kernel", [True, False])
def test_batches_of_a_camvis2_store_equal_camvis2s_patches(store, ref, kernel):
    import torch

    from camvis.job.batches import BatchSource

    if kernel and shutil.which(os.environ.get("CC") or "cc") is None:
        pytest.skip("no C compiler: the C kernel cannot be built here")
    source = BatchSource(store, tuple(int(f) for f in ref["factors"]), kernel=kernel)
    assert source.uses_kernel == kernel  # the C kernel knows camvis2's crop rule too
    rows = _store_rows(store, ref)[ref["batch_index"]]
    x, _, _ = source.batch(torch.as_tensor(rows))
    np.testing.assert_allclose(x.numpy(), ref["batch_x"], atol=2e-5, rtol=1e-5)


def test_level_centre_rounds_half_to_even():
    import torch

    from camvis.job.batches import level_centre

    h = torch.arange(0, 40)
    for f in (2, 4, 8, 16, 32):
        expected = [int(round(v / f)) for v in range(40)]
        assert level_centre(h, torch.tensor(f), "camvis2").tolist() == expected
        assert level_centre(h, torch.tensor(f)).tolist() == [v // f for v in range(40)]


def test_info_shows_the_preprocessing(store, capsys):
    from camvis.cli import data as cli

    cli.main(["info", str(store.path)])
    assert "camvis2" in capsys.readouterr().out


def test_without_opencv_the_error_names_the_extra(monkeypatch, tmp_path, capsys):
    from camvis.cli import data as cli

    monkeypatch.setitem(__import__("sys").modules, "cv2", None)  # as if not installed: import raises
    with pytest.raises(camvis2.MissingExtra, match=r"pip install 'camvis\[camvis2\]'"):
        camvis2.rgb_level(np.zeros((8, 8, 3), np.uint8), 2)
    raw_dir = synth.synthesize(tmp_path / "raw", views=2, images_per_view=1, size=(64, 96), progress=False)
    assert cli.main(["build", str(raw_dir), str(tmp_path / "s.zarr"), "--factors", "2", "--patch-size", "16",
                     "--preprocessing", "camvis2"]) == 2
    assert capsys.readouterr().err.startswith("error: preprocessing camvis2 needs OpenCV")
    assert not (tmp_path / "s.zarr").exists()
