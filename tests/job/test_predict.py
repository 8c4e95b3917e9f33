"""camvis-predict and camvis.job.predict.visibility on real synthetic images, a real store and job folder."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
import yaml
from PIL import Image

from camvis.job import evaluate
from camvis.job import predict
from camvis.job import visibility
from camvis.job.batches import BatchSource, fold_split
from camvis.cli.predict import main as predict_main
from camvis.config import load_job_config, to_dict
from camvis.errors import PredictError
from camvis.model import build_model

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
ROOT = Path(__file__).resolve().parents[2]


def make_job(store, job: Path, *extra: str, seed: int = 0) -> Path:
    """A job folder as camvis-train leaves it: config.yaml and best.pt of a (random) model."""
    cfg = load_job_config(None, [f"data.store={store.path}", "data.factors=[2,4,8]", "model.size_hidden=8",
                                 "train.device=cpu", "experiment=e", "name=j", "group=g", *extra])
    torch.manual_seed(seed)
    model = build_model(cfg, store.patch_size)
    job.mkdir(parents=True, exist_ok=True)
    torch.save({"model": model.state_dict(), "config": to_dict(cfg), "epoch": 0}, job / "best.pt")
    (job / "config.yaml").write_text(yaml.safe_dump(to_dict(cfg)))
    return job


@pytest.fixture(scope="module")
def job(synth_store, tmp_path_factory) -> Path:
    return make_job(synth_store, tmp_path_factory.mktemp("predict") / "job")


def _image(raw: Path, view: str, k: int = 0) -> Path:
    return sorted(p for p in (raw / "images").glob(f"{view}_*.png") if not p.name.endswith("visible.png"))[k]


def eval_and_predict(store, raw: Path, job: Path, fold: int, **kw):
    """camvis-eval's probabilities for every patch of the fold's first held-out image, and
    camvis-predict's result for the same centres on the raw image: (expected, result, idx, name, view)."""
    cfg = load_job_config(job / "config.yaml")
    net = evaluate.load_model(cfg, job / "best.pt", store.patch_size, torch.device("cpu"))
    _, val_idx, view = fold_split(store, fold)
    image = int(store.table["image"][val_idx[0]])
    idx = np.flatnonzero(store.table["image"] == image)
    source = BatchSource(store, cfg.data.factors, fold=cfg.data.fold)  # as camvis-eval: the job's fold's statistics
    expected = evaluate.patch_probabilities(net, source, idx, 64, "cpu", progress=False)
    name = store.images[image]
    centres = (store.table["center_h"][idx], store.table["center_w"][idx])
    result = predict.visibility(raw / "images" / f"{name}.png", raw / "depth_maps" / f"{view}.npy",
                                predict.load_model(job, device="cpu"), centres=centres, **kw)
    return expected, result, idx, name, view


def test_same_probabilities_as_camvis_eval_for_the_same_centres(synth_store, synth_raw, job):
    expected, result, idx, name, view = eval_and_predict(synth_store, synth_raw, job, 2, batch_size=7)
    np.testing.assert_allclose(result.patches["p_visible"], expected["score"], rtol=0, atol=1e-6)
    np.testing.assert_allclose(result.patches["depth_m"], synth_store.table["depth"][idx])
    assert result.n_patches == idx.size and result.view == view and result.image == name


def test_a_model_of_a_camvis2_store_predicts_with_camvis2_levels(synth_raw, tmp_path):
    """A model trained on a `--preprocessing camvis2` store sees camvis2's levels and crop centres at
    prediction too: the same probabilities as camvis-eval on its store."""
    pytest.importorskip("cv2")
    from camvis.data import store_build

    store = store_build.build(synth_raw, tmp_path / "c2.zarr", factors=(2, 4, 8), patch_size=16,
                              patches_per_image=32, seed=0, progress=False, figure=False, preprocessing="camvis2")
    job = make_job(store, tmp_path / "job")
    model = predict.load_model(job, device="cpu")
    assert model.preprocessing == "camvis2" and model.info["preprocessing"] == "camvis2"
    expected, result, *_ = eval_and_predict(store, synth_raw, job, 1)
    np.testing.assert_allclose(result.patches["p_visible"], expected["score"], rtol=0, atol=1e-6)


