"""The grid's `slurm:` section: typed SLURM resources of every job, parsed and validated.

Every problem is recorded in the caller's `errors` list (the grid collects them into one
ConfigError naming the grid file). No torch here: the launcher runs on login nodes.
"""

from __future__ import annotations

import re
import dataclasses
from dataclasses import dataclass, field
from typing import Any

from camvis.config import section_from_dict
from camvis.errors import ConfigError


@dataclass(frozen=True, kw_only=True)
class SlurmSettings:
    """The grid's `slurm:` section: resources of every job of the array (one job = one grid point)."""

    partition: str | None = None
    """Partition (null: the cluster's default); no whitespace or control characters (an #SBATCH line)."""
    account: str | None = None
    """Account charged (null: your default; `sacctmgr show assoc user=$USER` lists yours)."""
    qos: str | None = None
    """Quality of service (null: the account's default)."""
    time: int = 60
    """Time limit per job in minutes, 1 to 525,600 (a year); a job past it checkpoints and is requeued."""
    nodes: int = 1
    """Nodes per job; with several, one process group (DDP) over every task of every node."""
    gpus_per_node: int = 0
    """GPUs per node; one task (DDP rank) per GPU. 0: CPU only."""
    tasks_per_node: int | None = None
    """Ranks per node on CPU-only jobs (null: gpus_per_node, or 1 without GPUs)."""
    cpus_per_task: int = 1
    """CPUs per task (one task per DDP rank)."""
    mem_gb: float | None = None
    """Memory per node in GB (null: the cluster's DefMemPerCPU x CPUs)."""
    array_parallelism: int = 16
    """Jobs of the array that may run at once (sbatch --array=0-N%K); divided over the arrays of a grid
    split past the cluster's MaxArraySize."""
    constraint: str | None = None
    """Node features the jobs need (sbatch --constraint, e.g. a GPU model)."""
    max_requeues: int = 3
    """Time-limit requeues before a job is given up (submitit's max_num_timeout)."""
    signal_delay_s: int = 90
    """Seconds before the time limit at which the job is told to checkpoint (USR2): at most 65,535 (sbatch
    --signal) and below slurm.time x 60."""
    aggregate_time: int = 30
    """Time limit in minutes of the dependent aggregate job, 1 to 525,600."""
    aggregate_partition: str | None = None
    """Partition of the aggregate job (null: the same as the jobs)."""
    additional: dict[str, Any] = field(default_factory=dict)
    """Extra sbatch options, e.g. {reservation: x, mail-type: END}: names of a-z 0-9 - _, scalar values
    without whitespace or control characters (each becomes an #SBATCH --name=value line)."""
    setup: tuple[str, ...] = ()
    """Shell lines run in the job script before the job (module load, venv activate, exports): submitit's
    `setup` parameter, one line each, in order, in the array's and the aggregate job's scripts (--dry-run
    shows them). A newline or another control character in a line is an error."""

    @property
    def ntasks(self) -> int:
        """Tasks per node: one per GPU, else tasks_per_node (default 1)."""
        if self.gpus_per_node:
            return self.gpus_per_node
        return self.tasks_per_node or 1


MAX_TIME_MIN = 365 * 24 * 60
"""Longest time limit accepted (minutes): a year. SLURM keeps minutes in 32 bits, and sites cap far lower
(sinfo's TIMELIMIT); more is a typo such as seconds given as minutes."""
MAX_SIGNAL_DELAY_S = 65535
"""sbatch --signal=SIG@DELAY takes a delay of 0..65535 seconds."""
_SBATCH_STRINGS = ("partition", "account", "qos", "constraint", "aggregate_partition")
_SBATCH_KEY = re.compile(r"[a-z][a-z0-9_-]*")
_UNSAFE = re.compile(r"[\s\x00-\x1f\x7f-\x9f]")  # whitespace or control characters
_CONTROL = re.compile(r"[\x00-\x08\x0a-\x1f\x7f-\x9f]")  # control characters but tab


def sbatch_value_problem(key: str, value: Any) -> str | None:
    """Why `value` cannot be written into an `#SBATCH --key=value` line, or None. sbatch splits those
    lines into words, and a newline would start a line of the script: either injects options or commands."""
    if isinstance(value, str) and _UNSAFE.search(value):
        return f"{key}: whitespace or control characters cannot go into an #SBATCH line, got {value!r}"
    return None


_SLURM_MINIMUM = {"time": 1, "nodes": 1, "gpus_per_node": 0, "tasks_per_node": 1, "cpus_per_task": 1,
                  "mem_gb": 0.001, "array_parallelism": 1, "max_requeues": 0, "signal_delay_s": 0,
                  "aggregate_time": 1}


_DEFAULTS = {f.name: f.default for f in dataclasses.fields(SlurmSettings)}


