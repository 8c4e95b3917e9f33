"""camvis.adapters: the exact behaviour of each private name of submitit that camvis relies on, and of
the zarr behaviour its store format builds on (camvis uses no private name of zarr).

An upgrade of either library that changes one fails here first, saying what camvis relies on and
where (the pins in pyproject.toml are the range these tests passed with). Through a stand-in
sbatch/srun on PATH (real SLURM: tests/integration/test_slurm.py).
"""

from __future__ import annotations

import inspect
import os
import re
import shlex
import sys
from pathlib import Path

import numpy as np
import pytest
import submitit
import zarr
from submitit.core.utils import JobPaths

from camvis.adapters import submitit_api

SUBMITIT = f"submitit {submitit.__version__} changed: camvis relies on {{}}; see camvis/adapters/submitit_api.py"
ZARR = f"zarr {zarr.__version__} changed: camvis relies on {{}}; see camvis/data/store_map.py, store_verify.py"


@pytest.fixture
def sbatch(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A stand-in sbatch (copies its script to $SHIM/script.sh, answers job 4242) and srun, first on PATH."""
    folder = tmp_path / "shim"
    folder.mkdir()
    for name, body in {"sbatch": 'cp "$1" "$SHIM/script.sh"; echo "Submitted batch job 4242"', "srun": "exit 0"}.items():
        (folder / name).write_text(f"#!/bin/sh\n{body}\n")
        (folder / name).chmod(0o755)
    monkeypatch.setenv("SHIM", str(folder))
    monkeypatch.setenv("PATH", f"{folder}{os.pathsep}{os.environ['PATH']}")
    return folder


# --------------------------------------------------------------------------- submitit


def test_cluster_executor_is_the_one_autoexecutor_wraps(tmp_path: Path) -> None:
    auto = submitit.AutoExecutor(folder=tmp_path / "%j", cluster="local")
    inner = submitit_api.cluster_executor(auto)
    assert isinstance(inner, submitit.LocalExecutor), SUBMITIT.format("AutoExecutor._executor, the wrapped executor")
    auto.update_parameters(timeout_min=7)
    assert inner.parameters.get("timeout_min") == 7, SUBMITIT.format(
        "AutoExecutor.update_parameters setting the wrapped executor's parameters")
    plain = submitit.LocalExecutor(folder=tmp_path)
    assert submitit_api.cluster_executor(plain) is plain


def test_submit_array_command_submits_one_array_running_the_command(sbatch: Path, tmp_path: Path) -> None:
    assert list(inspect.signature(submitit.SlurmExecutor._submit_command).parameters) == ["self", "command"], \
        SUBMITIT.format("PicklingExecutor._submit_command(self, command)")
    auto = submitit.AutoExecutor(folder=tmp_path / "jobs" / "%j", cluster="slurm", slurm_max_num_timeout=5)
    auto.update_parameters(timeout_min=9, slurm_array_parallelism=2, slurm_partition="gpu")
    slurm = submitit_api.cluster_executor(auto)
    (tmp_path / "jobs").mkdir()  # as the tasks file's staging makes it
    job_id = submitit_api.submit_array_command(slurm, "python -u -m my.runner /x", 3)
    assert job_id == "4242"
    script = (sbatch / "script.sh").read_text()
    for line in ("#SBATCH --array=0-2%2", "#SBATCH --partition=gpu", "#SBATCH --time=9",
                 "#SBATCH --output=" + str(tmp_path / "jobs" / "%A_%a" / "%A_%a_0_log.out")):  # task_paths' stdout
        assert line in script.splitlines(), SUBMITIT.format(f"_submit_command writing {line!r} for map_count=3")
    assert "python -u -m my.runner /x" in script, SUBMITIT.format("_submit_command running the command it is given")
    assert "map_count" not in slurm.parameters, "the array's count is set on a copy, not the caller's executor"


def test_sbatch_text_converts_autoexecutor_parameters(tmp_path: Path) -> None:
    names = {"name": "job_name", "timeout_min": "time", "mem_gb": "mem", "nodes": "nodes",
             "cpus_per_task": "cpus_per_task", "gpus_per_node": "gpus_per_node", "tasks_per_node": "ntasks_per_node"}
    assert {k: submitit.SlurmExecutor._equivalence_dict().get(k) for k in names} == names, \
        SUBMITIT.format("SlurmExecutor._equivalence_dict() mapping AutoExecutor's names to sbatch's")
    from submitit.slurm import slurm as sl

    assert (sl._convert_mem(2.0), sl._convert_mem(1.5)) == ("2GB", "1536MB"), SUBMITIT.format("slurm._convert_mem")
    params = {"name": "camvis-x", "timeout_min": 30, "nodes": 2, "tasks_per_node": 4, "cpus_per_task": 8,
              "gpus_per_node": 4, "mem_gb": 1.5, "slurm_partition": "gpu", "slurm_array_parallelism": 3,
              "slurm_signal_delay_s": 120, "slurm_setup": ["module load cuda"],
              "slurm_additional_parameters": {"dependency": "afterok:7"}}
    text = submitit_api.sbatch_text(params, tmp_path / "%j", "run me", 5)
    for line in ("#SBATCH --job-name=camvis-x", "#SBATCH --time=30", "#SBATCH --nodes=2", "#SBATCH --ntasks-per-node=4",
                 "#SBATCH --cpus-per-task=8", "#SBATCH --gpus-per-node=4", "#SBATCH --mem=1536MB",
                 "#SBATCH --partition=gpu", "#SBATCH --array=0-4%3", "#SBATCH --signal=USR2@120",
                 "#SBATCH --dependency=afterok:7", "module load cuda"):
        assert line in text.splitlines(), SUBMITIT.format(f"slurm._make_sbatch_string writing {line!r}")
    assert re.search(r"^srun .*run me$", text, re.MULTILINE), SUBMITIT.format("the command on the script's srun line")
    assert "--array" not in submitit_api.sbatch_text(params, tmp_path / "%j", "run me", None)


def test_job_command_is_submitits_runner(sbatch: Path, tmp_path: Path) -> None:
    slurm = submitit.SlurmExecutor(folder=tmp_path / "%j")
    python = shlex.quote(sys.executable)
    assert submitit_api.job_command(python, slurm.folder) == slurm._submitit_command_str, \
        SUBMITIT.format(f"{submitit_api.RUNNER_MODULE} as the runner of a plain job")


@pytest.mark.parametrize("template", ["/j/%j", "/j/%A/%a", "/j/%A_%a/x%t", "/j/plain"])
def test_task_path_is_jobpaths_rule(template: str) -> None:
    for job_id in ("123_4", "77_0"):
        for task in (0, 3):
            expected = JobPaths(template, job_id=job_id, task_id=task)
            for name in ("submitted_pickle", "stdout", "stderr"):
                pattern = {"submitted_pickle": "%j_submitted.pkl", "stdout": "%j_%t_log.out",
                           "stderr": "%j_%t_log.err"}[name]
                assert submitit_api.task_path(f"{template}/{pattern}", job_id, task) == str(getattr(expected, name)), \
                    SUBMITIT.format(f"JobPaths' rule for {name} ({template}, job {job_id}, task {task})")


# --------------------------------------------------------------------------- zarr (public API only)


def test_chunk_keys_are_the_files_store_map_reads(tmp_path: Path) -> None:
    """camvis.data.store_map memory-maps chunk files and store_verify names a missing one by
    Array.metadata.encode_chunk_key; a missing chunk reads as the fill value (why the build records
    checksums)."""
    array = zarr.create_array(tmp_path / "s.zarr", name="levels", shape=(2, 3, 4), dtype="uint8", chunks=(1, 3, 4),
                              fill_value=0, compressors=None)
    array[:] = 7
    key = array.metadata.encode_chunk_key((1, 0, 0))
    chunk = tmp_path / "s.zarr" / "levels" / key
    assert key == "c/1/0/0" and chunk.is_file(), ZARR.format("encode_chunk_key naming the chunk's file (c/1/0/0)")
    assert chunk.read_bytes() == bytes([7] * 12), ZARR.format("an uncompressed chunk file holding the raw C-order bytes")
    chunk.unlink()
    assert np.asarray(zarr.open_array(tmp_path / "s.zarr" / "levels", mode="r")[1]).max() == 0, \
        ZARR.format("a missing chunk reading as the fill value")
