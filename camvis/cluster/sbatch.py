"""The grid's SLURM settings as submitit parameters, and the sbatch scripts they make.

Job arrays (one task per grid point; several when the grid has more jobs than the cluster's
MaxArraySize allows in one, the throttle array_parallelism shared between them) and one dependent
CPU job that aggregates the experiment. render_sbatch gives submitit's own sbatch text without
SLURM, for dry runs. No torch here: the launcher runs on login nodes.
"""

from __future__ import annotations

import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any, Sequence

from camvis.adapters import submitit_api
from camvis.cluster.array_submit import runner_command
from camvis.cluster.grid import Grid, JobSpec
from camvis.cluster.slurm_settings import checked_parameters, site_parameters


DEFAULT_MAX_ARRAY_SIZE = 1001  # SLURM's default MaxArraySize (indices 0..1000)
_MAX_ARRAY = re.compile(r"^\s*MaxArraySize\s*=\s*(\d+)\s*$", re.MULTILINE)


def max_array_size() -> int:
    """The cluster's MaxArraySize (an array holds at most that many tasks, indices 0..N-1), from
    `scontrol show config`; SLURM's default when scontrol is missing, fails or does not say."""
    if shutil.which("scontrol") is None:
        return DEFAULT_MAX_ARRAY_SIZE
    try:
        proc = subprocess.run(["scontrol", "show", "config"], capture_output=True, text=True, timeout=20)
    except (OSError, subprocess.SubprocessError):
        return DEFAULT_MAX_ARRAY_SIZE
    match = _MAX_ARRAY.search(proc.stdout) if proc.returncode == 0 else None
    return int(match.group(1)) if match and int(match.group(1)) > 0 else DEFAULT_MAX_ARRAY_SIZE


def split_arrays(n_jobs: int, max_size: int) -> list[range]:
    """The jobs' indices cut into consecutive arrays of at most `max_size` tasks."""
    size = max(1, max_size)
    return [range(start, min(start + size, n_jobs)) for start in range(0, n_jobs, size)]


def throttles(parallelism: int, sizes: Sequence[int]) -> list[int]:
    """Each array's %K. SLURM throttles per array, so array_parallelism is divided over the arrays,
    which run side by side: evenly (the first arrays get the remainder), an array never more than
    its tasks (what a small one cannot use goes to the others), at least 1 each. At most
    array_parallelism tasks run at once in all, or one per array when there are more arrays than
    that. A share stays with its array: once an array has ended the others do not take it over."""
    shares, left, rest = [0] * len(sizes), parallelism, list(range(len(sizes)))
    while small := [i for i in rest if sizes[i] * len(rest) <= left]:  # fit in a fair share: all their tasks
        for i in small:
            shares[i], left = sizes[i], left - sizes[i]
        rest = [i for i in rest if i not in small]
    share, extra = divmod(max(left, 0), max(len(rest), 1))
    for n, i in enumerate(rest):
        shares[i] = share + (n < extra)
    return [max(1, k) for k in shares]


def executor_parameters(grid: Grid, n_jobs: int, parallelism: int | None = None) -> dict[str, Any]:
    """AutoExecutor.update_parameters() arguments of one job array of `n_jobs` tasks, `parallelism`
    (default the grid's array_parallelism) at once."""
    s = grid.slurm
    parallelism = s.array_parallelism if parallelism is None else parallelism
    params: dict[str, Any] = {
        "name": f"camvis-{grid.experiment}",
        "timeout_min": s.time,
        "nodes": s.nodes,
        "tasks_per_node": s.ntasks,  # one task (DDP rank) per GPU
        "cpus_per_task": s.cpus_per_task,
        "slurm_array_parallelism": min(parallelism, max(n_jobs, 1)),
        "slurm_signal_delay_s": s.signal_delay_s,
    }
    if s.gpus_per_node:
        params["gpus_per_node"] = s.gpus_per_node
    if s.nodes * s.ntasks > 1:  # one rank that fails ends the others: a rank 0 lost before the rendezvous
        params["slurm_srun_args"] = ["--kill-on-bad-exit=1"]  # would leave them waiting out the time limit
    return checked_parameters({**params, **site_parameters(s)})


def aggregate_parameters(grid: Grid, array_ids: str | Sequence[str]) -> dict[str, Any]:
    """The dependent aggregate job: one CPU task after every task of every array has ended."""
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
    checked_parameters(params)
    after = array_ids if isinstance(array_ids, str) else ":".join(array_ids)
    params["slurm_additional_parameters"] = {"dependency": f"afterany:{after}"}  # ours: a dry run's is text
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


def dry_run_scripts(grid: Grid, todo: list[JobSpec], exp_dir: Path,
                    max_size: int = DEFAULT_MAX_ARRAY_SIZE, after_build: str | None = None) -> dict[str, str]:
    """The sbatch scripts submitit would write: "array" (or "array 1 of N", ... when the jobs are
    split into N arrays of at most `max_size` tasks) and "aggregate"; the arrays wait for the store
    build job `after_build` (its id, or a placeholder) when there is one."""
    from camvis.cluster.store_settings import with_dependency

    folder = job_folder(exp_dir)
    chunks = split_arrays(len(todo), max_size)
    names = ["array"] if len(chunks) == 1 else [f"array {i + 1} of {len(chunks)}" for i in range(len(chunks))]
    scripts = {name: render_sbatch(with_dependency(executor_parameters(grid, len(chunk), k), after_build), folder,
                                   len(chunk))
               for name, chunk, k in zip(names, chunks, throttles(grid.slurm.array_parallelism,
                                                                  [len(c) for c in chunks]))}
    ids = ["<array id>"] if len(chunks) == 1 else [f"<array {i + 1} id>" for i in range(len(chunks))]
    scripts["aggregate"] = render_sbatch(aggregate_parameters(grid, ids), folder, None)
    return scripts


def render_sbatch(params: dict[str, Any], folder: Path, map_count: int | None) -> str:
    """submitit's own sbatch text for AutoExecutor `params`, without needing SLURM here; an array
    runs camvis's task runner (array_submit), a single job submitit's."""
    folder = folder.expanduser().absolute()  # as submitit's executors hold it
    python = shlex.quote(sys.executable)  # submitit's default executor python
    array = map_count is not None and map_count > 1
    command = runner_command(python, folder) if array else submitit_api.job_command(python, folder)
    return submitit_api.sbatch_text(params, folder, command, map_count)
