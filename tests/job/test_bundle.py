"""Verified bundles: a swapped, edited or malformed bundle is refused with one line naming the file
or field, and nothing is predicted; --runtime auto picks onnxruntime for a bundle with a graph."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest

from camvis.cli.predict import main as predict_main
from camvis.job import bundle, export, predict
from test_predict import _image, make_job  # tests/ is on sys.path (pytest prepend import mode)

pytest.importorskip("onnxruntime", reason="the optional extra camvis[onnx] (make test installs it)")


@pytest.fixture(scope="module")
def bundles(synth_store, tmp_path_factory) -> Path:
    """Two bundles of two jobs (a, b) and one without a graph (plain)."""
    root = tmp_path_factory.mktemp("bundles")
    for name, seed in (("a", 0), ("b", 1)):
        export.export(make_job(synth_store, root / f"job_{name}", seed=seed), root / name)
    export.export(root / "job_a", root / "plain", onnx=False)
    return root


def edit(key_path: str, value):
    def change(folder: Path) -> None:
        info = json.loads((folder / "model.json").read_text())
        *parents, last = key_path.split(".")
        node = info
        for key in parents:
            node = node[key]
        node[last] = value
        (folder / "model.json").write_text(json.dumps(info))
    return change


def swap(name: str):
    def change(folder: Path) -> None:
        shutil.copy(folder.parent / "b" / name, folder / name)
    return change


def link_weights(folder: Path) -> None:
    (folder / "weights.pt").unlink()
    os.symlink(folder.parent / "b" / "weights.pt", folder / "weights.pt")


def write(text: str):
    def change(folder: Path) -> None:
        (folder / "model.json").write_text(text)
    return change


CASES = {
    "swapped weights": (swap("weights.pt"), "weights.pt: the bundle's weights does not match the SHA-256"),
    "swapped graph": (swap("model.onnx"), "model.onnx: the bundle's ONNX graph does not match the SHA-256"),
    "edited factors": (edit("factors", [2, 4, 16]), "edited after export"),
    "edited model id": (edit("model_id", "someone/else@000"), "edited after export"),
    "norm_mean abc": (edit("norm_mean", "abc"), "model.json: norm_mean must be 3 x 4 numbers"),
    "norm_std zero": (edit("norm_std", [[0, 1, 1, 1]] * 3), "model.json: norm_std must hold finite numbers > 0"),
    "factors 4": (edit("factors", 4), "model.json: factors must be 3 increasing integers"),
    "factors unsorted": (edit("factors", [4, 2, 8]), "model.json: factors must be 3 increasing integers"),
    "patch_size 0": (edit("patch_size", 0), "model.json: patch_size must be an integer in [4, 1024], got 0"),
    "patch_size 24": (edit("patch_size", 24), "model.json: patch_size must be a power of 2"),
    "hidden huge": (edit("architecture.size_hidden", 100000), "architecture.size_hidden must be an integer in"),
    "levels bool": (edit("architecture.use_mlp", "yes"), "architecture.use_mlp must be true or false"),
    "onnx string": (edit("onnx", "model.onnx"), "model.json: onnx must be an object with file and sha256"),
    "onnx absolute": (edit("onnx.file", "/etc/passwd"), "onnx.file must be a file name inside the bundle"),
    "weights outside": (edit("weights.file", "../job_b/best.pt"), "weights.file must be a file name inside"),
    "weights hash": (edit("weights.sha256", "0" * 63), "weights.sha256 must be 64 lowercase hex digits"),
    "weights link": (link_weights, "weights.pt: the bundle's weights must be a file inside the bundle, not a link"),
    "model id lines": (edit("model_id", "a\nb"), "model.json: model_id must be a one-line string"),
    "no digest": (edit("digest", None), "model.json: digest must be 64 lowercase hex digits"),
    "format 1": (edit("format_version", 1), "carries no checksums, so it cannot be verified; export it again"),
    "not json": (write("{not json"), "model.json: cannot read the bundle's description"),
    "a list": (write("[]"), "not a camvis model bundle"),
}


@pytest.mark.parametrize("case", CASES)
def test_a_tampered_or_malformed_bundle_is_refused_in_one_line(bundles, synth_raw, tmp_path, capsys, case):
    change, expected = CASES[case]
    folder = shutil.copytree(bundles / "a", bundles / f"case_{len(list(bundles.iterdir()))}", symlinks=True)
    change(folder)
    out = tmp_path / "p.csv"
    code = predict_main([str(folder), str(_image(synth_raw, "1148_1")), "--raw", str(synth_raw), "--out", str(out),
                         "--device", "cpu", "--patches", "10"])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and err.startswith("error: ") and expected in err, err
    assert "Traceback" not in err and not out.exists()


def test_the_bundle_records_what_it_verifies(bundles):
    info = json.loads((bundles / "a" / "model.json").read_text())
    assert info["format_version"] == 2 and info["digest"] == bundle.digest(info)
    for key, name in (("weights", "weights.pt"), ("onnx", "model.onnx")):
        assert info[key]["sha256"] == bundle.sha256_bytes((bundles / "a" / name).read_bytes())


def test_auto_picks_onnxruntime_for_a_graph_and_torch_without(bundles, synth_store, tmp_path):
    assert predict.load_model(bundles / "a", device="cpu").runtime == "onnxruntime-cpu"
    plain = predict.load_model(bundles / "plain", device="cpu")
    assert plain.runtime == "torch-cpu" and "no ONNX graph" in plain.runtime_note
    job = predict.load_model(bundles / "job_a", device="cpu")
    assert job.runtime == "torch-cpu" and "a job folder has no ONNX graph" in job.runtime_note
    assert predict.load_model(bundles / "a", device="cpu", runtime="torch").runtime == "torch-cpu"


def test_runtimes_agree_within_the_export_tolerance(bundles, synth_raw):
    image, depth = _image(synth_raw, "1148_2"), synth_raw / "depth_maps" / "1148_2.npy"
    got = {runtime: predict.visibility(image, depth, predict.load_model(bundles / "a", device="cpu", runtime=runtime),
                                       patches=60).patches["p_visible"].to_numpy()
           for runtime in ("torch", "onnx")}
    assert abs(got["torch"] - got["onnx"]).max() <= export.ONNX_TOLERANCE
