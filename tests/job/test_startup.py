"""A job's start: the store staged to node-local scratch (data.stage), its phases timed in scores.json."""

from __future__ import annotations

import json
import shutil
from collections import Counter
from pathlib import Path

import pytest
import torch

from camvis.config import load_job_config, sections_hash, to_dict, train_hash
from camvis.data import stage, store
from camvis.errors import ConfigError
from camvis.job.startup import open_job_inputs
from camvis.job.task import run_job

TINY = ["data.factors=[2,4,8]", "model.size_hidden=8", "train.batch_size=32", "train.epoch_patches=64",
        "train.max_epochs=1", "eval.bootstrap=20", "eval.figures=false", "experiment=e"]


def _cfg(store, *extra):
    return load_job_config(None, [f"data.store={store.path}", *TINY, *extra])


def test_a_job_trains_from_a_staged_store_with_the_same_train_hash(synth_store, tmp_path, monkeypatch):
    node = tmp_path / "node"
    node.mkdir()
    monkeypatch.setenv("CAMVIS_TEST_SCRATCH", str(node))
    plain, staged = _cfg(synth_store, "name=plain"), _cfg(synth_store, "name=staged",
                                                         "data.stage=$CAMVIS_TEST_SCRATCH")
    assert train_hash(staged) == train_hash(plain.__class__(**{**plain.__dict__, "name": "staged"}))
    first = run_job(staged, tmp_path / "out")
    again = run_job(_cfg(synth_store, "name=again", "data.stage=$CAMVIS_TEST_SCRATCH"), tmp_path / "out")
    reference = run_job(plain, tmp_path / "out")
    copy = node / stage.STAGE_DIR / stage.store_digest(Path(synth_store.path))
    assert first["startup"]["stage"] == "copied" and first["startup"]["staged_path"] == str(copy)
    assert again["startup"]["stage"] == "reused" and reference["startup"]["stage"] is None
    assert first["train_hash"] == reference["train_hash"] == train_hash(plain)
    for key in ("metrics", "confusion", "n_train", "n_val"):  # the same data, so the same training
        assert first[key] == reference[key], key
    for scores in (first, again, reference):
        assert {"open_s", "levels_s", "first_step_s", "to_first_step_s"} <= set(scores["startup"])
        assert scores["startup"]["to_first_step_s"] >= scores["startup"]["levels_s"]
    written = json.loads((tmp_path / "out" / "e" / "staged" / "scores.json").read_text())
    assert written["startup"] == first["startup"]


def test_data_stage_is_in_no_hash_and_old_configs_keep_theirs(synth_store):
    cfg = _cfg(synth_store, "data.stage=/tmp")
    recorded = to_dict(cfg)
    del recorded["data"]["stage"]  # a config written before the key existed
    assert train_hash(cfg) == train_hash(_cfg(synth_store)) == sections_hash(recorded, ("data", "model", "train"))
    assert train_hash(cfg) != train_hash(_cfg(synth_store, "data.fold=2"))


def test_a_staged_copy_altered_after_it_was_made_is_discarded_and_made_again(synth_store, tmp_path):
    """The manifest only vouches for names and sizes: a chunk altered in place (same size) fails its
    block CRC-32 as the pyramid is read; the job then discards that copy and stages afresh."""
    cfg = _cfg(synth_store, f"data.stage={tmp_path}")
    made = stage.stage_store(synth_store.path, tmp_path)
    chunk = made.path / "levels" / "4" / "images" / "c" / "0" / "0" / "0" / "0"
    data = bytearray(chunk.read_bytes())
    data[len(data) // 2] ^= 0xFF
    chunk.write_bytes(bytes(data))
    assert stage.copy_problem(made.path, made.path.name) is None  # it looks whole
    said: list[str] = []
    inputs, startup = open_job_inputs(cfg, torch.device("cpu"), log=said.append)
    assert startup["stage"] == "copied" and stage.copy_id(made.path) != made.copy_id
    assert any("is corrupt" in line and "levels/4/images" in line for line in said), said
    assert inputs.store.path == made.path and chunk.read_bytes() != bytes(data)


def test_an_unset_variable_fails_the_job_naming_the_key(synth_store, tmp_path, monkeypatch):
    monkeypatch.delenv("CAMVIS_NO_SUCH_VAR", raising=False)
    cfg = _cfg(synth_store, "name=j", "data.stage=$CAMVIS_NO_SUCH_VAR/x")
    with pytest.raises(ConfigError, match=r"data.stage = '\$CAMVIS_NO_SUCH_VAR/x': environment variable "
                                          r"CAMVIS_NO_SUCH_VAR is not set"):
        run_job(cfg, tmp_path)
    assert "data.stage" in (tmp_path / "e" / "j" / "error.txt").read_text()


def test_a_job_opens_its_store_once_even_when_it_compares_a_training(synth_store, tmp_path):
    """The second run finds a finished training: the statistics it compares come from the job's one open."""
    cfg = _cfg(synth_store, "name=j")
    before = Counter(store.opens)
    run_job(cfg, tmp_path / "out")
    run_job(cfg, tmp_path / "out")
    assert store.opens - before == {str(synth_store.path): 2}


def test_a_staged_job_reads_the_shared_store_only_to_stage_it(synth_store, tmp_path):
    """After staging, the shared store is gutted to the root metadata its copy is named by: a job that
    read anything else of it (its statistics, table or levels) would fail; both runs (the second one
    comparing its finished training's statistics) open the node's copy, once each."""
    shared = Path(shutil.copytree(synth_store.path, tmp_path / "shared.zarr"))
    node = tmp_path / "node"
    node.mkdir()
    made = stage.stage_store(shared, node)  # the node's copy, as the node's first job makes it
    for entry in shared.iterdir():
        if entry.name != "zarr.json":
            shutil.rmtree(entry) if entry.is_dir() else entry.unlink()
    cfg = load_job_config(None, [f"data.store={shared}", *TINY, "name=staged", f"data.stage={node}"])
    before = Counter(store.opens)
    first, again = run_job(cfg, tmp_path / "out"), run_job(cfg, tmp_path / "out")
    assert store.opens - before == {str(made.path): 2}
    assert first["startup"]["stage"] == again["startup"]["stage"] == "reused"
    assert {"open_s", "verify_s", "levels_s"} <= set(first["startup"])
    reference = run_job(_cfg(synth_store, "name=reference"), tmp_path / "out")
    for key in ("metrics", "confusion", "n_train", "n_val"):
        assert first[key] == again[key] == reference[key], key
