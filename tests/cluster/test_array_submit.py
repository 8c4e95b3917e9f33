"""camvis.cluster.array_submit: one array's task pickles, written by camvis in submitit's format.

Through stand-in sbatch/srun commands on PATH (SLURM itself: tests/integration/test_slurm.py). Each
task's pickle is then run by submitit's own job runner (`python -m submitit.core._submit`, as the
sbatch script does on a node, with the SLURM variables of that task): a task that got another task's
arguments returns the wrong name and fold.
"""

from __future__ import annotations

import operator
import os
import pickle
import subprocess
import sys
from pathlib import Path

import pytest
import submitit
from submitit.core.utils import DelayedSubmission, JobPaths

from camvis.cluster import array_submit
from camvis.config import JobConfig, job_config_from_dict

SHIMS = {
    "sbatch": 'n=$(( $(cat "$SHIM/count" 2>/dev/null || echo 99) + 1 )); echo $n > "$SHIM/count"\n'
              'cp "$1" "$SHIM/script_$n.sh"; echo "Submitted batch job $n"',
    "srun": "exit 0",
}


@pytest.fixture
def shim(install_shims) -> Path:
    return install_shims(SHIMS)


def configs(n: int) -> list[JobConfig]:
    return [job_config_from_dict({"experiment": "arr", "name": f"job{i}", "data": {"fold": i + 1}}, "test")
            for i in range(n)]


def executor(folder: Path, requeues: int = 4) -> submitit.AutoExecutor:
    ex = submitit.AutoExecutor(folder=folder, cluster="slurm", slurm_max_num_timeout=requeues)
    ex.update_parameters(timeout_min=7, slurm_array_parallelism=2)
    return ex


def run_task(folder: Path, array_id: str, index: int) -> tuple[str, object]:
    """Task `index` of the array through submitit's runner, as on a node; its result pickle."""
    env = {**os.environ, "SUBMITIT_EXECUTOR": "slurm", "SLURM_JOB_ID": str(1000 + index),
           "SLURM_ARRAY_JOB_ID": array_id, "SLURM_ARRAY_TASK_ID": str(index), "SLURM_NTASKS": "1",
           "SLURM_PROCID": "0", "SLURM_LOCALID": "0", "SLURM_NODEID": "0", "SLURM_JOB_NUM_NODES": "1",
           "SLURM_JOB_NODELIST": "localhost"}
    proc = subprocess.run([sys.executable, "-u", "-m", "submitit.core._submit", str(folder)], env=env,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    paths = JobPaths(folder, job_id=f"{array_id}_{index}", task_id=0)
    with open(paths.result_pickle, "rb") as f:
        return pickle.load(f)


def test_each_task_runs_its_own_arguments_through_submitits_runner(shim: Path, tmp_path: Path) -> None:
    folder = tmp_path / "jobs" / "%j"
    cfgs = configs(3)
    tasks = array_submit.submit_array(executor(folder), operator.attrgetter("name", "data.fold"),
                                      [(c,) for c in cfgs])
    assert [t.job_id for t in tasks] == ["100_0", "100_1", "100_2"]
    assert "#SBATCH --array=0-2%2\n" in (shim / "script_100.sh").read_text()  # one sbatch, submitit's script
    assert (shim / "count").read_text().strip() == "100"
    for i in (2, 0, 1):  # whatever order the tasks start in
        assert run_task(folder, "100", i) == ("success", (f"job{i}", i + 1))


def test_task_files_are_where_and_what_submitit_writes(shim: Path, tmp_path: Path) -> None:
    folder = tmp_path / "jobs" / "%j"
    cfgs = configs(2)
    tasks = array_submit.submit_array(executor(folder, requeues=4), run_config, [(c, "out") for c in cfgs])
    for i, (task, cfg) in enumerate(zip(tasks, cfgs)):
        paths = JobPaths(folder, job_id=f"100_{i}", task_id=0)  # submitit's own paths for the task
        assert (task.paths.submitted_pickle, task.paths.stdout, task.paths.stderr) == \
            (str(paths.submitted_pickle), str(paths.stdout), str(paths.stderr))
        delayed = DelayedSubmission.load(paths.submitted_pickle)
        assert (delayed.function, delayed.args, delayed.kwargs) == (run_config, (cfg, "out"), {})
        assert (delayed._timeout_min, delayed._timeout_countdown) == (7, 4)  # submitit's requeue countdown
    assert not list((tmp_path / "jobs").glob("*.pkl"))  # every staged pickle moved into its task's folder
    # 100/: the array's sbatch script, where submitit's map_array keeps it too
    assert sorted(p.name for p in (tmp_path / "jobs").iterdir() if p.is_dir()) == ["100", "100_0", "100_1"]
    assert (tmp_path / "jobs" / "100" / "100_submission.sh").read_text() == (shim / "script_100.sh").read_text()


def run_config(cfg: JobConfig, outputs: str) -> str:
    return f"{outputs}/{cfg.name}"


def test_a_callable_only_cloudpickle_can_pickle_still_runs(shim: Path, tmp_path: Path) -> None:
    folder = tmp_path / "jobs" / "%j"
    offset = 10
    array_submit.submit_array(executor(folder), lambda cfg: cfg.data.fold + offset, [(c,) for c in configs(2)])
    assert run_task(folder, "100", 1) == ("success", 12)


def test_a_refused_sbatch_leaves_no_pickle(shim: Path, tmp_path: Path) -> None:
    (shim / "sbatch").write_text("#!/bin/sh\necho 'sbatch: error: Batch job submission failed' >&2\nexit 1\n")
    with pytest.raises(submitit.core.utils.FailedJobError, match="submission failed"):
        array_submit.submit_array(executor(tmp_path / "jobs" / "%j"), run_config, [(c, "o") for c in configs(3)])
    assert not list((tmp_path / "jobs").glob("*.pkl"))


def test_one_task_is_submitits_plain_job(shim: Path, tmp_path: Path) -> None:
    (job,) = array_submit.submit_array(executor(tmp_path / "jobs" / "%j"), run_config, [(configs(1)[0], "o")])
    assert str(job.job_id) == "100" and "--array" not in (shim / "script_100.sh").read_text()


@pytest.mark.parametrize("template", ["/j/%j", "/j/%A/%a", "/j/%A_%a/x%t", "/j/plain"])
def test_task_path_is_submitits_rule(template: str) -> None:
    for job_id in ("123_4", "77_0"):
        for task in (0, 3):
            expected = JobPaths(template, job_id=job_id, task_id=task)
            assert array_submit.task_path(template + "/%j_%t_log.out", job_id, task) == str(expected.stdout)
