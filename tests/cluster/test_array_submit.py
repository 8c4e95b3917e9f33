"""camvis.cluster.array_submit: one array's tasks in one file, each task run through submitit's runner.

Through stand-in sbatch/srun commands on PATH (SLURM itself: tests/integration/test_slurm.py). Each
task is then run by the command of the array's sbatch script (`python -m camvis.node.array_task
FOLDER`, as on a node, with the SLURM variables of that task), which hands over to submitit's runner:
a task that got another task's arguments returns the wrong name and fold.
"""

from __future__ import annotations

import operator
import os
import pickle
import subprocess
import sys
import time
from pathlib import Path

import pytest
import submitit
from submitit.core.utils import DelayedSubmission, JobPaths

from camvis.bookkeeping import tasks_file as tasks_file_mod
from camvis.cluster import array_submit
from camvis.node import array_task
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


def start_task(folder: Path, array_id: str, index: int) -> subprocess.Popen:
    """Task `index` of the array as its sbatch script runs it on a node."""
    env = {**os.environ, "SUBMITIT_EXECUTOR": "slurm", "SLURM_JOB_ID": str(1000 + index),
           "SLURM_ARRAY_JOB_ID": array_id, "SLURM_ARRAY_TASK_ID": str(index), "SLURM_NTASKS": "1",
           "SLURM_PROCID": "0", "SLURM_LOCALID": "0", "SLURM_NODEID": "0", "SLURM_JOB_NUM_NODES": "1",
           "SLURM_JOB_NODELIST": "localhost",
           "PYTHONPATH": os.pathsep.join([str(Path(__file__).parent), os.environ.get("PYTHONPATH", "")])}  # run_config
    return subprocess.Popen([sys.executable, "-u", "-m", "camvis.node.array_task", str(folder)], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def run_task(folder: Path, array_id: str, index: int, proc: subprocess.Popen | None = None) -> tuple[str, object]:
    """Task `index` run to its end; its result pickle."""
    proc = proc or start_task(folder, array_id, index)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err[-2000:]
    paths = JobPaths(folder, job_id=f"{array_id}_{index}", task_id=0)
    with open(paths.result_pickle, "rb") as f:
        return pickle.load(f)


def test_each_task_runs_its_own_arguments_through_submitits_runner(shim: Path, tmp_path: Path) -> None:
    folder = tmp_path / "jobs" / "%j"
    cfgs = configs(3)
    tasks = array_submit.submit_array(executor(folder), operator.attrgetter("name", "data.fold"),
                                      [(c,) for c in cfgs])
    assert [t.job_id for t in tasks] == ["100_0", "100_1", "100_2"]
    script = (shim / "script_100.sh").read_text()
    assert "#SBATCH --array=0-2%2\n" in script  # one sbatch, submitit's script, camvis's command
    assert f"-u -m camvis.node.array_task {folder.absolute()}\n" in script
    assert (shim / "count").read_text().strip() == "100"
    for i in (2, 0, 1):  # whatever order the tasks start in
        assert run_task(folder, "100", i) == ("success", (f"job{i}", i + 1))


def test_task_files_are_where_and_what_submitit_writes(shim: Path, tmp_path: Path) -> None:
    folder = tmp_path / "jobs" / "%j"
    cfgs = configs(2)
    tasks = array_submit.submit_array(executor(folder, requeues=4), run_config, [(c, "out") for c in cfgs])
    tasks_file = tmp_path / "jobs" / "100_tasks.pkl"
    for i, (task, cfg) in enumerate(zip(tasks, cfgs)):
        paths = JobPaths(folder, job_id=f"100_{i}", task_id=0)  # submitit's own paths for the task
        assert (task.paths.submitted_pickle, task.paths.stdout, task.paths.stderr) == \
            (str(paths.submitted_pickle), str(paths.stdout), str(paths.stderr))
        assert paths.folder.is_dir() and not paths.submitted_pickle.exists()  # SLURM opens the log there
        delayed = pickle.loads(tasks_file_mod.read_task(tasks_file, i))
        assert (delayed.function, delayed.args, delayed.kwargs) == (run_config, (cfg, "out"), {})
        assert (delayed._timeout_min, delayed._timeout_countdown) == (7, 4)  # submitit's requeue countdown
        run_task(folder, "100", i)  # on the node, the task's pickle is copied where submitit's runner reads it
        assert paths.submitted_pickle.read_bytes() == tasks_file_mod.read_task(tasks_file, i)
    # 100/: the array's sbatch script, where submitit's map_array keeps it too (and its link to it); no temporary
    assert sorted(p.name for p in (tmp_path / "jobs").iterdir() if not p.is_symlink()) == \
        ["100", "100_0", "100_1", "100_tasks.pkl"]
    assert (tmp_path / "jobs" / "100" / "100_submission.sh").read_text() == (shim / "script_100.sh").read_text()


def run_config(cfg: JobConfig, outputs: str) -> str:
    return f"{outputs}/{cfg.name}"


def test_a_callable_only_cloudpickle_can_pickle_still_runs(shim: Path, tmp_path: Path) -> None:
    folder = tmp_path / "jobs" / "%j"
    offset = 10
    array_submit.submit_array(executor(folder), lambda cfg: cfg.data.fold + offset, [(c,) for c in configs(2)])
    assert run_task(folder, "100", 1) == ("success", 12)


def test_a_refused_sbatch_leaves_no_file(shim: Path, tmp_path: Path) -> None:
    (shim / "sbatch").write_text("#!/bin/sh\necho 'sbatch: error: Batch job submission failed' >&2\nexit 1\n")
    with pytest.raises(submitit.core.utils.FailedJobError, match="submission failed"):
        array_submit.submit_array(executor(tmp_path / "jobs" / "%j"), run_config, [(c, "o") for c in configs(3)])
    left = [p.name for p in (tmp_path / "jobs").rglob("*") if p.is_file()]
    assert [name for name in left if not name.startswith(".submission_file_")] == []  # submitit keeps its script


def test_a_requeued_task_runs_its_checkpoint_not_its_first_arguments(shim: Path, tmp_path: Path) -> None:
    """submitit's checkpoint on a timeout rewrites the task's pickle before requeueing it: the runner
    must not copy the first arguments over it."""
    folder = tmp_path / "jobs" / "%j"
    cfgs = configs(2)
    array_submit.submit_array(executor(folder), run_config, [(c, "first") for c in cfgs])
    checkpoint = DelayedSubmission(run_config, cfgs[1], "resumed")
    checkpoint.dump(JobPaths(folder, job_id="100_1", task_id=0).submitted_pickle)
    assert run_task(folder, "100", 1) == ("success", "resumed/job1")
    assert run_task(folder, "100", 0) == ("success", "first/job0")


def test_a_task_started_before_the_launch_committed_waits_for_its_tasks_file(shim: Path, tmp_path: Path) -> None:
    folder = tmp_path / "jobs" / "%j"
    array_submit.submit_array(executor(folder), run_config, [(c, "o") for c in configs(2)])
    tasks_file = tmp_path / "jobs" / "100_tasks.pkl"
    held = tasks_file.rename(tmp_path / "held.pkl")  # as if sbatch had answered and the rename not yet run
    proc = start_task(folder, "100", 1)
    time.sleep(1.5)
    assert proc.poll() is None  # waiting
    held.rename(tasks_file)
    assert run_task(folder, "100", 1, proc) == ("success", "o/job1")


def test_without_its_tasks_file_a_task_fails_saying_why(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(array_task, "WAIT_S", 0.2)
    with pytest.raises(RuntimeError, match=r"waited 0.2 s for this array's tasks file .*7_tasks.pkl.*launch the grid again"):
        array_task._wait_for(tasks_file_mod.tasks_file(tmp_path / "%j", "7"))


@pytest.mark.parametrize("sizes", [[0, 5], [1], [3, 0, 70000, 12]])
def test_tasks_file_gives_back_each_pickle(sizes: list[int], tmp_path: Path) -> None:
    pickles = [bytes([i % 251]) * n for i, n in enumerate(sizes)]
    path = tmp_path / "t.pkl"
    path.write_bytes(tasks_file_mod.encode_tasks(pickles))
    assert [tasks_file_mod.read_task(path, i) for i in range(len(sizes))] == pickles


def test_a_bad_tasks_file_is_named_with_what_is_wrong(tmp_path: Path) -> None:
    path = tmp_path / "t.pkl"
    data = tasks_file_mod.encode_tasks([b"abc", b"defg"])
    path.write_bytes(data)
    with pytest.raises(ValueError, match=r"t.pkl: holds tasks 0-1, not task 2"):
        tasks_file_mod.read_task(path, 2)
    path.write_bytes(data[:-2])
    with pytest.raises(ValueError, match=r"t.pkl: truncated: task 1 should be bytes 3-7"):
        tasks_file_mod.read_task(path, 1)
    path.write_bytes(b"#!/bin/sh\n" + data)
    with pytest.raises(ValueError, match=r"t.pkl: not a camvis tasks file"):
        tasks_file_mod.read_task(path, 0)


def test_one_task_is_submitits_plain_job(shim: Path, tmp_path: Path) -> None:
    (job,) = array_submit.submit_array(executor(tmp_path / "jobs" / "%j"), run_config, [(configs(1)[0], "o")])
    assert str(job.job_id) == "100" and "--array" not in (shim / "script_100.sh").read_text()


def test_a_launch_killed_in_sbatch_leaves_a_temporary_the_next_launch_reaps(shim: Path, tmp_path: Path) -> None:
    from camvis.io import reap_stale_tmp

    (shim / "sbatch").write_text('#!/bin/sh\ntouch "$SHIM/in_sbatch"\nsleep 60\n')
    jobs = tmp_path / "jobs"
    code = ("import operator, sys, submitit; from camvis.cluster import array_submit; "
            "from camvis.config import job_config_from_dict as j; "
            "ex = submitit.AutoExecutor(folder=sys.argv[1], cluster='slurm'); "
            "cfgs = [j({'experiment': 'arr', 'name': f'job{i}'}, 'test') for i in range(3)]; "
            "array_submit.submit_array(ex, operator.attrgetter('name'), [(c,) for c in cfgs])")
    proc = subprocess.Popen([sys.executable, "-c", code, str(jobs / "%j")])
    try:
        end = time.monotonic() + 60
        while not (shim / "in_sbatch").exists():
            assert proc.poll() is None and time.monotonic() < end, "the launch never reached sbatch"
            time.sleep(0.1)
    finally:
        proc.kill()
        proc.wait()
    left = sorted(p.name for p in jobs.iterdir() if not p.name.startswith(".submission_file_"))
    assert len(left) == 1 and left[0].startswith(".tasks.pkl.") and left[0].endswith(".tmp"), left
    assert [p.name for p in reap_stale_tmp(jobs)] == left  # what the next launch's manifest write does
