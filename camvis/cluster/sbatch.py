"""The grid's SLURM settings as submitit parameters, and the sbatch scripts they make.

One job array (one task per grid point, array_parallelism at once) and one dependent CPU job
that aggregates the experiment. render_sbatch gives submitit's own sbatch text without SLURM,
for dry runs. No torch here: the launcher runs on login nodes.
"""

from __future__ import annotations

import shlex
import sys
from pathlib import Path
from typing import Any

from camvis.errors import ConfigError
from camvis.cluster.grid import Grid, JobSpec
from camvis.cluster.slurm_settings import sbatch_value_problem, setup_line_problem


def executor_parameters(grid: Grid, n_jobs: int) -> dict[str, Any]:
    """AutoExecutor.update_parameters() arguments of the job array."""
    s = grid.slurm
    params: dict[str, Any] = {
        "name": f"camvis-{grid.experiment}",
        "timeout_min": s.time,
        "nodes": s.nodes,
        "tasks_per_node": s.ntasks,  # one task (DDP rank) per GPU
        "cpus_per_task": s.cpus_per_task,
        "slurm_array_parallelism": min(s.array_parallelism, max(n_jobs, 1)),
        "slurm_signal_delay_s": s.signal_delay_s,
    }
    if s.gpus_per_node:
        params["gpus_per_node"] = s.gpus_per_node
    if s.mem_gb is not None:
        params["mem_gb"] = float(s.mem_gb)
    for key in ("partition", "account", "qos", "constraint"):
        if getattr(s, key) is not None:
            params[f"slurm_{key}"] = getattr(s, key)
    if s.additional:
        params["slurm_additional_parameters"] = dict(s.additional)
    if s.setup:
        params["slurm_setup"] = list(s.setup)  # submitit writes them before the srun line
    return _checked(params)


def aggregate_parameters(grid: Grid, array_id: str) -> dict[str, Any]:
    """The dependent aggregate job: one CPU task after every task of the array has ended."""
    s = grid.slurm
    params: dict[str, Any] = {
        "name": f"camvis-{grid.experiment}-aggregate",
        "timeout_min": s.aggregate_time,
        "nodes": 1,
        "tasks_per_node": 1,
        "cpus_per_task": 1,
    }
    partition = s.aggregate_partition or s.partition
    if partition is not None:
        params["slurm_partition"] = partition
    if s.setup:
        params["slurm_setup"] = list(s.setup)  # the aggregate needs the same environment
    for key in ("account", "qos"):
        if getattr(s, key) is not None:
            params[f"slurm_{key}"] = getattr(s, key)
    _checked(params)
    params["slurm_additional_parameters"] = {"dependency": f"afterany:{array_id}"}  # ours: a dry run's is text
    return params


def _checked(params: dict[str, Any]) -> dict[str, Any]:
    """`params`, once no value would inject a line or an option into the sbatch script (the settings were
    checked when parsed; this guards every way a Grid can be built)."""
    for key, value in {**params, **params.get("slurm_additional_parameters", {})}.items():
        problem = None if key == "slurm_setup" else sbatch_value_problem(key, value)
        if problem:
            raise ConfigError(problem)
    for i, line in enumerate(params.get("slurm_setup", [])):
        problem = setup_line_problem(f"slurm.setup[{i}]", line)
        if problem:
            raise ConfigError(problem)
    return params


def job_folder(exp_dir: Path) -> Path:
    return exp_dir / "%j"  # one folder per job: jobs/<exp>/<array>_<task>/ (submitit writes %A_%a)


def drop_unexpanded_folder(exp_dir: Path) -> None:
    """Remove the empty literal `%j` folder that submitit's local job controller makes beside the real
    per-job folders (it mkdirs its folder before expanding %j); never a folder with files in it."""
    try:
        job_folder(exp_dir).rmdir()
    except OSError:  # absent, or not empty: then it holds something, keep it
        pass


def dry_run_scripts(grid: Grid, todo: list[JobSpec], exp_dir: Path) -> dict[str, str]:
    """The sbatch scripts submitit would write for the array and the aggregate job."""
    folder = job_folder(exp_dir)
    return {
        "array": render_sbatch(executor_parameters(grid, len(todo)), folder, len(todo)),
        "aggregate": render_sbatch(aggregate_parameters(grid, "<array id>"), folder, None),
    }


def render_sbatch(params: dict[str, Any], folder: Path, map_count: int | None) -> str:
    """submitit's own sbatch text for AutoExecutor `params`, without needing SLURM here."""
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
    folder = folder.expanduser().absolute()  # as submitit's executors hold it
    command = " ".join([shlex.quote(sys.executable), "-u -m submitit.core._submit", shlex.quote(str(folder))])
    return sl._make_sbatch_string(command=command, folder=folder, **args)
