"""camvis-export: a bundle that predicts from its folder alone, with an ONNX graph equal to torch."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from camvis.job import export
from camvis.job import predict
from camvis.job.batches import BatchSource
from camvis.cli.export import main as export_main
from camvis.cli.predict import main as predict_main
from camvis.errors import PredictError
from camvis.data.store import open_store
from test_predict import _image, make_job  # tests/ is on sys.path (pytest prepend import mode)

pytest.importorskip("onnxruntime", reason="the optional extra camvis[onnx] (make test installs it)")


@pytest.fixture(scope="module")
def exported(synth_store, synth_raw, tmp_path_factory):
    """A job on a private copy of the store, its bundle, and its predictions before both go away."""
    root = tmp_path_factory.mktemp("export")
    store = open_store(shutil.copytree(synth_store.path, root / "store.zarr"))
    job = make_job(store, root / "job", seed=1)
    (job / "scores.json").write_text(json.dumps({"view": "1148_2", "metrics": {"acc": 0.5}, "n_val": 3}))
    info = export.export(job, root / "bundle")
    image, depth = _image(synth_raw, "1148_2"), synth_raw / "depth_maps" / "1148_2.npy"
    before = predict.visibility(image, depth, predict.load_model(job, device="cpu"), patches=80)
    return root, info, before, (image, depth)


def test_bundle_files_and_model_json(exported, synth_store):
    root, info, _, _ = exported
    bundle = root / "bundle"
    assert sorted(p.name for p in bundle.iterdir()) == ["model.json", "model.onnx", "weights.pt"]
    written = json.loads((bundle / "model.json").read_text())
    assert written == json.loads(json.dumps(info))
    assert written["factors"] == [2, 4, 8] and written["patch_size"] == synth_store.patch_size
    assert written["architecture"]["size_hidden"] == 8 and written["architecture_name"] == "type_2"
    norm = synth_store.normalization(written["config"]["data"]["fold"], (2, 4, 8))  # the job's fold's
    np.testing.assert_array_equal(np.float32(written["norm_mean"]), norm.mean)
    np.testing.assert_array_equal(np.float32(written["norm_std"]), norm.std)
    assert written["normalization"] == "per-fold (training views)"
    assert not np.array_equal(norm.mean, synth_store.norm_mean)  # not the statistics over every view
    assert written["held_out"]["metrics"] == {"acc": 0.5} and len(written["config_hash"]) == 12
    assert written["onnx"]["opset"] == export.OPSET and written["onnx"]["check"]["max_abs_diff"] <= 1e-4
    state = torch.load(bundle / "weights.pt", weights_only=True)
    assert all(isinstance(v, torch.Tensor) for v in state.values())


def test_bundle_predicts_with_nothing_but_its_folder(exported, tmp_path):
    root, _, before, (image, depth) = exported
    alone = shutil.copytree(root / "bundle", tmp_path / "moved")
    shutil.rmtree(root / "job")
    shutil.rmtree(root / "store.zarr")  # the statistics travel in model.json
    after = predict.visibility(image, depth, predict.load_model(alone, runtime="torch"), patches=80)
    np.testing.assert_array_equal(after.patches["p_visible"], before.patches["p_visible"])
    assert after.visibility_m == before.visibility_m and after.model == before.model
    auto = predict.load_model(alone)  # on the CPU: the verified graph through onnxruntime
    assert auto.runtime == "onnxruntime-cpu" and "verified ONNX graph" in auto.runtime_note
    through = predict.visibility(image, depth, auto, patches=80)
    np.testing.assert_allclose(through.patches["p_visible"], before.patches["p_visible"], rtol=0,
                               atol=export.ONNX_TOLERANCE)


def test_onnx_output_equals_torch(exported, synth_store):
    root, _, _, _ = exported
    torch_model = export.load_bundle(root / "bundle", device="cpu")
    onnx_model = export.load_bundle(root / "bundle", runtime="onnx")
    source = BatchSource(synth_store, (2, 4, 8))
    idx = np.arange(0, synth_store.n_patches, 3)
    p_torch = torch_model.run(source, idx, 50)
    p_onnx = onnx_model.run(source, idx, 50)
    diff = float(np.max(np.abs(p_onnx - p_torch)))
    print(f"max |p_onnx - p_torch| over {idx.size} store patches: {diff:.3g}")
    assert p_onnx.shape == p_torch.shape == (idx.size,) and diff < 1e-5


def test_cli_predicts_through_the_onnx_runtime(exported, tmp_path, capsys):
    root, _, _, (image, depth) = exported
    out = tmp_path / "onnx.csv"
    assert predict_main([str(root / "bundle"), str(image), "--depth", str(depth), "--runtime", "onnx",
                         "--out", str(out), "--patches", "80"]) == 0
    assert out.read_text().count("\n") == 2


def test_an_onnx_graph_off_torch_is_an_error_and_leaves_no_bundle(synth_store, tmp_path, monkeypatch):
    job = make_job(synth_store, tmp_path / "job")
    monkeypatch.setattr(export, "ONNX_TOLERANCE", -1.0)  # any difference, even 0, is now too much
    with pytest.raises(PredictError, match="differs from torch by .* the bundle is not written"):
        export.export(job, tmp_path / "bundle")
    assert not (tmp_path / "bundle").exists() and not list(tmp_path.glob(".bundle*"))


def test_cli_errors_are_one_line(synth_store, tmp_path, capsys):
    assert export_main([str(tmp_path), str(tmp_path / "b")]) == 2
    assert "not a model" in capsys.readouterr().err
    job = make_job(synth_store, tmp_path / "job")
    other = tmp_path / "data"
    other.mkdir()
    (other / "keep.txt").write_text("mine")
    assert export_main([str(job), str(other), "--no-onnx"]) == 2
    assert "is not a camvis model bundle; refusing to replace it" in capsys.readouterr().err
    assert (other / "keep.txt").exists()
    assert export_main([str(job), str(tmp_path / "b"), "--no-onnx"]) == 0
    assert json.loads((tmp_path / "b" / "model.json").read_text())["onnx"] is None
    assert predict_main([str(tmp_path / "b"), "x.png", "--depth", "d.npy", "--runtime", "onnx"]) == 2
    assert "has no ONNX graph" in capsys.readouterr().err


def test_int8_bundle_is_quantized_checked_and_labelled(synth_store, synth_raw, tmp_path, capsys):
    import onnx

    job = make_job(synth_store, tmp_path / "job", seed=1)
    assert export_main([str(job), str(tmp_path / "q"), "--quantize", "int8"]) == 0
    assert "ONNX opset 18 int8" in capsys.readouterr().out
    bundle = tmp_path / "q"
    assert sorted(p.name for p in bundle.iterdir()) == ["model.json", "model.onnx", "weights.pt"]  # no scratch left
    q = json.loads((bundle / "model.json").read_text())["onnx"]["quantization"]
    assert q["type"] == "int8" and q["format"] == "QDQ" and q["calibration"]["patches"] > 0
    assert q["check"]["patches"] > 0 and q["check"]["max_abs_diff"] <= export.INT8_TOLERANCE
    ops = {node.op_type for node in onnx.load(bundle / "model.onnx").graph.node}
    assert {"QuantizeLinear", "DequantizeLinear"} <= ops
    image, depth = _image(synth_raw, "1148_2"), synth_raw / "depth_maps" / "1148_2.npy"
    float32 = predict.visibility(image, depth, predict.load_model(job, device="cpu"), patches=80)
    model = predict.load_model(bundle)  # auto on the CPU: the int8 graph, and the rows say so
    assert model.runtime == "onnxruntime-cpu-int8"
    int8 = predict.visibility(image, depth, model, patches=80)
    diff = np.abs(int8.patches["p_visible"] - float32.patches["p_visible"]).max()
    assert 0 < diff <= export.INT8_TOLERANCE  # quantized (not the float32 graph), and close to it
    torch_run = predict.visibility(image, depth, predict.load_model(bundle, runtime="torch"), patches=80)
    np.testing.assert_array_equal(torch_run.patches["p_visible"], float32.patches["p_visible"])  # weights stay float32


def test_int8_errors_leave_no_bundle(synth_store, tmp_path, capsys, monkeypatch):
    job = make_job(synth_store, tmp_path / "job")
    assert export_main([str(job), str(tmp_path / "b"), "--quantize", "int8", "--no-onnx"]) == 2
    err = capsys.readouterr().err
    assert "--quantize int8 quantizes the ONNX graph: it cannot go with --no-onnx" in err and err.count("\n") == 1
    with pytest.raises(SystemExit):
        export_main([str(job), str(tmp_path / "b"), "--quantize", "int4"])
    monkeypatch.setattr(export, "INT8_TOLERANCE", -1.0)  # any difference is now too much
    with pytest.raises(PredictError, match="int8 graph differs from float32 by .* the bundle is not written"):
        export.export(job, tmp_path / "b", quantize="int8")
    assert not (tmp_path / "b").exists() and not list(tmp_path.glob(".b*"))
