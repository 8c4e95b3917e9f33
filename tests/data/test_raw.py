"""camvis.data.raw: reading camvis2's layout, and check() naming every broken file at once."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from camvis.data import raw
from camvis.cli.data import main
from camvis.errors import RawDataError

IMAGE = "images/{}.png"
VISIBLE = "images/{}_0002_visible.png"
NONVISIBLE = "images/{}_0001_nonvisible.png"


def _first(root: Path, view: str = "1148_1") -> str:
    return next(img.name for img in raw.scan(root).images if img.view == view)


def _write_mask(path: Path, alpha: np.ndarray) -> None:
    rgba = np.zeros(alpha.shape + (4,), np.uint8)
    rgba[..., 3] = alpha
    Image.fromarray(rgba).save(path)


def _check_fails(root: Path) -> str:
    with pytest.raises(RawDataError) as e:
        raw.check(root, progress=False)
    return str(e.value)


def test_scan_and_load(synth_raw: Path) -> None:
    ds = raw.scan(synth_raw)
    assert ds.root == synth_raw and ds.views == ("1148_1", "1148_2", "1148_3")
    assert [img.name for img in ds.images] == sorted(img.name for img in ds.images)
    img = ds.images[0]
    assert img.path == synth_raw / IMAGE.format(img.name)
    assert img.visible_mask == synth_raw / VISIBLE.format(img.name)
    assert img.nonvisible_mask == synth_raw / NONVISIBLE.format(img.name)
    assert ds.depth_path(img.view) == synth_raw / "depth_maps" / f"{img.view}.npy"
    image, labels, depth = raw.load_image(img), raw.load_labels(img), raw.load_depth(ds, img.view)
    assert image.shape == (96, 144, 3) and image.dtype == np.uint8
    assert labels.shape == (96, 144) and labels.dtype == np.uint8 and set(np.unique(labels)) == {0, 1, 2}
    assert depth.shape == (96, 144) and depth.dtype == np.float32 and np.isnan(depth).any()
    visible = np.asarray(Image.open(img.visible_mask))[..., 3] > 1
    assert ((labels == raw.LABEL_VISIBLE) == visible).all()


def test_check_report(synth_raw: Path) -> None:
    report = raw.check(synth_raw, progress=False)
    assert len(report.rows) == 12 and report.views == ("1148_1", "1148_2", "1148_3") and report.visibility_csv
    for row in report.rows:
        assert (row.height, row.width) == (96, 144)
        assert row.labelled_pct == pytest.approx(row.visible_pct + row.nonvisible_pct)
        assert 0 < row.visible_pct < 100 and 0 < row.nonvisible_pct < 100 and 0 < row.nan_depth_pct < 100
    assert report.warnings == ()
    assert report.table().row_count == 12


def test_read_visibility(synth_raw: Path, raw_copy: Path) -> None:
    truth = raw.read_visibility(synth_raw)
    assert truth is not None and sorted(truth) == [img.name for img in raw.scan(synth_raw).images]
    (raw_copy / "visibility.csv").write_text("image,view,visibility_m\na,1148_1,12.5\nb,1148_1,-3\n")
    with pytest.raises(RawDataError, match=r"visibility.csv:3: visibility_m must be a positive"):
        raw.read_visibility(raw_copy)
    (raw_copy / "visibility.csv").unlink()
    assert raw.read_visibility(raw_copy) is None


def test_missing_mask_names_the_image_and_the_mask(raw_copy: Path) -> None:
    name = _first(raw_copy)
    (raw_copy / VISIBLE.format(name)).unlink()
    for message in (_check_fails(raw_copy), str(pytest.raises(RawDataError, raw.scan, raw_copy).value)):
        assert f"{raw_copy / IMAGE.format(name)}: visible mask missing" in message
        assert str(raw_copy / VISIBLE.format(name)) in message


def test_mask_without_image(raw_copy: Path) -> None:
    name = _first(raw_copy)
    (raw_copy / IMAGE.format(name)).unlink()
    message = _check_fails(raw_copy)
    assert f"{raw_copy / VISIBLE.format(name)}: mask without an image" in message
    assert f"{raw_copy / NONVISIBLE.format(name)}: mask without an image" in message


def test_mask_of_wrong_shape(raw_copy: Path) -> None:
    name = _first(raw_copy)
    _write_mask(raw_copy / NONVISIBLE.format(name), np.full((50, 60), 255, np.uint8))
    message = _check_fails(raw_copy)
    assert f"{raw_copy / NONVISIBLE.format(name)}: mask is 50 x 60, its image {name}.png is 96 x 144" in message


def test_depth_map_of_wrong_shape(raw_copy: Path) -> None:
    path = raw_copy / "depth_maps" / "1148_2.npy"
    np.save(path, np.load(path)[:90])
    message = _check_fails(raw_copy)
    name = _first(raw_copy, "1148_2")
    assert f"{raw_copy / IMAGE.format(name)}: image is 96 x 144, the depth map of view 1148_2 is 90 x 144" in message
    assert "1148_1_" not in message  # the other views are fine


def test_missing_depth_map(raw_copy: Path) -> None:
    path = raw_copy / "depth_maps" / "1148_3.npy"
    path.unlink()
    message = _check_fails(raw_copy)
    assert f"{path}: depth map missing for view 1148_3" in message and "1 problem in" in message


def test_overlapping_masks(raw_copy: Path) -> None:
    name = _first(raw_copy)
    vis, non = raw_copy / VISIBLE.format(name), raw_copy / NONVISIBLE.format(name)
    _write_mask(vis, np.full((96, 144), 255, np.uint8))
    n_non = int(np.count_nonzero(raw.read_mask(non)))
    message = _check_fails(raw_copy)
    assert f"{raw_copy / IMAGE.format(name)}: {n_non} pixels are in both masks" in message
    img = next(i for i in raw.scan(raw_copy).images if i.name == name)
    with pytest.raises(RawDataError, match="pixels are in both masks"):
        raw.load_labels(img)


def test_no_labelled_pixel(raw_copy: Path) -> None:
    name = _first(raw_copy)
    for pattern in (VISIBLE, NONVISIBLE):
        _write_mask(raw_copy / pattern.format(name), np.zeros((96, 144), np.uint8))
    assert f"{raw_copy / IMAGE.format(name)}: no labelled pixel" in _check_fails(raw_copy)


def test_alpha_threshold_and_mask_without_alpha(raw_copy: Path) -> None:
    name = _first(raw_copy)
    alpha = np.zeros((96, 144), np.uint8)
    alpha[:, :10], alpha[:, 10:20] = 1, 2  # alpha 1 is not a region, 2 is
    _write_mask(raw_copy / NONVISIBLE.format(name), alpha)
    region = raw.read_mask(raw_copy / NONVISIBLE.format(name))
    assert not region[:, :10].any() and region[:, 10:20].all() and not region[:, 20:].any()
    Image.fromarray(np.zeros((96, 144, 3), np.uint8)).save(raw_copy / VISIBLE.format(name))
    assert f"{raw_copy / VISIBLE.format(name)}: mask has no alpha channel" in _check_fails(raw_copy)


def test_every_problem_is_listed_at_once(raw_copy: Path) -> None:
    names = [img.name for img in raw.scan(raw_copy).images]
    (raw_copy / VISIBLE.format(names[0])).unlink()
    (raw_copy / IMAGE.format(names[5])).unlink()
    (raw_copy / "depth_maps" / "1148_3.npy").unlink()
    (raw_copy / "images" / "notes.txt").write_text("ignored")
    (raw_copy / "images" / "bad-name.png").write_bytes(b"not a png")
    message = _check_fails(raw_copy)
    assert "problems in the raw data" in message
    for path in (IMAGE.format(names[0]), NONVISIBLE.format(names[5]), "depth_maps/1148_3.npy",
                 "images/bad-name.png"):
        assert str(raw_copy / path) in message, path
    assert "notes.txt" not in message  # a stray file is a warning, not a problem


def test_unreadable_image_and_not_a_raw_dir(raw_copy: Path, tmp_path: Path) -> None:
    name = _first(raw_copy)
    (raw_copy / IMAGE.format(name)).write_bytes(b"\x89PNG truncated")
    assert f"{raw_copy / IMAGE.format(name)}: cannot read the image" in _check_fails(raw_copy)
    with pytest.raises(RawDataError, match="not a camvis2 raw data directory"):
        raw.scan(tmp_path / "nowhere")


def test_single_class_image_is_a_warning(raw_copy: Path) -> None:
    name = _first(raw_copy)
    _write_mask(raw_copy / NONVISIBLE.format(name), np.zeros((96, 144), np.uint8))
    report = raw.check(raw_copy, progress=False)
    assert any(name in w and "only visible" in w for w in report.warnings)


def test_cli_check(synth_raw: Path, raw_copy: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["check", str(synth_raw)]) == 0
    out = capsys.readouterr().out
    assert _first(synth_raw) in out and "ok: 12 images, 3 views" in out
    name = _first(raw_copy)
    (raw_copy / NONVISIBLE.format(name)).unlink()
    assert main(["check", str(raw_copy)]) == 2
    captured = capsys.readouterr()
    assert captured.err.startswith("error: ") and str(raw_copy / IMAGE.format(name)) in captured.err
    assert "Traceback" not in captured.err and captured.out == ""