def parse_slurm_settings(raw: Any, errors: list[str]) -> SlurmSettings:
    """Types by the dataclass's fields (camvis.config.section_from_dict), then SLURM's own ranges."""
    settings = section_from_dict(SlurmSettings, "slurm", raw, errors)
    low = {}
    for key, minimum in _SLURM_MINIMUM.items():
        value = getattr(settings, key)
        if value is not None and value < minimum:
            errors.append(f"slurm.{key}: must be >= {minimum}, got {value}")
            low[key] = _DEFAULTS.get(key)  # as before: a value out of range keeps its default
    settings = dataclasses.replace(settings, **low)
    settings = dataclasses.replace(settings, setup=tuple(_setup_lines(list(settings.setup), errors)))
    if settings.gpus_per_node and settings.tasks_per_node not in (None, settings.gpus_per_node):
        errors.append(f"slurm.tasks_per_node: jobs run one task per GPU, so it must equal gpus_per_node "
                      f"({settings.gpus_per_node}) or be left out, got {settings.tasks_per_node}")
    _check_limits(settings, errors)
    _check_sbatch_text(settings, errors)
    return settings


def _setup_lines(lines: list[Any], errors: list[str]) -> list[str]:
    """The `setup:` lines that are one shell line each: a newline or another control character would
    smuggle a second command (or hide one from --dry-run) in the job script."""
    good = []
    for i, line in enumerate(lines):
        if not isinstance(line, str):
            errors.append(f"slurm.setup[{i}]: expected a shell line (text), got {type(line).__name__} {line!r}")
        elif _CONTROL.search(line):
            what = "a newline (give each command its own list item)" if "\n" in line else "a control character"
            errors.append(f"slurm.setup[{i}]: {what} cannot go into a job script line, got {line!r}")
        else:
            good.append(line)
    return good


def setup_line_problem(key: str, line: Any) -> str | None:
    """Why `line` cannot be a line of the job script, or None (guards Grids built without parsing)."""
    if not isinstance(line, str) or _CONTROL.search(line):
        return f"{key}: expected one shell line without control characters, got {line!r}"
    return None


def _check_limits(s: SlurmSettings, errors: list[str]) -> None:
    for key in ("time", "aggregate_time"):
        if getattr(s, key) > MAX_TIME_MIN:
            errors.append(f"slurm.{key}: at most {MAX_TIME_MIN} minutes (a year), got {getattr(s, key)}")
    if s.signal_delay_s > MAX_SIGNAL_DELAY_S:
        errors.append(f"slurm.signal_delay_s: at most {MAX_SIGNAL_DELAY_S} s (sbatch --signal), got {s.signal_delay_s}")
    elif s.signal_delay_s >= s.time * 60:
        errors.append(f"slurm.signal_delay_s: must be below the time limit (slurm.time={s.time} min = "
                      f"{s.time * 60} s) or the checkpoint signal comes at the start, got {s.signal_delay_s}")


def _check_sbatch_text(s: SlurmSettings, errors: list[str]) -> None:
    for key in _SBATCH_STRINGS:
        problem = sbatch_value_problem(f"slurm.{key}", getattr(s, key))
        if problem:
            errors.append(problem)
    for key, value in s.additional.items():
        where = f"slurm.additional.{key}"
        if not isinstance(key, str) or not _SBATCH_KEY.fullmatch(key):
            errors.append(f"slurm.additional: expected sbatch option names (lowercase letters, digits, - _), "
                          f"got {key!r}")
        elif not isinstance(value, (str, int, float, bool)):
            errors.append(f"{where}: expected a scalar sbatch option value, got {value!r}")
        elif sbatch_value_problem(where, value):
            errors.append(sbatch_value_problem(where, value))


def site_parameters(s: Any) -> dict[str, Any]:
    """The AutoExecutor.update_parameters() arguments every camvis job of these settings shares (the
    arrays' and a store build's): memory, partition, account, qos, constraint, extra options, set-up lines."""
    params: dict[str, Any] = {}
    if s.mem_gb is not None:
        params["mem_gb"] = float(s.mem_gb)
    for key in ("partition", "account", "qos", "constraint"):
        if getattr(s, key) is not None:
            params[f"slurm_{key}"] = getattr(s, key)
    if s.additional:
        params["slurm_additional_parameters"] = dict(s.additional)
    if s.setup:
        params["slurm_setup"] = list(s.setup)  # submitit writes them before the srun line
    return params


def checked_parameters(params: dict[str, Any]) -> dict[str, Any]:
    """`params`, once no value would inject a line or an option into the sbatch script (the settings were
    checked when parsed; this guards every way a Grid or a store build can be made)."""
    for key, value in {**params, **params.get("slurm_additional_parameters", {})}.items():
        problem = None if key == "slurm_setup" else sbatch_value_problem(key, value)
        if problem:
            raise ConfigError(problem)
    for i, line in enumerate(params.get("slurm_setup", [])):
        problem = setup_line_problem(f"slurm.setup[{i}]", line)
        if problem:
            raise ConfigError(problem)
    return params
