"""The training job: it learns, it resumes bit for bit after a kill, and bad inputs are clear errors."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
import torch
import yaml

from camvis.job import distributed
from camvis.config import load_job_config, to_dict
from camvis.errors import ConfigError, StoreError
from camvis.job.task import run_job
from camvis.job.train import train
from camvis.bookkeeping.jobfolder import CHECKPOINT, PROGRESS

TINY = [
    "data.factors=[2,4,8]",
    "model.size_hidden=8",
    "train.batch_size=32",
    "train.epoch_patches=128",
    "eval.bootstrap=50",
    "eval.figures=false",
]


def _cfg(store, *extra):
    return load_job_config(None, [f"data.store={store.path}", *TINY, *extra])


def _env():
    return distributed.setup("cpu")


def test_missing_store_is_a_clear_error(tmp_path):
    cfg = load_job_config(None, [f"data.store={tmp_path / 'nope.zarr'}", *TINY])
    with pytest.raises(StoreError, match="nope.zarr"):
        train(cfg, tmp_path / "job", _env())


def test_fold_the_store_lacks_is_a_clear_error(synth_store, tmp_path):
    with pytest.raises(ConfigError, match=r"data.fold.*7"):
        train(_cfg(synth_store, "data.fold=7"), tmp_path / "job", _env())


def test_factors_the_store_lacks_are_a_clear_error(synth_store, tmp_path):
    with pytest.raises(ConfigError, match=r"data.factors \[8, 16\]: \[16\] not levels of"):
        train(_cfg(synth_store, "data.factors=[8,16]"), tmp_path / "job", _env())


def test_job_writes_checkpoints_progress_and_scores(synth_store, tmp_path):
    import torch

    cfg = _cfg(synth_store, "train.max_epochs=2", "name=j", "experiment=e", "train.threads=1")
    before = torch.get_num_threads()
    try:
        scores = run_job(cfg, tmp_path, threads=2)  # the config's train.threads wins over a launch's share
    finally:
        torch.set_num_threads(before)
    job = tmp_path / "e" / "j"
    for name in ("checkpoint.pt", "best.pt", "progress.json", "scores.json", "config.yaml", "bootstrap.csv",
                 "learning_curve.png"):
        assert (job / name).stat().st_size > 0, name
    assert scores["threads"] == 1 and scores["replicate"] == 1
    progress = json.loads((job / PROGRESS).read_text())
    assert progress["state"] == "done" and progress["epoch"] == 2 and progress["samples_per_s"] > 0
    assert set(progress["metrics"]) >= {"train_loss", "val_loss", "val_acc", "val_f1", "lr"}
    assert scores == json.loads((job / "scores.json").read_text())
    assert set(scores["timing"]) == {"load_s", "train_s", "evaluate_s"} and scores["timing"]["train_s"] > 0
    assert 0.01 < scores["peak_host_mem_gb"] < 1000 and "peak_device_mem_gb" not in scores  # a CPU job
    assert list((job / "tensorboard").glob("events.out.tfevents.*"))
    assert not list(job.glob(".*.tmp")), "no temporary file may be left behind"
    # the saved config reproduces the job
    assert load_job_config(job / "config.yaml") == cfg


def _run_cli(config: Path, outputs: Path) -> subprocess.Popen:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.Popen(
        [sys.executable, "-m", "camvis.cli.train", str(config), "--outputs", str(outputs)],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )


@pytest.mark.slow
def test_killed_job_resumes_to_the_identical_result(synth_store, tmp_path):
    cfg = load_job_config(None, [f"data.store={synth_store.path}", *TINY, "train.max_epochs=6",
                                 "experiment=e", "name=j"])
    config = tmp_path / "job.yaml"
    config.write_text(yaml.safe_dump(to_dict(cfg)))

    straight = _run_cli(config, tmp_path / "straight")
    assert straight.wait(timeout=300) == 0, straight.stdout.read()

    killed = _run_cli(config, tmp_path / "killed")
    progress = tmp_path / "killed" / "e" / "j" / PROGRESS
    deadline = time.time() + 300
    while time.time() < deadline:
        if progress.exists() and json.loads(progress.read_text())["epoch"] >= 2:
            break
        time.sleep(0.02)
    killed.send_signal(signal.SIGKILL)
    killed.wait()
    interrupted_at = json.loads(progress.read_text())["epoch"]
    assert 2 <= interrupted_at < 6, "the kill must land mid-training"

    resumed = _run_cli(config, tmp_path / "killed")
    out = resumed.communicate(timeout=300)[0]
    assert resumed.returncode == 0, out
    assert "resuming" in out

    a = torch.load(tmp_path / "straight/e/j" / CHECKPOINT, weights_only=True)
    b = torch.load(tmp_path / "killed/e/j" / CHECKPOINT, weights_only=True)
    assert a["state"]["epoch"] == b["state"]["epoch"] == 6
    assert b["state"]["restarts"] == 1
    def learning(history):  # everything but the timing
        return [{k: v for k, v in h.items() if k != "samples_per_s"} for h in history]

    assert learning(a["state"]["history"]) == learning(b["state"]["history"])
    for key, tensor in a["model"].items():
        assert torch.equal(tensor, b["model"][key]), key
    scores_a = json.loads((tmp_path / "straight/e/j/scores.json").read_text())
    scores_b = json.loads((tmp_path / "killed/e/j/scores.json").read_text())
    assert scores_a["metrics"] == scores_b["metrics"]
    pd.testing.assert_frame_equal(pd.read_csv(tmp_path / "straight/e/j/bootstrap.csv"),
                                  pd.read_csv(tmp_path / "killed/e/j/bootstrap.csv"))


@pytest.mark.slow
def test_small_demo_learns(synth_store, tmp_path):
    """A smaller version of the demo's promise: the held-out view is classified well."""
    torch.set_num_threads(2)
    cfg = _cfg(synth_store, "train.max_epochs=15", "train.epoch_patches=512", "model.size_hidden=16",
               "train.lr=3e-3", "data.fold=2", "experiment=e", "name=learn")
    scores = run_job(cfg, tmp_path)
    assert scores["metrics"]["acc"] >= 0.75, scores["metrics"]


