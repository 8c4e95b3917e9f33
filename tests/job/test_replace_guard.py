"""--force replaces only what the same command made (camvis.bookkeeping.replace_guard), and one writer per job
folder: on real job folders, stores, raw folders, bundles and images, through the real CLIs. Every
refusal is one line, exit 2, and deletes or writes nothing (the whole tree is checksummed)."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from camvis import locks
from camvis.cli.data import main as data_main
from camvis.cli.evaluate import main as eval_main
from camvis.cli.export import main as export_main
from camvis.cli.predict import main as predict_main
from camvis.errors import CamvisError
from camvis.cluster.predict_launch import MAPS_MARKER, PREDICTIONS
from camvis.data.store_build import STORE
from camvis.job.export import BUNDLE
from camvis.bookkeeping.replace_guard import check_replaceable
from test_predict import _image, make_job  # tests/ is on sys.path (pytest prepend import mode)

ROOT = Path(__file__).resolve().parents[2]


def tree(root: Path) -> dict[str, str]:
    """Every file and folder under root with its content digest: what a refusal must leave as it was."""
    found = {}
    for folder, dirs, files in os.walk(root):
        for name in dirs:
            found[os.path.relpath(os.path.join(folder, name), root)] = "dir"
        for name in files:
            path = os.path.join(folder, name)
            with open(path, "rb") as f:
                found[os.path.relpath(path, root)] = hashlib.sha256(f.read()).hexdigest()
    return found


def refused(capsys: pytest.CaptureFixture, code: int, *words: str) -> str:
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and err.startswith("error: ") and "Traceback" not in err, err
    for word in words:
        assert word in err, err
    return err


@pytest.fixture
def project(synth_store, synth_raw, tmp_path: Path) -> Path:
    """What `make demo` leaves, small: data/raw (synth), a store, outputs/<exp>/<job> with its lock, a bundle."""
    shutil.copytree(synth_raw, tmp_path / "data/raw/demo")
    shutil.copytree(synth_store.path, tmp_path / "data/processed/demo.zarr")
    job = make_job(synth_store, tmp_path / "outputs/demo/cat_fold2")
    (job / "scores.json").write_text(json.dumps({"view": "1148_2", "metrics": {"acc": 0.5}}))
    (tmp_path / "outputs/demo/.cat_fold2.lock").write_text("")
    return tmp_path


@pytest.mark.parametrize("target, words", [
    ("outputs/demo/cat_fold2", ["is an input of this command"]),        # the job folder itself
    ("outputs/demo", ["contains", "an input of this command"]),          # its experiment
    ("outputs", ["contains", "an input of this command"]),
    ("data/processed/demo.zarr", ["is a store", "replaces only a camvis model bundle"]),
    ("data/raw/demo", ["is a raw folder"]),
    (".", ["contains", "an input"]),
])
def test_export_force_refuses_anything_but_a_bundle(project: Path, capsys, target: str, words: list[str]) -> None:
    before = tree(project)
    code = export_main([str(project / "outputs/demo/cat_fold2"), str(project / target), "--force", "--no-onnx"])
    refused(capsys, code, *words)
    assert tree(project) == before


def test_export_replaces_its_own_bundle_but_not_one_holding_a_job(project: Path, capsys) -> None:
    job, bundle = project / "outputs/demo/cat_fold2", project / "models/demo_cat"
    assert export_main([str(job), str(bundle), "--no-onnx"]) == 0
    first = (bundle / "model.json").read_bytes()
    assert export_main([str(job), str(bundle), "--force", "--no-onnx"]) == 0  # its own marker: replaced
    assert (bundle / "model.json").read_bytes() == first and not list(bundle.parent.glob(".demo_cat*"))
    shutil.copytree(job, bundle / "kept_job")  # someone's job folder inside the bundle
    before = tree(project)
    refused(capsys, export_main([str(job), str(bundle), "--force", "--no-onnx"]), "contains a job folder")
    assert tree(project) == before


def test_synth_force_refuses_a_raw_folder_synth_did_not_make(project: Path, capsys) -> None:
    raw = project / "data/raw/demo"
    (raw / "synth.json").unlink()  # real images: no synth.json
    before = tree(project)
    code = data_main(["synth", str(raw), "--views", "1", "--images-per-view", "1", "--size", "32x48", "--force"])
    refused(capsys, code, "is a raw folder", "replaces only a data set made by camvis-data synth")
    assert tree(project) == before


@pytest.mark.parametrize("target, what", [("outputs/demo/cat_fold2", "a job folder"),
                                          ("outputs/demo", "an experiment folder"),
                                          ("data/processed/demo.zarr", "a store")])
def test_synth_never_writes_into_a_job_experiment_or_store(project: Path, capsys, target: str, what: str) -> None:
    before = tree(project)
    for force in ([], ["--force"]):
        code = data_main(["synth", str(project / target), "--views", "1", "--images-per-view", "1",
                          "--size", "32x48", *force])
        refused(capsys, code, f"is {what}; camvis-data synth writes only into")
    assert tree(project) == before


def test_synth_force_replaces_its_own_data_set(tmp_path: Path) -> None:
    raw = tmp_path / "raw"
    args = ["synth", str(raw), "--views", "1", "--images-per-view", "1", "--size", "32x48"]
    assert data_main(args) == 0
    assert data_main([*args, "--seed", "3", "--force"]) == 0
    assert json.loads((raw / "synth.json").read_text())["seed"] == 3


def test_build_force_uses_the_same_rule(project: Path, capsys) -> None:
    raw = str(project / "data/raw/demo")
    before = tree(project)
    for target, words in (("data/raw/demo", ["is an input"]), ("data", ["contains", "an input"]),
                          ("outputs/demo/cat_fold2", ["is a job folder"]), ("outputs/demo", ["is an experiment folder"])):
        code = data_main(["build", raw, str(project / target), "--factors", "2", "4", "8", "--patch-size", "16",
                          "--patches-per-image", "8", "--force", "--workers", "1"])
        refused(capsys, code, *words)
    assert tree(project) == before


def test_predict_force_never_replaces_its_input_image(project: Path, capsys) -> None:
    image = _image(project / "data/raw/demo", "1148_2")
    depth = project / "data/raw/demo/depth_maps/1148_2.npy"
    job = project / "outputs/demo/cat_fold2"
    before = tree(project)
    args = [str(job), str(image), "--depth", str(depth), "--patches", "20", "--device", "cpu"]
    refused(capsys, predict_main([*args, "--out", str(image), "--force"]), "is an input of this command")
    refused(capsys, predict_main([*args, "--out", str(depth), "--force"]), "is an input")
    refused(capsys, predict_main([*args, "--out", str(job / "config.yaml"), "--force"]),
            "not a camvis-predict output")
    refused(capsys, predict_main([*args, "--out", str(job), "--force"]), "is an input")  # the model itself
    refused(capsys, predict_main([*args, "--map", str(image.parent)]), "contains", "an input")
    refused(capsys, predict_main([*args, "--map", str(project / "outputs")]), "contains", "an input")
    refused(capsys, predict_main([*args, "--map", str(project / "data/processed/demo.zarr")]), "is a store")
    assert tree(project) == before
    other = project / "notes.csv"
    other.write_text("a,b\n1,2\n")
    refused(capsys, predict_main([*args, "--out", str(other), "--force"]), "not a camvis-predict output")
    assert other.read_text() == "a,b\n1,2\n"


def test_predict_force_replaces_its_own_output_and_maps(project: Path, capsys) -> None:
    image = _image(project / "data/raw/demo", "1148_2")
    out, maps = project / "p.csv", project / "maps"
    args = [str(project / "outputs/demo/cat_fold2"), str(image), "--depth",
            str(project / "data/raw/demo/depth_maps/1148_2.npy"), "--patches", "20", "--device", "cpu",
            "--out", str(out), "--map", str(maps)]
    assert predict_main(args) == 0
    assert (maps / MAPS_MARKER).exists() and (maps / f"{image.stem}.png").exists()
    capsys.readouterr()
    assert predict_main([*args, "--force"]) == 0
    assert "1 new image(s), 0 already there" in capsys.readouterr().out
    foreign = project / "pictures"
    foreign.mkdir()
    (foreign / f"{image.stem}.png").write_bytes(b"holiday")
    refused(capsys, predict_main([*args, "--map", str(foreign)]), "not a camvis-predict map folder")
    assert (foreign / f"{image.stem}.png").read_bytes() == b"holiday"


def test_rule_unit_cases(tmp_path: Path) -> None:
    check_replaceable(tmp_path / "missing", kind=BUNDLE)
    (tmp_path / "empty").mkdir()
    check_replaceable(tmp_path / "empty", kind=STORE)
    with pytest.raises(CamvisError, match="is a file, not a camvis store"):
        (tmp_path / "f").write_text("x")
        check_replaceable(tmp_path / "f", kind=STORE)
    os.mkfifo(tmp_path / "fifo")  # never opened (it would block), never replaced
    with pytest.raises(CamvisError, match="is not a regular file, not a camvis-predict output"):
        check_replaceable(tmp_path / "fifo", kind=PREDICTIONS)
    link = tmp_path / "link"
    link.symlink_to(tmp_path / "empty")
    with pytest.raises(CamvisError, match="is an input"):  # through a symlink too
        check_replaceable(link, kind=STORE, inputs=[tmp_path / "empty"])


# --------------------------------------------------------------------------- one writer per job folder


def test_eval_refuses_a_job_folder_another_process_writes(synth_store, tmp_path: Path, capsys) -> None:
    job = make_job(synth_store, tmp_path / "outputs/e/j")
    (job / "scores.json").write_text(json.dumps({"view": "1148_1", "metrics": {"acc": 0.5}}))
    code = ("import sys, time; from camvis import locks; locks.acquire(sys.argv[1], 'running job j'); "
            "print('held', flush=True); time.sleep(120)")
    holder = subprocess.Popen([sys.executable, "-c", code, str(locks.job_lock_path(job))], stdout=subprocess.PIPE,
                              text=True, env={**os.environ, "PYTHONPATH": str(ROOT)})
    try:
        assert holder.stdout.readline().strip() == "held"
        before = tree(tmp_path)
        args = [str(job / "config.yaml"), "eval.bootstrap=5", "eval.figures=false", "--job-dir", str(job)]
        refused(capsys, eval_main(args), "job j is already running", f"pid {holder.pid}")
        assert tree(tmp_path) == before  # no scores.json, nothing moved to previous/
    finally:
        holder.kill()
        holder.wait()
    assert eval_main(args) == 0  # the holder is gone (SIGKILL leaves no stale lock): it evaluates
    assert json.loads((job / "scores.json").read_text())["n_val"] > 0
    assert "evaluating job j" in locks.holder(locks.job_lock_path(job))