def test_visibility_api_samples_seeded_terrain_centres(synth_raw, job):
    image, depth_path = _image(synth_raw, "1148_1"), synth_raw / "depth_maps" / "1148_1.npy"
    model = predict.load_model(job, device="cpu")
    first = predict.visibility(image, depth_path, model, patches=50, seed=3)
    again = predict.visibility(np.asarray(Image.open(image).convert("RGB")), np.load(depth_path), model,
                               patches=50, seed=3, name=image.stem)
    pd.testing.assert_frame_equal(first.patches, again.patches)
    depth = np.load(depth_path)[:, :, 0]
    h, w, half = first.patches["center_h"], first.patches["center_w"], model.patch_size // 2
    assert first.n_patches == 50 and np.isfinite(depth[h, w]).all()
    assert h.min() >= half and w.min() >= half and h.max() < depth.shape[0] - half and w.max() < depth.shape[1] - half
    assert first.timestamp == f"{image.stem[7:17]}T{image.stem[18:20]}:{image.stem[20:22]}"
    assert first.flag in ("ok", "poor_fit", "beyond_max", "below_min", "inverted")
    assert first.visibility_m == pytest.approx(first.fit.visibility_m)
    grid = predict.visibility(image, depth_path, model, stride=10)
    assert set(np.unique(grid.patches["center_h"] % 10)) == {0} and grid.n_patches > 50


def test_fit_quality_is_one_for_a_clean_step_and_low_for_noise():
    depth = np.logspace(1, 5, 200)
    step = (depth < 1000).astype(float)
    clean = visibility.estimate(depth, step)
    assert visibility.fit_quality(clean, depth, step) > 0.95
    noise = np.random.default_rng(0).uniform(0, 1, depth.size)
    assert visibility.fit_quality(visibility.estimate(depth, noise), depth, noise) < 0.1
    flat = np.full(depth.size, 0.7)
    assert np.isnan(visibility.fit_quality(visibility.estimate(depth, flat), depth, flat))
    assert visibility.flag_quality("ok", 0.2) == "poor_fit" and visibility.flag_quality("ok", 0.9) == "ok"
    assert visibility.flag_quality("beyond_max", 0.2) == "beyond_max"


def test_cli_writes_rows_and_maps_and_resumes(synth_raw, job, tmp_path, capsys):
    out, maps = tmp_path / "vis.csv", tmp_path / "maps"
    images = [str(_image(synth_raw, "1148_2", k)) for k in range(2)]
    args = [str(job), *images, "--raw", str(synth_raw), "--out", str(out), "--patches", "40", "--device", "cpu"]
    mask = Path(images[0]).with_name(Path(images[0]).stem + "_0002_visible.png")  # a shell glob's mask: skipped
    assert predict_main([*args, str(mask), "--map", str(maps)]) == 0
    rows = pd.read_csv(out, dtype={"timestamp": str})
    assert list(rows.columns) == list(predict.ROW_COLUMNS)
    assert list(rows["image"]) == [Path(p).stem for p in images] and set(rows["view"]) == {"1148_2"}
    assert (rows["n_patches"] == 40).all() and rows["model"].str.startswith("e/j@").all()
    for name in rows["image"]:
        assert (maps / f"{name}.png").read_bytes()[:8] == PNG_MAGIC
    assert (rows["visibility_low_m"] <= rows["visibility_high_m"]).all()  # each image's interval
    printed = capsys.readouterr().out
    assert "bias (median signed log10 error)" in printed and "intervals cover" in printed
    assert predict_main(args) == 0  # nothing left to do
    assert "0 new image(s), 2 already there" in capsys.readouterr().out
    assert predict_main([*args, "--out", str(tmp_path / "vis.jsonl")]) == 0
    lines = pd.read_json(tmp_path / "vis.jsonl", lines=True)
    np.testing.assert_allclose(lines["visibility_m"], rows["visibility_m"], rtol=1e-6)
    assert not list(tmp_path.glob("*.parts"))


