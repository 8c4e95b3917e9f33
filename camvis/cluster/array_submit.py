"""One SLURM job array through submitit, its per-task pickles written in milliseconds, not seconds.

submitit's map_array pickles one DelayedSubmission per task with cloudpickle (its pure-Python
pickler, ~0.4 ms a task) and, once sbatch has answered, moves each into its task's folder through a
dozen pathlib objects and a Job object per task: about 5 s of a 5,000-job launch. `submit_array`
writes the same files: the same DelayedSubmission (the callable, the task's arguments, submitit's
timeout and requeue countdown) pickled by the C pickler (protocol 5; the callable's class and the
configs are importable, so they are pickled by reference, as cloudpickle does; anything else falls
back to cloudpickle) to <folder>/<uuid>.pkl before sbatch, then renamed to
<array>_<i>/<array>_<i>_submitted.pkl. The rename is the commit: submitit's runner on the node waits
for that name to exist and reads the file whole, so no fsync per file (submitit makes none either);
a launch killed before it leaves only <uuid>.pkl files, never a half-written task pickle, and its
tasks fail on the node for want of one (as with submitit). sbatch itself, its script and its command
are submitit's own (SlurmExecutor._submit_command, as map_array calls it).

No torch here: the launcher runs on login nodes.
"""

from __future__ import annotations

import os
import pickle
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

PROTOCOL = 5


@dataclass(frozen=True)
class TaskPaths:
    """What the manifest records of a task: submitit's paths for it, as strings."""

    submitted_pickle: str
    stdout: str
    stderr: str


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

    slurm = getattr(executor, "_executor", executor)  # AutoExecutor wraps the cluster's executor
    if not isinstance(slurm, SlurmExecutor) or len(args) < 2:
        return executor.map_array(fn, *zip(*args))
    staged = _stage(slurm, fn, args)
    try:
        array_ex = SlurmExecutor(slurm.folder, slurm.max_num_timeout)  # what map_array does: a copy
        array_ex.update_parameters(**slurm.parameters)
        array_ex.parameters["map_count"] = len(args)
        slurm._throttle()
        first = array_ex._submit_command(slurm._submitit_command_str)
    except BaseException:
        for path in staged:
            _unlink(path)
        raise
    return _commit(slurm.folder, str(first.job_id), staged)


def _stage(slurm: Any, fn: Callable[..., Any], args: Sequence[tuple[Any, ...]]) -> list[str]:
    """Each task's DelayedSubmission, pickled under a temporary name in the folder's id-free part."""
    from submitit.core.utils import DelayedSubmission, JobPaths

    folder = JobPaths.get_first_id_independent_folder(slurm.folder)
    folder.mkdir(parents=True, exist_ok=True)
    timeout_min = slurm.parameters.get("time", 5)
    staged: list[str] = []
    try:
        for i, a in enumerate(args):
            delayed = DelayedSubmission(fn, *a)
            delayed.set_timeout(timeout_min, slurm.max_num_timeout)
            data = _dumps(delayed)
            if i == 0:
                _check_size(len(data), len(args), slurm.max_pickle_size_gb)
            staged.append(os.path.join(folder, f"{uuid.uuid4().hex}.pkl"))
            _write(staged[-1], data)
    except BaseException:
        for path in staged:
            _unlink(path)
        raise
    return staged


def _dumps(obj: Any) -> bytes:
    try:
        return pickle.dumps(obj, PROTOCOL)
    except (pickle.PicklingError, AttributeError, TypeError):  # a lambda, a local class: by value
        import cloudpickle

        return cloudpickle.dumps(obj, pickle.HIGHEST_PROTOCOL)


def _check_size(size: int, n: int, limit_gb: float) -> None:
    """submitit's own guard (its message): the array's pickles in all above max_pickle_size_gb."""
    gb = size / 1024**3
    if n * gb > limit_gb:
        raise RuntimeError(f"Submitting an estimated {n} x {gb:.2f} > {limit_gb}GB of objects (function and "
                           f"arguments) through pickle (this can be slow / overload the file system).If this is "
                           f"the intended behavior, you should update executor.max_pickle_size_gb to a larger value ")


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


def _commit(folder: str | Path, array_id: str, staged: list[str]) -> list[ArrayTask]:
    """Each staged pickle renamed into its task's folder, where submitit's runner looks for it."""
    template = str(Path(folder).expanduser().absolute())  # as submitit's JobPaths holds it
    tasks: list[ArrayTask] = []
    for i, path in enumerate(staged):
        job_id = f"{array_id}_{i}"
        task_folder = task_path(template, job_id)
        try:
            os.mkdir(task_folder)
        except FileExistsError:
            pass
        except FileNotFoundError:  # an id-dependent part above the task's folder
            os.makedirs(task_folder, exist_ok=True)
        paths = TaskPaths(*(task_path(os.path.join(template, name), job_id)
                            for name in ("%j_submitted.pkl", "%j_%t_log.out", "%j_%t_log.err")))
        os.rename(path, paths.submitted_pickle)
        tasks.append(ArrayTask(job_id, paths))
    return tasks


def task_path(template: str, job_id: str, task_id: int = 0) -> str:
    """A submitit path template ("%j", "%t", "%A", "%a") for one array task: JobPaths._format_id's rule."""
    replaced = template.replace("%j", job_id).replace("%t", str(task_id))
    array_id, _, index = job_id.partition("_")
    if "%a" in replaced:
        replaced = replaced.replace("%a", index)
    return replaced.replace("%A", array_id)
