"""One SLURM job array through submitit, its tasks' arguments in ONE file written in milliseconds.

submitit's map_array pickles one DelayedSubmission per task with cloudpickle (its pure-Python
pickler, ~0.4 ms a task) into a file per task: on a 5,000-job grid, 5,000 file creations and
renames were most of a launch. `submit_array` pickles the same DelayedSubmissions (the callable, the
task's arguments, submitit's timeout and requeue countdown) with the C pickler (protocol 5; the
callable's class and the configs are importable, so they are pickled by reference, as cloudpickle
does; anything else falls back to cloudpickle) into one tasks file per array,
<folder's id-free part>/<array>_tasks.pkl: a header (magic, count, offsets), then the pickles.

The array runs `python -m camvis.node.array_task FOLDER` in submitit's own sbatch script
(SlurmExecutor._submit_command, as map_array calls it: camvis.adapters.submitit_api holds every
private name of submitit that camvis uses, with its measured gain). On the node, `camvis.node.array_task.run_task` copies the pickle
of its task (SLURM_ARRAY_TASK_ID) to submitit's <array>_<i>/<array>_<i>_submitted.pkl, unless
that exists (a requeued task's checkpoint is there), and hands over to submitit's runner: results,
logs, signals and requeues are submitit's, unchanged.

The tasks file is written under a temporary name before sbatch and renamed after it answers: the
rename is the commit. A launch killed before leaves a temporary (reaped like every camvis
temporary), never a half-written tasks file; a task that starts before the rename waits for it, as
submitit's runner waits for its pickle (60 s), and fails without it.

No torch here: the launcher runs on login nodes.
"""

from __future__ import annotations

import os
import pickle
import shlex
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

from camvis.adapters.submitit_api import cluster_executor, submit_array_command, task_path
from camvis.bookkeeping.tasks_file import TaskPaths, encode_tasks, task_paths, tasks_file
from camvis.io import tmp_prefix

PROTOCOL = 5


@dataclass(frozen=True)
class ArrayTask:
    """One task of a submitted array: its SLURM id ("<array>_<i>") and paths (submitit's Job has these too)."""

    job_id: str
    paths: TaskPaths


def submit_array(executor: Any, fn: Callable[..., Any], args: Sequence[tuple[Any, ...]]) -> list[Any]:
    """`fn(*a)` for each `a` of `args` as ONE array of len(args) tasks through `executor` (a submitit
    AutoExecutor or SlurmExecutor, parameters set); returns one ArrayTask per task, in order. One
    task, or another cluster, is submitit's map_array itself (one task is a plain job there, no array)."""
    from submitit.slurm.slurm import SlurmExecutor

    slurm = cluster_executor(executor)
    if not isinstance(slurm, SlurmExecutor) or len(args) < 2:
        return executor.map_array(fn, *zip(*args))
    staged = _stage(slurm, fn, args)
    try:
        array_id = submit_array_command(slurm, runner_command(slurm.python, slurm.folder), len(args))
    except BaseException:
        _unlink(staged)
        raise
    return _commit(slurm.folder, array_id, staged, len(args))


def runner_command(python: str, folder: str | Path) -> str:
    """The command an array's sbatch script runs on the node: `run_task` below (`python`: quoted)."""
    return f"{python} -u -m camvis.node.array_task {shlex.quote(str(folder))}"


def _stage(slurm: Any, fn: Callable[..., Any], args: Sequence[tuple[Any, ...]]) -> str:
    """The array's tasks file, written under a temporary name in the folder's id-free part."""
    from submitit.core.utils import DelayedSubmission, JobPaths

    folder = JobPaths.get_first_id_independent_folder(slurm.folder)
    folder.mkdir(parents=True, exist_ok=True)
    timeout_min = slurm.parameters.get("time", 5)
    pickles = []
    for a in args:
        delayed = DelayedSubmission(fn, *a)
        delayed.set_timeout(timeout_min, slurm.max_num_timeout)
        pickles.append(_dumps(delayed))
    data = encode_tasks(pickles)
    _check_size(len(data), slurm.max_pickle_size_gb)
    staged = os.path.join(folder, f"{tmp_prefix('tasks.pkl')}{uuid.uuid4().hex[:8]}.tmp")
    try:
        _write(staged, data)
    except BaseException:
        _unlink(staged)
        raise
    return staged


def _dumps(obj: Any) -> bytes:
    try:
        return pickle.dumps(obj, PROTOCOL)
    except (pickle.PicklingError, AttributeError, TypeError):  # a lambda, a local class: by value
        import cloudpickle

        return cloudpickle.dumps(obj, pickle.HIGHEST_PROTOCOL)


def _check_size(size: int, limit_gb: float) -> None:
    """submitit's own guard: the array's pickles in all above max_pickle_size_gb."""
    if size / 1024**3 > limit_gb:
        raise RuntimeError(f"Submitting {size / 1024**3:.2f} > {limit_gb}GB of objects (function and arguments) "
                           f"through pickle (this can be slow / overload the file system). If this is the intended "
                           f"behavior, you should update executor.max_pickle_size_gb to a larger value")


def _write(path: str, data: bytes) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view):]
    finally:
        os.close(fd)


def _unlink(path: str) -> None:
    try:
        os.unlink(path)
    except OSError:
        pass


def _commit(folder: str | Path, array_id: str, staged: str, count: int) -> list[ArrayTask]:
    """The tasks file renamed to its final name (tasks may start), then each task's folder made,
    where SLURM opens its log and the runner writes its pickle."""
    template = str(Path(folder).expanduser().absolute())  # as submitit's JobPaths holds it
    os.rename(staged, tasks_file(template, array_id))
    tasks: list[ArrayTask] = []
    for i in range(count):
        job_id = f"{array_id}_{i}"
        task_folder = task_path(template, job_id)
        try:
            os.mkdir(task_folder)
        except FileExistsError:
            pass
        except FileNotFoundError:  # an id-dependent part above the task's folder
            os.makedirs(task_folder, exist_ok=True)
        tasks.append(ArrayTask(job_id, task_paths(template, job_id)))
    return tasks