def test_every_bad_input_is_one_line_and_the_rest_is_predicted(synth_raw, job, tmp_path, capsys):
    depth = np.load(synth_raw / "depth_maps" / "1148_1.npy")
    good = _image(synth_raw, "1148_1")
    rgb = np.asarray(Image.open(good).convert("RGB"))
    bad = tmp_path / "bad"
    bad.mkdir()
    Image.fromarray(rgb[:-8]).save(bad / "1148_1_2020-01-01_0000.png")           # size differs
    (bad / "1148_1_2020-01-01_0100.png").write_bytes(b"not an image")             # unreadable
    Image.fromarray(rgb).save(bad / "1148_3_2020-01-01_0200.png")                 # wrong-shape depth map
    Image.fromarray(rgb[:12, :12]).save(bad / "1148_4_2020-01-01_0300.png")       # too small for the model
    raw = tmp_path / "raw"
    (raw / "depth_maps").mkdir(parents=True)
    np.save(raw / "depth_maps" / "1148_1.npy", depth)
    np.save(raw / "depth_maps" / "1148_3.npy", depth[:, :, 0].reshape(-1))
    np.save(raw / "depth_maps" / "1148_4.npy", depth[:12, :12])
    out = tmp_path / "vis.csv"
    code = predict_main([str(job), str(good), str(bad), str(bad / "missing.png"), "--raw", str(raw),
                         "--out", str(out), "--patches", "20", "--device", "cpu"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and all(line.startswith("error: ") for line in err) and len(err) == 5, err
    text = "\n".join(err)
    assert "1148_1_2020-01-01_0000.png: image is 88 x 144 but" in text and "1148_1.npy is 96 x 144" in text
    assert "1148_1_2020-01-01_0100.png: cannot read the image" in text
    assert "1148_3.npy: expected a float array (H, W) or (H, W, 4)" in text
    assert "1148_4_2020-01-01_0300.png: the model's patch size 16 leaves no patch centre in a 12 x 12" in text
    assert "missing.png: no such image file or folder" in text
    assert list(pd.read_csv(out)["image"]) == [good.stem]


def test_model_errors_are_one_line(synth_raw, job, tmp_path, capsys):
    image = str(_image(synth_raw, "1148_1"))
    assert predict_main([str(tmp_path), image, "--raw", str(synth_raw)]) == 2
    assert "not a model: expected a job folder (best.pt and config.yaml)" in capsys.readouterr().err
    assert predict_main([str(job), image, "--raw", str(synth_raw), "--runtime", "onnx"]) == 2
    assert "--runtime onnx needs an exported bundle" in capsys.readouterr().err
    assert predict_main([str(job), image]) == 2
    assert "exactly one of --depth DEPTH_MAP" in capsys.readouterr().err
    broken = make_job_copy(job, tmp_path / "broken")
    (broken / "best.pt").write_bytes(b"junk")
    assert predict_main([str(broken), image, "--raw", str(synth_raw)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "best.pt: not a readable torch checkpoint" in err
    with pytest.raises(PredictError, match="is 96 x 144 but the depth map is 95 x 144"):
        predict.visibility(image, np.ones((95, 144), np.float32), predict.load_model(job, device="cpu"))


def make_job_copy(job: Path, to: Path) -> Path:
    to.mkdir()
    for name in ("best.pt", "config.yaml"):
        (to / name).write_bytes((job / name).read_bytes())
    return to


def _cli(*args: str, **kw) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.Popen([sys.executable, "-m", "camvis.cli.predict", *args], env=env, cwd=kw.get("cwd"),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True, text=True)


@pytest.mark.slow
def test_local_run_killed_halfway_resumes_to_the_same_csv(synth_raw, job, tmp_path):
    common = [str(job), "--raw", str(synth_raw), "--patches", "30", "--device", "cpu", "--local",
              "--chunk-size", "3", "--parallel", "1"]
    whole = _cli(*common, "--out", str(tmp_path / "whole.csv"))
    assert whole.wait(300) == 0, whole.stderr.read()
    out = tmp_path / "killed.csv"
    parts = tmp_path / "killed.csv.parts"
    run = _cli(*common, "--out", str(out))
    deadline = time.time() + 300
    while not list(parts.glob("chunk-*.csv")) and run.poll() is None and time.time() < deadline:
        time.sleep(0.2)
    assert run.poll() is None, "the run ended before it could be killed"
    os.killpg(run.pid, signal.SIGKILL)  # the CLI and its running chunk job
    run.wait()
    done = len(list(parts.glob("chunk-*.csv")))
    assert not out.exists() and 1 <= done < 4
    rerun = _cli(*common, "--out", str(out))
    assert rerun.wait(300) == 0, rerun.stderr.read()
    assert f"{3 * done} already there" in rerun.stdout.read()
    assert out.read_text() == (tmp_path / "whole.csv").read_text()
    assert len(pd.read_csv(out)) == 12 and not parts.exists()


@pytest.mark.slurm
@pytest.mark.slow
def test_slurm_array_gives_the_rows_of_a_run_here(synth_raw, job, tmp_path):
    if not (os.environ.get("CI") == "true" or os.environ.get("CAMVIS_SLURM") == "1"):
        pytest.skip("SLURM integration test: run `make test` or set CAMVIS_SLURM=1 with the local cluster up")
    common = [str(job), "--raw", str(synth_raw), "--patches", "30", "--device", "cpu"]
    here = _cli(*common, "--out", str(tmp_path / "here.csv"))
    assert here.wait(300) == 0, here.stderr.read()
    array = _cli(*common, "--out", str(tmp_path / "slurm.csv"), "--slurm", "--chunk-size", "5", "--parallel", "2",
                 "--time", "10", cwd=tmp_path)
    assert array.wait(600) == 0, array.stderr.read()
    assert_same_rows(pd.read_csv(tmp_path / "slurm.csv"), pd.read_csv(tmp_path / "here.csv"))


def assert_same_rows(a: pd.DataFrame, b: pd.DataFrame) -> None:
    """The same images, in order, with the same values. Floats within a tolerance: patches of several
    images share batches, and where a patch sits in a batch changes p(visible) in its 7th digit (the
    BLAS kernel of the rows at a batch's end differs); a near-flat fit's quality amplifies that."""
    exact = [c for c in a.columns if c not in ("visibility_m", "fit_quality", "log10_error")]
    pd.testing.assert_frame_equal(a[exact], b[exact])
    np.testing.assert_allclose(a["visibility_m"], b["visibility_m"], rtol=1e-4)
    np.testing.assert_allclose(a["log10_error"], b["log10_error"], atol=1e-4)
    np.testing.assert_allclose(a["fit_quality"], b["fit_quality"], atol=1e-3)


def test_one_sided_flags_mean_all_patches_on_one_side():
    depth = np.array([20.0, 200.0, 2000.0, 5000.0])
    # patches on both sides of 0.5, yet the fitted crossing lies past the farthest patch
    both = visibility.estimate(depth, np.array([0.95, 0.9, 0.9, 0.45]))
    assert both.flag == "poor_fit" and depth.min() <= both.visibility_m <= depth.max()
    assert visibility.estimate(depth, np.array([0.9, 0.8, 0.7, 0.6])).flag == "beyond_max"
    assert visibility.estimate(depth, np.array([0.4, 0.3, 0.2, 0.1])).flag == "below_min"
