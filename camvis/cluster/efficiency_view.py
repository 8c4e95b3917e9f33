"""camvis-status's efficiency column and its warnings: how well each job used what it asked for.

SLURM's accounting first (sacct, once a job has ended: TotalCPU and MaxRSS are only complete then;
camvis.bookkeeping.usage), else the job's own figures (scores.json when finished, else progress.json, written every
epoch by camvis.job.efficiency), against the request the manifest recorded for its launch. Memory is per node in
GB as SLURM counts them (1024^3 bytes, what slurm.mem_gb asks). No torch here: this runs on a login node.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

from camvis.bookkeeping.slurm_query import FAILED_STATES, TERMINAL_STATES
from camvis.bookkeeping.usage import GIB
from camvis.bookkeeping.jobfolder import as_number
from camvis.bookkeeping.status import ExperimentStatus, JobStatus, count_or, requested


MEM_USED_BELOW = 0.25  # of the memory asked
GPU_UTIL_BELOW = 20.0  # mean utilisation, %
CPU_EFFICIENCY_BELOW = 0.25
LISTED = 3  # jobs named one per line; more with the same warning make one line


@dataclass(frozen=True)
class Efficiency:
    cpu: float | None = None  # CPU time / (wall x CPUs)
    cpus: int | None = None
    mem_used_gb: float | None = None  # per node
    mem_asked_gb: float | None = None
    gpus: int = 0
    gpu_util: float | None = None  # mean %, rank 0's GPU while training
    final: bool = False  # the job has ended: its figures will not change
    cpus_per_task: int | None = None  # what slurm.cpus_per_task asked; None: not a SLURM launch (local, debug)


def of_job(job: JobStatus, resources: dict[str, Any] | None = None) -> Efficiency:
    """One job's figures: sacct's for an ended job where it has them, else the job's own."""
    final = job.finished or job.state in TERMINAL_STATES
    usage = job.slurm.usage if job.slurm is not None and final else None
    own = (job.scores if job.finished else None) or job.progress or {}
    cpus, gpus, asked = requested(resources)
    cpu = usage.cpu_efficiency if usage is not None else None
    if cpu is None:
        cpu = as_number(own.get("cpu_efficiency"))
        cpus = cpus or _positive(own.get("threads"))
    used = usage.mem_used / GIB if usage is not None and usage.mem_used else None
    if used is None and as_number(own.get("peak_host_mem_gb")) is not None:  # rank 0's: x ranks per node
        ranks = count_or((resources or {}).get("ranks_per_node"))
        used = as_number(own.get("peak_host_mem_gb")) * 1e9 / GIB * ranks
    if usage is not None:
        cpus, gpus = usage.cpus or cpus, usage.gpus or gpus
        asked = usage.mem_asked / GIB if usage.mem_asked else asked
    per_task = count_or((resources or {}).get("cpus_per_task")) if requested(resources)[0] is not None else None
    return Efficiency(cpu, cpus, used, asked, gpus, as_number(own.get("gpu_util_mean")), final, per_task)


def _positive(value: Any) -> int | None:
    number = as_number(value)
    return int(number) if number is not None and number >= 1 else None


def cell(e: Efficiency) -> str:
    """'gpu 45% · cpu 87% · 1.2/8 GB'; what is unknown is left out, '-' when nothing is known."""
    parts = [f"gpu {e.gpu_util:.0f}%"] if e.gpu_util is not None else []
    parts += [f"cpu {e.cpu:.0%}"] if e.cpu is not None else []
    if e.mem_used_gb is not None:
        asked = f"/{gb(e.mem_asked_gb)}" if e.mem_asked_gb is not None else ""
        parts.append(f"{e.mem_used_gb:.1f}{asked} GB")
    return " · ".join(parts) or "-"


def gb(value: float) -> str:
    """A request as it was asked: 8, 0.5, 1024 (never 1.02e+03)."""
    return f"{value:.0f}" if value >= 100 else f"{value:.3g}"


def warnings(status: ExperimentStatus) -> list[str]:
    """Jobs far below their request: memory used under a quarter of it (ended jobs: a running one may still
    grow), a GPU job's GPU mostly idle, CPUs mostly idle. One line per job, or one per kind for many jobs.
    A failed, cancelled or timed-out job is left out: it may have stopped before it needed what it asked for."""
    kinds: dict[str, list[tuple[str, Efficiency]]] = {"mem": [], "gpu": [], "cpu": []}
    for job in status.jobs:
        if job.state in FAILED_STATES and not job.finished:
            continue
        e = of_job(job, status.resources.get(job.info.name))
        if e.final and e.mem_used_gb is not None and e.mem_asked_gb and e.mem_used_gb < MEM_USED_BELOW * e.mem_asked_gb:
            kinds["mem"].append((job.info.name, e))
        if e.gpu_util is not None and e.gpu_util < GPU_UTIL_BELOW:  # sampled on CUDA only: a GPU job
            kinds["gpu"].append((job.info.name, e))
        # one CPU mostly idle cannot be asked for less: only a job with several CPUs is warned
        if e.cpu is not None and e.cpu < CPU_EFFICIENCY_BELOW and (e.cpus or 1) > 1:
            kinds["cpu"].append((job.info.name, e))
    return [line for kind, jobs in kinds.items() if jobs for line in _lines(kind, jobs)]


def _lines(kind: str, jobs: Sequence[tuple[str, Efficiency]]) -> list[str]:
    if len(jobs) <= LISTED:
        return [f"{name}: {_what(kind, [e])}" for name, e in jobs]
    names = ", ".join(name for name, _ in jobs[:LISTED])
    return [f"{len(jobs)} jobs ({names} and {len(jobs) - LISTED} more): {_what(kind, [e for _, e in jobs])}"]


def _what(kind: str, es: Sequence[Efficiency]) -> str:
    """What is wrong and the setting to change, for one job or the worst of several."""
    most = "at most " if len(es) > 1 else ""
    if kind == "mem":
        asked = max(e.mem_asked_gb or 0.0 for e in es)
        used = max(e.mem_used_gb or 0.0 for e in es)
        return f"asked {gb(asked)} GB, used {most}{used:.1f} GB: lower slurm.mem_gb"
    if kind == "gpu":
        util = max(e.gpu_util or 0.0 for e in es)
        return (f"GPU idle, mean utilisation {most}{util:.0f}%: raise train.batch_size, or train on CPUs "
                f"(slurm.gpus_per_node=0)")
    cpu = max(e.cpu or 0.0 for e in es)
    cpus = max(e.cpus or 1 for e in es)
    return f"CPU efficiency {most}{cpu:.0%} of {cpus} CPUs: {_cpu_advice(es)}"


def _cpu_advice(es: Sequence[Efficiency]) -> str:
    """Only a setting that can still be lowered: slurm.cpus_per_task above 1; a local or debug run's threads
    (its CPUs are this machine's, not slurm.cpus_per_task's); else the ranks wait on something else."""
    asked = [e.cpus_per_task for e in es]
    if any(a is not None and a > 1 for a in asked):
        return "lower slurm.cpus_per_task"
    if any(a is None for a in asked):
        return "a local or debug run: fewer threads per job (CAMVIS_NUM_THREADS) or more jobs at once"
    return "slurm.cpus_per_task is 1 already: the ranks wait on data or I/O, not on their CPU"
