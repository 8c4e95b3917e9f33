"""submitit's private names that camvis uses, all of them, each with why (layer: base; no torch).

pyproject.toml pins submitit to the range tests/test_adapters.py passed with; that test pins each
behaviour below, so an upgrade that changes one fails there first, naming this module.

- `cluster_executor`: `AutoExecutor._executor`, the cluster's executor an AutoExecutor wraps. The
  launcher sets AutoExecutor's parameters; the array submission needs the SlurmExecutor beneath them.
- `submit_array_command`: `PicklingExecutor._submit_command` and the `map_count` parameter, as
  SlurmExecutor's map_array uses them: one sbatch of a job array that runs camvis's task runner
  (camvis.cluster.array_submit) instead of submitit's, so that the tasks' pickles are one file, not one
  file per task. Measured gain (benchmarks/bench_launch.py against its --map-array): at 5,000 jobs
  1.85 s of CPU against 2.76 s, a third less; at 72 jobs none. map_array also calls
  `_throttle` first; camvis does not: it only waits when a plain job was submitted in the last 0.2 s
  through the same executor, which the array path never records.
- `sbatch_text`: `SlurmExecutor._equivalence_dict`, `slurm._convert_mem` and
  `slurm._make_sbatch_string`: submitit's own sbatch text for a dry run, where no SLURM is (a
  SlurmExecutor cannot be made without srun) and no public API returns the text.
- `RUNNER_MODULE`: the module (`submitit.core._submit`) a plain job's sbatch script runs, which the
  dry run shows.
- `task_path`: the rule of `JobPaths._format_id` (how "%j", "%t", "%A", "%a" become an array task's
  ids), copied, not called: the launch computes 3 paths per task, and the public JobPaths costs about
  ten times more (benchmarks/bench_task_paths.py).
"""

from __future__ import annotations

import shlex
from pathlib import Path
from typing import Any

RUNNER_MODULE = "submitit.core._submit"


def cluster_executor(executor: Any) -> Any:
    """The SlurmExecutor (or LocalExecutor, ...) beneath an AutoExecutor; any other executor itself."""
    return getattr(executor, "_executor", executor)


def submit_array_command(slurm: Any, command: str, count: int) -> str:
    """One sbatch of an array of `count` tasks with `slurm`'s parameters, each task running `command`;
    returns the array's job id. As map_array does, on a copy, so that `slurm` submits plain jobs after."""
    from submitit.slurm.slurm import SlurmExecutor

    array_ex = SlurmExecutor(slurm.folder, slurm.max_num_timeout)
    array_ex.update_parameters(**slurm.parameters)
    array_ex.parameters["map_count"] = count  # not a parameter update_parameters takes
    return str(array_ex._submit_command(command).job_id)


def job_command(python: str, folder: str | Path) -> str:
    """The command a plain job's sbatch script runs: submitit's runner (`python`: quoted)."""
    return f"{python} -u -m {RUNNER_MODULE} {shlex.quote(str(folder))}"


def sbatch_text(params: dict[str, Any], folder: Path, command: str, map_count: int | None) -> str:
    """submitit's sbatch text for AutoExecutor parameters `params` (generic names and `slurm_*`),
    an array of `map_count` tasks when over 1, running `command`; no SLURM needed."""
    from submitit.slurm import slurm as sl

    names = sl.SlurmExecutor._equivalence_dict()
    args: dict[str, Any] = {}
    for key, value in params.items():
        if key.startswith("slurm_"):
            args[key[len("slurm_"):]] = value
        else:
            args[names[key]] = sl._convert_mem(value) if key == "mem_gb" else value
    if map_count is not None and map_count > 1:
        args["map_count"] = map_count
    return sl._make_sbatch_string(command=command, folder=folder, **args)


def task_path(template: str, job_id: str, task_id: int = 0) -> str:
    """A submitit path template ("%j", "%t", "%A", "%a") for one array task: JobPaths._format_id's rule."""
    replaced = template.replace("%j", job_id).replace("%t", str(task_id))
    array_id, _, index = job_id.partition("_")
    if "%a" in replaced:
        replaced = replaced.replace("%a", index)
    return replaced.replace("%A", array_id)
