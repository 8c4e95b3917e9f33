"""camvis.data.synth: determinism, layout and naming, fog physics, labels."""

from __future__ import annotations

import datetime as dt
import re
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from camvis.data import raw
from camvis.data import synth
from camvis.cli.data import main
from camvis.errors import ConfigError

TINY = {"views": 2, "images_per_view": 2, "size": (48, 72), "progress": False}
NAME = re.compile(r"^(\d{4})_([1-4])_(\d{4}-\d{2}-\d{2})_(\d{2})(\d{2})$")


def _files(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def _images(root: Path) -> list[tuple[raw.RawImage, float]]:
    truth = raw.read_visibility(root)
    assert truth is not None
    return [(img, truth[img.name]) for img in raw.scan(root).images]


def test_same_seed_same_bytes_other_seed_differs(tmp_path: Path) -> None:
    a = _files(synth.synthesize(tmp_path / "a", seed=5, **TINY))
    b = _files(synth.synthesize(tmp_path / "b", seed=5, **TINY))
    c = _files(synth.synthesize(tmp_path / "c", seed=6, **TINY))
    assert a == b
    assert len(a) == 2 * 2 * 3 + 2 + 2  # images + masks, depth maps, csv + synth.json
    assert a["visibility.csv"] != c["visibility.csv"]
    assert a["depth_maps/1148_1.npy"] != c["depth_maps/1148_1.npy"]


def test_layout_names_and_csv(synth_raw: Path) -> None:
    ds = raw.scan(synth_raw)
    assert ds.views == ("1148_1", "1148_2", "1148_3")
    assert len(ds.images) == 3 * 4  # conftest.SYNTH_RAW
    for img in ds.images:
        m = NAME.match(img.name)
        assert m, img.name
        assert f"{m[1]}_{m[2]}" == img.view
        day = dt.date.fromisoformat(m[3])
        assert day.month in (10, 11, 12, 1, 2, 3) and 7 <= int(m[4]) <= 17 and int(m[5]) % 10 == 0
    lines = (synth_raw / "visibility.csv").read_text().splitlines()
    assert lines[0] == "image,view,visibility_m"
    assert [line.split(",")[0] for line in lines[1:]] == [img.name for img in ds.images]
    assert all(raw.view_of(name) == view for name, view, _ in (line.split(",") for line in lines[1:]))


def test_views_span_cameras_when_there_are_many() -> None:
    names = synth.view_names(9)
    assert names[:3] == ["1148_1", "1206_1", "1233_1"] and len(set(names)) == 9
    with pytest.raises(ConfigError, match="views must be in 1..32, got 33"):
        synth.synthesize("/nonexistent", views=33, progress=False)


def test_depth_map_shape_range_and_xyz(synth_raw: Path) -> None:
    arr = np.load(synth_raw / "depth_maps" / "1148_1.npy")
    assert arr.shape == (96, 144, 4) and arr.dtype == np.float32
    depth = arr[..., 0]
    sky = np.isnan(depth)
    assert sky[0].all() and not sky[-1].any()  # sky on top, ground at the bottom
    assert 5 < np.nanmin(depth) < 30 and 50e3 < np.nanmax(depth) < 150e3
    assert (np.isnan(arr[..., 1:]) == sky[..., None]).all()
    radius = np.linalg.norm(arr[~sky][:, 1:].astype(np.float64), axis=1)
    assert (np.abs(radius - 6.37e6) < 30e3).all()  # on the Earth's surface
    ground = np.linalg.norm(arr[-1, 72, 1:].astype(np.float64) - arr[-2, 72, 1:])
    assert 0 < ground < 5  # neighbouring ground pixels near the camera are close in XYZ too


def test_labels_agree_with_depth_and_visibility(synth_raw: Path) -> None:
    ds = raw.scan(synth_raw)
    for img, v in _images(synth_raw):
        depth, labels = raw.load_depth(ds, img.view), raw.load_labels(img)
        assert (depth[labels == raw.LABEL_VISIBLE] < v / synth.LABEL_BAND).all()
        assert (depth[labels == raw.LABEL_NONVISIBLE] > v * synth.LABEL_BAND).all()
        near_v = (depth > v / synth.LABEL_BAND * 1.01) & (depth < v * synth.LABEL_BAND * 0.99)
        assert (labels[near_v | np.isnan(depth)] == raw.LABEL_UNLABELLED).all()
        assert (labels == raw.LABEL_VISIBLE).any() and (labels == raw.LABEL_NONVISIBLE).any(), img.name
        assert 100.0 <= v <= 50000.0


def test_contrast_falls_with_distance(synth_raw: Path) -> None:
    """Mean |I - A| per depth bin (in units of V) decreases; A read off the sky, where t = 0."""
    ds = raw.scan(synth_raw)
    edges = np.array([0, 0.125, 0.25, 0.5, 1, 2, 4, np.inf])
    for img, v in _images(synth_raw):
        image, depth = raw.load_image(img).astype(np.float64), raw.load_depth(ds, img.view)
        sky = np.isnan(depth)
        airlight = np.median(image[sky], axis=0)
        deviation = np.abs(image - airlight).mean(axis=2)
        bins = np.digitize(depth / v, edges) - 1
        means = [deviation[(bins == b) & ~sky].mean() for b in range(len(edges) - 1)
                 if np.count_nonzero((bins == b) & ~sky) >= 30]
        assert len(means) >= 3, img.name
        assert all(later <= earlier + 1.5 for earlier, later in zip(means, means[1:])), (img.name, means)
        assert means[0] > 3 * means[-1], (img.name, means)


def test_koschmieder_contrast_at_v_is_five_percent() -> None:
    black = np.zeros((1, 2, 3), np.float32)
    depth = np.array([[0.0, 700.0]], np.float32)
    airlight = np.array([0.8, 0.8, 0.8], np.float32)
    out = synth.fog(black, depth, 700.0, airlight, np.random.default_rng(0), 0.0, 0.0)
    assert (out[0, 0] == 0).all()  # at distance 0 the (black) object itself
    assert out[0, 1] == pytest.approx(np.round(0.8 * 0.95 * 255), abs=1)  # 5% contrast left at V
    assert synth.beta_of(1000.0) == pytest.approx(2.9957e-3, rel=1e-4)


def test_visibility_drawn_inside_range_and_clipped_to_terrain() -> None:
    depth = np.geomspace(10, 100e3, 10_000).reshape(100, 100)
    bounds = synth.visibility_bounds(depth)
    rng = np.random.default_rng(0)
    vs = [synth.draw_visibility((1.0, 1e7), bounds, rng) for _ in range(200)]
    assert bounds[0] <= min(vs) and max(vs) <= bounds[1]
    for v in vs[:20]:
        visible, nonvisible = synth.label_masks(depth, v)
        assert visible.any() and nonvisible.any()
    thick = [synth.draw_visibility((100.0, 200.0), bounds, rng) for _ in range(50)]
    assert 100 <= min(thick) and max(thick) <= 200
    outside = synth.draw_visibility((1e6, 2e6), bounds, rng)  # no overlap: the asked range wins
    assert 1e6 <= outside <= 2e6


def test_masks_are_rgba_with_alpha_region(synth_raw: Path) -> None:
    img = raw.scan(synth_raw).images[0]
    with Image.open(img.visible_mask) as im:
        assert im.mode == "RGBA"
        rgba = np.asarray(im)
    assert set(np.unique(rgba[..., 3])) == {0, 255}
    assert (rgba[rgba[..., 3] == 255][:, :3] == synth.VISIBLE_COLOUR).all()


@pytest.mark.parametrize("image_format", ["jpg", "jp2"])
def test_other_formats_pass_the_check(tmp_path: Path, image_format: str) -> None:
    root = synth.synthesize(tmp_path / "raw", views=1, images_per_view=1, size=(48, 64),
                            image_format=image_format, progress=False)
    [img] = raw.scan(root).images
    assert img.path.suffix == f".{image_format}"
    assert raw.load_image(img).shape == (48, 64, 3)
    assert len(raw.check(root, progress=False).rows) == 1


def test_existing_data_set_needs_force(tmp_path: Path) -> None:
    out = tmp_path / "raw"
    out.mkdir()
    (out / ".gitkeep").touch()  # data/raw/ as shipped: fine
    synth.synthesize(out, seed=1, **TINY)
    with pytest.raises(ConfigError, match="already holds a raw data set"):
        synth.synthesize(out, seed=2, **TINY)
    synth.synthesize(out, seed=2, force=True, **{**TINY, "views": 1})
    assert sorted(p.name for p in (out / "depth_maps").iterdir()) == ["1148_1.npy"]
    assert sorted(p.name for p in out.iterdir()) == [".gitkeep", "depth_maps", "images", "synth.json",
                                                     "visibility.csv"]


def test_bad_arguments_are_listed_together() -> None:
    with pytest.raises(ConfigError) as e:
        synth.synthesize("/nonexistent", views=0, size=(8, 8), vis_range=(500.0, 100.0), image_format="tif")
    for part in ("views", "size", "vis_range", "image_format"):
        assert part in str(e.value)


def test_paper_size_scene_renders_a_strip() -> None:
    scene = synth.make_scene("1148_1", synth.PAPER_SIZE, np.random.default_rng(0))
    depth, clear, xyz = synth.render_rows(scene, 2500, 2504, xyz=True)
    assert depth.shape == (4, synth.PAPER_SIZE[1]) and clear.shape == (4, synth.PAPER_SIZE[1], 3)
    assert xyz is not None and np.isfinite(depth).all() and (0 <= clear).all() and (clear <= 1).all()


def test_cli_synth_writes_and_reports(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "raw"
    assert main(["synth", str(out), "--views", "1", "--images-per-view", "2", "--size", "48x64",
                 "--vis-range", "200", "5000", "--seed", "3"]) == 0
    assert "wrote 1 views x 2 images" in capsys.readouterr().out
    assert all(200 <= v <= 5000 for v in (raw.read_visibility(out) or {}).values())
    assert main(["synth", str(out)]) == 2
    assert capsys.readouterr().err.startswith("error: ")
    with pytest.raises(SystemExit):
        main(["synth", str(out), "--size", "big"])
