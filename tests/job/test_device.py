"""The device is honest: a GPU allocation that torch cannot use stops the job at start, writing nothing;
`train.device: cpu` on one is allowed and said; the device trained on is recorded everywhere."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from camvis.cluster import monitor
from camvis.bookkeeping.experiment_files import JobInfo
from camvis.bookkeeping.slurm_query import QueryResult
from camvis.job import device

ROOT = Path(__file__).resolve().parents[2]
CPU_ONLY = not torch.cuda.is_available()
needs_cpu_only = pytest.mark.skipif(not CPU_ONLY, reason="this machine's torch sees a GPU")


@pytest.mark.parametrize("environ, grid_gpus, expected", [
    ({}, 0, None),
    ({"SLURM_GPUS_ON_NODE": "1"}, 0, (1, "SLURM_GPUS_ON_NODE=1")),
    ({"SLURM_GPUS_ON_NODE": "0"}, 0, None),
    ({"SLURM_JOB_GPUS": "0,1"}, 0, (2, "SLURM_JOB_GPUS=0,1")),
    ({"SLURM_STEP_GPUS": "3", "SLURM_JOB_GPUS": "2,3"}, 0, (1, "SLURM_STEP_GPUS=3")),
    ({"SLURM_JOB_GPUS": "(null)"}, 0, None),
    ({"SLURM_JOB_GPUS": ""}, 2, (2, "slurm.gpus_per_node=2")),
])
def test_the_gpus_an_allocation_holds(environ, grid_gpus, expected) -> None:
    assert device.allocated_gpus(environ, grid_gpus) == expected


@needs_cpu_only
def test_a_gpu_allocation_without_cuda_is_refused_unless_the_cpu_is_asked_for() -> None:
    with pytest.raises(device.DeviceError) as refused:
        device.check("auto", environ={"SLURM_GPUS_ON_NODE": "1"})
    line = str(refused.value)
    assert "\n" not in line and "SLURM_GPUS_ON_NODE=1" in line and "train.device: cpu" in line
    assert ("CPU-only build (torch.version.cuda is None)" in line) == (torch.version.cuda is None)
    assert f"torch=={torch.__version__.split('+')[0]}" in line or torch.version.cuda is not None
    with pytest.raises(device.DeviceError, match="slurm.gpus_per_node=1"):
        device.check("auto", grid_gpus=1, environ={})
    note = device.check("cpu", environ={"SLURM_JOB_GPUS": "0"})
    assert note is not None and "train.device: cpu" in note and "1 GPU (SLURM_JOB_GPUS=0)" in note
    assert device.check("auto", environ={}) is None


def test_describe_and_the_status_cell() -> None:
    info = device.describe(torch.device("cpu"), 2, (1, "SLURM_GPUS_ON_NODE=1"))
    assert info["type"] == "cpu" and info["count"] == 2 and info["cuda"] == torch.version.cuda
    assert info["torch"] == torch.__version__ and info["allocated_gpus"] == 1 and info["name"]
    assert device.log_line(info).startswith("device: cpu ")
    cell = [monitor.device_cell(monitor.JobStatus(JobInfo(name="j", group="g", fold=1), "RUNNING", "files",
                                                  progress={"device": d})) for d in (info, {"type": "cuda", "count": 1},
                                                                                     None, {"type": 3})]
    assert cell == ["cpu x2", "cuda", "-", "-"]


def train_cmd(store: Path, outputs: Path, name: str, *extra: str) -> list[str]:
    return [sys.executable, "-m", "camvis.cli.train", "experiment=dev", f"name={name}", f"data.store={store}",
            "data.factors=[2,4,8]", "model.size_hidden=4", "train.max_epochs=1", "train.epoch_patches=32",
            "eval.bootstrap=10", "eval.figures=false", *extra, "--outputs", str(outputs)]


def run(cmd: list[str], cwd: Path, **env: str) -> subprocess.CompletedProcess:
    full = {**os.environ, "PYTHONPATH": str(ROOT), **env}
    for key in device.GPU_VARIABLES:
        if key not in env:
            full.pop(key, None)
    return subprocess.run(cmd, cwd=cwd, env=full, capture_output=True, text=True, timeout=600)


@needs_cpu_only
def test_a_job_on_a_gpu_allocation_with_cpu_only_torch_stops_at_start(synth_store, tmp_path) -> None:
    """The acceptance test: a real camvis-train process with SLURM_GPUS_ON_NODE=1 on this CPU-only torch."""
    done = run(train_cmd(synth_store.path, tmp_path / "outputs", "gpu"), tmp_path, SLURM_GPUS_ON_NODE="1")
    assert done.returncode == 2, done.stderr[-2000:]
    errors = [ln for ln in done.stderr.splitlines() if ln.strip()]
    assert len(errors) == 1 and errors[0].startswith("error: the job's allocation holds 1 GPU"), done.stderr
    assert "Traceback" not in done.stderr and "train.device: cpu" in errors[0]
    assert not (tmp_path / "outputs").exists(), "nothing written: no scores.json, no job folder"


def test_train_device_cpu_on_a_gpu_allocation_trains_and_records_the_device(synth_store, tmp_path) -> None:
    done = run(train_cmd(synth_store.path, tmp_path / "outputs", "cpu", "train.device=cpu"), tmp_path,
               SLURM_JOB_GPUS="0")
    assert done.returncode == 0, done.stderr[-2000:]
    lines = done.stdout.splitlines()
    assert lines[0].startswith("device: cpu ") and (CPU_ONLY == ("train.device: cpu on an allocation" in lines[1]))
    folder = tmp_path / "outputs" / "dev" / "cpu"
    scores, progress = (json.loads((folder / n).read_text()) for n in ("scores.json", "progress.json"))
    for recorded in (scores["device"], progress["device"]):
        assert recorded["type"] == "cpu" and recorded["count"] == 1 and recorded["cuda"] == torch.version.cuda
        assert recorded["allocated_gpus"] == 1 and recorded["torch"] == torch.__version__
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(folder / "tensorboard"), size_guidance={"tensors": 0})
    events.Reload()
    hparams = events.summary_metadata["_hparams_/session_start_info"].plugin_data.content
    assert b"device_type" in hparams and b"cpu" in hparams
    status = monitor.JobStatus(JobInfo(name="cpu", group="g", fold=1), "COMPLETED", "files", progress=progress)
    assert monitor.device_cell(status) == "cpu"


def test_the_status_table_has_a_device_column(tmp_path) -> None:
    job = monitor.JobStatus(JobInfo(name="j", group="g", fold=1), "RUNNING", "files", progress={"device": {"type": "cuda", "count": 4}})
    status = monitor.ExperimentStatus("e", [job], QueryResult({}, None), [], False)
    table = monitor.build_table(status)
    column = next(c for c in table.columns if c.header == "device")
    assert list(column.cells) == ["cuda x4"]


SLURM = os.environ.get("CI") == "true" or os.environ.get("CAMVIS_SLURM") == "1"


@pytest.mark.slurm
@pytest.mark.skipif(not SLURM, reason="the real local SLURM: CAMVIS_SLURM=1 (make test starts it)")
@needs_cpu_only
def test_on_the_real_slurm_a_gpu_job_without_cuda_fails_at_start(synth_store, tmp_path) -> None:
    """sbatch with SLURM_GPUS_ON_NODE=1 exported (the local cluster has no GPUs to give): the job FAILS at
    start, its log says why in one line, and no scores.json is written."""
    import shlex

    outputs = tmp_path / "outputs"
    log = tmp_path / "job.out"
    command = shlex.join(train_cmd(synth_store.path, outputs, "slurm"))
    submitted = subprocess.run(["sbatch", "--parsable", "--export=ALL,SLURM_GPUS_ON_NODE=1", f"--output={log}",
                                "--time=5", "--mem=1G", f"--chdir={tmp_path}", "--wrap", command],
                               env={**os.environ, "PYTHONPATH": str(ROOT)}, capture_output=True, text=True, timeout=60)
    assert submitted.returncode == 0, submitted.stderr
    job_id = submitted.stdout.strip().split(";")[0]
    deadline = time.time() + 300
    while time.time() < deadline:
        state = subprocess.run(["sacct", "-n", "-X", "-P", "-j", job_id, "-o", "State"], capture_output=True,
                               text=True).stdout.strip()
        if state and state not in ("PENDING", "RUNNING", "REQUEUED", "COMPLETING"):
            break
        time.sleep(1)
    assert state == "FAILED", state
    text = log.read_text()
    assert "error: the job's allocation holds 1 GPU (SLURM_GPUS_ON_NODE=1)" in text and "Traceback" not in text
    assert not list(tmp_path.rglob("scores.json")) and not outputs.exists()
