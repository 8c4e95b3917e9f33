"""camvis-predict on what users and attackers hand it: one bad image, one line, the rest predicted;
images converted as camvis2's reader does; resume on path + content; --raw's truth columns; the
runtime auto picks; several images at once give the rows of one at a time. Real files, a real job."""

from __future__ import annotations

import os
import shutil
import signal
import struct
import zlib
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from camvis.cli.predict import main as predict_main
from camvis.cluster import predict_launch as pl
from camvis.errors import PredictError
from camvis.job import inputs, predict
from test_predict import _image, assert_same_rows, job  # noqa: F401  (job: a fixture); tests/ is on sys.path (pytest prepend import mode)

ARGS = ("--patches", "20", "--device", "cpu")


@pytest.fixture(autouse=True)
def no_hang():
    """A FIFO opened for reading would block forever: fail instead."""
    signal.alarm(300)
    yield
    signal.alarm(0)


def png_header(width: int, height: int) -> bytes:
    """A PNG whose header claims width x height (no pixel data behind it)."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0))
            + chunk(b"IEND", b""))


def run(capsys, *args: str) -> tuple[int, list[str], str]:
    code = predict_main([*args])
    captured = capsys.readouterr()
    return code, captured.err.strip().splitlines(), captured.out


def test_every_bad_image_is_one_line_and_the_good_ones_are_predicted(synth_raw, job, tmp_path, capsys):
    good = [_image(synth_raw, "1148_1", k) for k in range(2)]
    rgb = np.asarray(Image.open(good[0]).convert("RGB"))
    folder = tmp_path / "images"
    folder.mkdir()
    for path in good:
        shutil.copy(path, folder / path.name)
    png = good[0].read_bytes()
    bad = {
        "1148_1_2021-01-01_0000.png": png_header(100_000, 100_000),  # decompression bomb
        "1148_1_2021-01-01_0100.png": b"",                           # 0 bytes
        "1148_1_2021-01-01_0200.png": png[: len(png) // 2],          # truncated
        "1148_1_2021-01-01_0300.jpg": b"GIF89a not really",          # not an image
    }
    for name, data in bad.items():
        (folder / name).write_bytes(data)
    floats = tmp_path / "1148_1_2021-01-01_0400.tif"  # named on the command line: folders list .png/.jpg/.jp2
    Image.fromarray(rgb.astype(np.float32)[:, :, 0]).save(floats)
    os.mkfifo(folder / "1148_1_2021-01-01_0500.png")                                            # a FIFO
    (folder / "1148_1_2021-01-01_0600.png").mkdir()                                             # a folder
    weird = os.fsdecode(b"1148_1_2021-01-01_0700\xff.png")                                      # not UTF-8
    shutil.copy(good[0], folder / weird)
    out, maps = tmp_path / "p.csv", tmp_path / "maps"
    code, err, stdout = run(capsys, str(job), str(folder), str(floats), "--raw", str(synth_raw), "--out", str(out),
                            "--map", str(maps), *ARGS)
    assert code == 2 and len(err) == 8 and all(line.startswith("error: ") for line in err), err
    text = "\n".join(err)
    assert "0000.png: 100000 x 100000 = 10,000,000,000 pixels, more than the cap" in text or \
        "0000.png: more pixels than the cap" in text
    assert "0100.png: the image is empty (0 bytes)" in text
    assert "0200.png: cannot read the image" in text and "0300.jpg: cannot read the image" in text
    assert "0400.tif: floating-point samples (mode F)" in text
    assert "0500.png: the image is not a regular file" in text and "0600.png: the image is not a regular" in text
    assert "0700\\xff.png: the file name is not UTF-8" in text
    assert "Traceback" not in text and "runtime: torch-cpu" in stdout
    rows = pd.read_csv(out)
    assert list(rows["image"]) == [p.stem for p in good] and rows["visibility_m"].notna().all()
    assert sorted(p.name for p in maps.glob("*.png")) == sorted(f"{p.stem}.png" for p in good)


def test_a_bad_depth_map_and_a_map_path_that_is_a_file_are_one_line(synth_raw, job, tmp_path, capsys):
    raw = tmp_path / "raw"
    shutil.copytree(synth_raw, raw)
    (raw / "depth_maps" / "1148_3.npy").write_bytes(b"")
    images = [str(_image(raw, "1148_3")), str(_image(raw, "1148_1"))]
    out = tmp_path / "p.csv"
    code, err, _ = run(capsys, str(job), *images, "--raw", str(raw), "--out", str(out), *ARGS)
    assert code == 2 and len(err) == 1 and "1148_3.npy: the depth map is empty (0 bytes)" in err[0], err
    assert list(pd.read_csv(out)["image"]) == [Path(images[1]).stem]
    afile = tmp_path / "maps.png"
    afile.write_bytes(b"x")
    code, err, _ = run(capsys, str(job), images[1], "--raw", str(raw), "--out", str(tmp_path / "q.csv"),
                       "--map", str(afile), *ARGS)
    assert code == 2 and len(err) == 1 and "--map expects a folder" in err[0]
    assert afile.read_bytes() == b"x" and not (tmp_path / "q.csv").exists()


def test_no_images_is_an_error(synth_raw, job, tmp_path, capsys):
    empty = tmp_path / "empty"
    empty.mkdir()
    code, err, _ = run(capsys, str(job), str(empty), "--depth", str(synth_raw / "depth_maps" / "1148_1.npy"),
                       "--out", str(tmp_path / "p.csv"), *ARGS)
    assert code == 2 and len(err) == 1 and "no images in" in err[0] and not (tmp_path / "p.csv").exists()


@pytest.mark.parametrize("mode", ["L", "I;16", "RGB16", "RGBA", "LA", "P", "1"])
def test_images_are_converted_as_camvis2s_reader_does(tmp_path, mode):
    """cv2.imread(path) with no flags (camvis2's reader): 16-bit >> 8, grey replicated, alpha dropped."""
    cv2 = pytest.importorskip("cv2")
    rng = np.random.default_rng(0)
    path = tmp_path / "x.png"
    if mode == "I;16":
        cv2.imwrite(str(path), rng.integers(0, 65536, (20, 30), dtype=np.uint16))
    elif mode == "RGB16":
        cv2.imwrite(str(path), rng.integers(0, 65536, (20, 30, 3), dtype=np.uint16))
    else:
        Image.fromarray(rng.integers(0, 256, (20, 30, 4), dtype=np.uint8), "RGBA").convert(mode).save(path)
    rgb, digest = inputs.read_image_file(path)
    np.testing.assert_array_equal(rgb, cv2.imread(str(path))[:, :, ::-1])
    assert rgb.dtype == np.uint8 and rgb.shape == (20, 30, 3) and len(digest) == 64


def test_a_16_bit_image_predicts_as_its_8_bit_version_not_clipped(synth_raw, job, tmp_path):
    image = _image(synth_raw, "1148_2")
    grey8 = np.asarray(Image.open(image).convert("L"))
    wide = tmp_path / "1148_2_2021-01-01_0000.png"
    Image.fromarray((grey8.astype(np.uint16) << 8) + 128).save(wide)  # high byte = the 8-bit value
    narrow = tmp_path / "1148_2_2021-01-01_0100.png"
    Image.fromarray(grey8).save(narrow)
    model = predict.load_model(job, device="cpu")
    depth = synth_raw / "depth_maps" / "1148_2.npy"
    a, b = (predict.visibility(p, depth, model, patches=40) for p in (wide, narrow))
    np.testing.assert_array_equal(a.patches["p_visible"], b.patches["p_visible"])
    assert a.visibility_m == b.visibility_m


def test_pixel_cap_is_settable(synth_raw, job, tmp_path, capsys):
    image = _image(synth_raw, "1148_1")
    code, err, _ = run(capsys, str(job), str(image), "--raw", str(synth_raw), "--out", str(tmp_path / "p.csv"),
                       "--max-pixels", "1000", *ARGS)
    assert code == 2 and len(err) == 1 and "96 x 144" not in err[0] and "144 x 96 = 13,824 pixels" in err[0]
    with pytest.raises(PredictError, match="more pixels than the cap|more than the cap"):
        inputs.decode_image(png_header(100_000, 100_000), "bomb.png")


def test_resume_keys_on_path_and_content(synth_raw, job, tmp_path, capsys):
    a, b = tmp_path / "a", tmp_path / "b"
    a.mkdir(), b.mkdir()
    first, second = _image(synth_raw, "1148_1", 0), _image(synth_raw, "1148_1", 1)
    shutil.copy(first, a / first.name)
    shutil.copy(second, b / first.name)  # another image under the same name
    out = tmp_path / "p.csv"
    common = ["--raw", str(synth_raw), "--out", str(out), *ARGS]
    maps = tmp_path / "maps"
    code, err, stdout = run(capsys, str(job), str(a), str(a / first.name), str(b / first.name), *common,
                            "--map", str(maps))
    assert code == 0, err
    assert len(list(maps.glob(f"{first.stem}-*.png"))) == 2  # neither map replaces the other
    rows = pd.read_csv(out)
    assert len(rows) == 2 and list(rows["image"]) == [first.stem] * 2  # the same file twice: one row
    assert list(rows["path"]) == [str((a / first.name).resolve()), str((b / first.name).resolve())]
    assert rows["sha256"].nunique() == 2
    code, _, stdout = run(capsys, str(job), str(a), str(b), *common)
    assert code == 0 and "0 new image(s), 2 already there" in stdout
    shutil.copy(second, a / first.name)  # new content under an old path: predicted again
    code, _, stdout = run(capsys, str(job), str(a), str(b), *common)
    assert code == 0 and "1 new image(s), 1 already there" in stdout and len(pd.read_csv(out)) == 3


def test_raw_output_carries_the_truth_and_the_error(synth_raw, job, tmp_path, capsys):
    out = tmp_path / "p.csv"
    images = [str(_image(synth_raw, "1148_3", k)) for k in range(2)]
    code, _, stdout = run(capsys, str(job), *images, "--raw", str(synth_raw), "--out", str(out), *ARGS)
    truth = pd.read_csv(synth_raw / "visibility.csv").set_index("image")["visibility_m"]
    rows = pd.read_csv(out)
    assert code == 0 and "median |log10 error|" in stdout
    np.testing.assert_allclose(rows["true_visibility_m"], truth[rows["image"]].to_numpy(), rtol=1e-9)
    np.testing.assert_allclose(rows["log10_error"], np.log10(rows["visibility_m"] / rows["true_visibility_m"]),
                               rtol=1e-6)
    code, _, _ = run(capsys, str(job), images[0], "--depth", str(synth_raw / "depth_maps" / "1148_3.npy"),
                     "--out", str(tmp_path / "q.csv"), *ARGS)
    assert code == 0 and pd.read_csv(tmp_path / "q.csv")["true_visibility_m"].isna().all()


def test_several_images_at_once_give_the_rows_of_one_at_a_time(synth_raw, job):
    items, _ = predict.list_items([], None, str(synth_raw))
    items = items[:5]
    model = predict.load_model(job, device="cpu")
    together, problems = predict.predict_items(items, model, patches=30, batch_size=47)  # batches span images
    assert not problems and len(together) == 5
    alone = [predict.predict_items([item], model, patches=30, batch_size=47)[0][0] for item in items]
    assert_same_rows(pd.DataFrame(together), pd.DataFrame(alone))


def test_centres_are_drawn_once_per_view(synth_raw, job, monkeypatch):
    """A view's images share its centres (same depth map, same seed): drawn once, not per image;
    that they are each image's own draw is test_several_images_at_once_give_the_rows_of_one_at_a_time."""
    items, _ = predict.list_items([], None, str(synth_raw))
    items = items[:6]  # 4 images of one view, 2 of the next
    assert len({i.depth for i in items}) == 2
    model = predict.load_model(job, device="cpu")
    for name, kw in (("sampled_centres", {"patches": 30}), ("grid_centres", {"stride": 9})):
        calls, draw = [], getattr(predict, name)
        monkeypatch.setattr(predict, name, lambda *a, draw=draw, calls=calls: calls.append(1) or draw(*a))
        rows, problems = predict.predict_items(items, model, **kw)
        assert not problems and len(rows) == 6 and len(calls) == 2, name


def test_a_producer_crash_is_raised_not_hung(synth_raw, job, monkeypatch):
    items, _ = predict.list_items([], None, str(synth_raw))

    def broken(*args, **kwargs):
        raise RuntimeError("boom")

    monkeypatch.setattr(predict, "_prepare", broken)
    with pytest.raises(RuntimeError, match="boom"):
        predict.predict_items(items[:3], predict.load_model(job, device="cpu"))


def test_threads_follow_the_allocation(monkeypatch):
    monkeypatch.delenv("CAMVIS_NUM_THREADS", raising=False)
    monkeypatch.setenv("SLURM_CPUS_PER_TASK", "3")
    assert predict.cpu_threads() == 3 and predict.cpu_threads(5) == 5
    monkeypatch.delenv("SLURM_CPUS_PER_TASK")
    assert predict.cpu_threads() == len(os.sched_getaffinity(0))


def test_done_keys_of_an_old_output_without_path_columns_is_one_line(tmp_path):
    old = tmp_path / "old.csv"
    old.write_text("image,view,timestamp,visibility_m,flag,fit_quality,n_patches,model\nx,v,,1,ok,1,3,m\n")
    with pytest.raises(PredictError, match="not a camvis-predict output of this version .*path"):
        pl._done_keys(old, tmp_path / "none.parts", "csv", "m")