@pytest.mark.gpu
def test_cuda_bf16_training_and_evaluation(synth_store, tmp_path):
    """On a GPU machine: bf16 autocast + channels_last train and evaluate end to end."""
    if not torch.cuda.is_available():
        pytest.skip("needs a CUDA device (run on a lent GPU machine: pytest -m gpu)")
    cfg = _cfg(synth_store, "train.max_epochs=2", "train.device=cuda", "experiment=e", "name=gpu")
    scores = run_job(cfg, tmp_path)
    progress = json.loads((tmp_path / "e" / "gpu" / PROGRESS).read_text())
    assert progress["state"] == "done" and progress["samples_per_s"] > 0
    assert 0.0 <= scores["metrics"]["acc"] <= 1.0


def test_failed_job_says_so_and_a_restart_clears_it(synth_store, tmp_path):
    job = tmp_path / "e" / "j"
    with pytest.raises(ConfigError):
        run_job(_cfg(synth_store, "data.fold=7", "experiment=e", "name=j"), tmp_path)
    assert "data.fold" in (job / "error.txt").read_text()
    assert json.loads((job / PROGRESS).read_text())["state"] == "failed"
    run_job(_cfg(synth_store, "train.max_epochs=1", "experiment=e", "name=j"), tmp_path)
    assert not (job / "error.txt").exists(), "a run that succeeds leaves no stale error behind"
    assert json.loads((job / PROGRESS).read_text())["state"] == "done"


def test_eval_of_an_unreadable_checkpoint_is_one_line(synth_store, tmp_path, capsys):
    from camvis.cli.evaluate import main

    garbage = tmp_path / "garbage.pt"
    garbage.write_bytes(b"not a checkpoint")
    code = main([f"data.store={synth_store.path}", *TINY, "--job-dir", str(tmp_path / "j"),
                 "--checkpoint", str(garbage)])
    err = capsys.readouterr().err
    assert code == 2
    assert err.startswith("error: ") and "garbage.pt: not a readable torch checkpoint" in err
    assert "Traceback" not in err


def test_tensorboard_is_one_run_with_train_beside_val_and_hparams(synth_store, tmp_path):
    from tensorboard.backend.event_processing.event_multiplexer import EventMultiplexer
    from tensorboard.plugins.hparams import plugin_data_pb2

    scores = run_job(_cfg(synth_store, "train.max_epochs=2", "name=j", "experiment=e"), tmp_path)
    runs = EventMultiplexer().AddRunsFromDirectory(str(tmp_path / "e"))
    runs.Reload()
    assert list(runs.Runs()) == [os.path.join("j", "tensorboard")]  # one run per job, no sub-run per series
    run = runs.GetAccumulator(os.path.join("j", "tensorboard"))
    tags = set(run.Tags()["scalars"])
    assert {"Loss/train", "Loss/val", "Accuracy/train", "Accuracy/val", "F1/val", "LearningRate",
            "Throughput/samples_per_s", "Test/acc", "Test/f1", "Test/loss"} <= tags
    assert [e.step for e in run.Scalars("Accuracy/train")] == [0, 1]
    assert all(0.0 <= e.value <= 1.0 for e in run.Scalars("Accuracy/train"))
    assert run.Scalars("Test/acc")[-1].value == pytest.approx(scores["metrics"]["acc"])
    content = run.PluginTagToContent("hparams")
    start = plugin_data_pb2.HParamsPluginData.FromString(content["_hparams_/session_start_info"]).session_start_info
    assert start.hparams["fold"].number_value == 1 and start.hparams["group"].string_value
    assert start.hparams["lr"].number_value > 0
    assert start.hparams["compile"].bool_value is False and "fused_adam" in start.hparams  # camvis.job.speedups
    experiment = plugin_data_pb2.HParamsPluginData.FromString(content["_hparams_/experiment"]).experiment
    assert {m.name.tag for m in experiment.metric_infos} == {"Test/loss", "Test/acc", "Test/f1"}
