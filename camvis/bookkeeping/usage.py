"""What a SLURM job used against what it asked for, from sacct's accounting fields (TotalCPU, AllocCPUS,
Elapsed, ReqMem, MaxRSS, NNodes, NTasks, AllocTRES), as `seff` reads them.

sacct's own formats: times are [DD-][HH:]MM:SS[.mmm] (Elapsed `1-02:03:04`, TotalCPU `00:05.240`);
memory a number with a K/M/G/T/P suffix in powers of 1024 (`382240K`, `2G`), where ReqMem may end in
`n` (per node) or `c` (per CPU) on SLURM before 21.08. MaxRSS is recorded per step (`.batch`, `.0`), not on
the job's line: the largest task of the step. TotalCPU is only added up when a step ends, and MaxRSS only once
the accounting plugin has polled the step (JobAcctGatherFrequency, 30 s by default): a running job has none,
a job shorter than one poll may have no MaxRSS. No torch here: this runs on a login node.
"""

from __future__ import annotations

import dataclasses
import math
import re
from dataclasses import dataclass
from typing import Sequence

GIB = 1024**3  # SLURM's G (and submitit's mem_gb) is 1024^3 bytes
_UNITS = {"": 1, "K": 1024, "M": 1024**2, "G": 1024**3, "T": 1024**4, "P": 1024**5}
_MEMORY = re.compile(r"^(?P<value>\d+(?:\.\d+)?)(?P<unit>[KMGTP]?)(?P<per>[nc]?)$", re.IGNORECASE)
_GPUS = re.compile(r"gres/gpu(?::[^=,]+)?=(\d+)")


def duration_s(text: str | None) -> float | None:
    """sacct's time ([DD-][HH:]MM:SS[.mmm]) in seconds: '1-02:03:04' -> 93784, '00:05.240' -> 5.24;
    None when empty or unreadable ('INVALID', 'UNLIMITED', 'Partition_Limit')."""
    text = (text or "").strip()
    days, _, clock = text.rpartition("-")
    parts = clock.split(":")
    if not clock or len(parts) > 3 or (days and not days.isdigit()):
        return None
    try:
        values = [float(p) for p in parts]
    except ValueError:
        return None
    if any(not math.isfinite(v) or v < 0 for v in values):
        return None
    seconds = sum(v * 60**i for i, v in enumerate(reversed(values)))
    return seconds + (int(days) * 86400 if days else 0)


def memory_bytes(text: str | None, default_unit: str = "") -> tuple[float, str] | None:
    """sacct's memory ('382240K', '2G', '2862M', '4Gn', '500Mc') -> (bytes, '' | 'n' | 'c'); a bare number
    is in `default_unit` (MaxRSS: bytes; ReqMem: M). None when empty or unreadable."""
    match = _MEMORY.match((text or "").strip())
    if match is None:
        return None
    unit = (match["unit"] or default_unit).upper()
    return float(match["value"]) * _UNITS[unit], match["per"].lower()


def gpus(tres: str | None) -> int:
    """GPUs of an AllocTRES field ('billing=1,cpu=1,gres/gpu=2,...' -> 2; typed 'gres/gpu:a100=2' alike)."""
    return max((int(n) for n in _GPUS.findall(tres or "")), default=0)


@dataclass(frozen=True)
class Usage:
    """One attempt of one job, as sacct accounts it. Memory per node, in bytes: asked (ReqMem over the job's
    nodes) and used (the largest step's largest task times its tasks per node: what the node held)."""

    elapsed_s: float | None = None
    total_cpu_s: float | None = None
    cpus: int | None = None
    nodes: int | None = None
    gpus: int = 0
    mem_asked: float | None = None
    mem_used: float | None = None

    @property
    def cpu_efficiency(self) -> float | None:
        """TotalCPU / (Elapsed x AllocCPUS), as seff computes it; None before the job has a CPU total."""
        if not self.total_cpu_s or not self.elapsed_s or not self.cpus:
            return None
        return self.total_cpu_s / (self.elapsed_s * self.cpus)


def job_usage(values: dict[str, str]) -> Usage:
    """The job line's part: times, CPUs, nodes, GPUs and the memory asked per node."""
    cpus, nodes = _int(values.get("AllocCPUS")), _int(values.get("NNodes")) or 1
    asked = memory_bytes(values.get("ReqMem"), default_unit="M")
    per_node = None
    if asked is not None and asked[0] > 0:
        amount, per = asked
        per_node = amount * (cpus or 1) / nodes if per == "c" else amount if per == "n" else amount / nodes
    return Usage(elapsed_s=duration_s(values.get("Elapsed")), total_cpu_s=duration_s(values.get("TotalCPU")),
                 cpus=cpus, nodes=nodes, gpus=gpus(values.get("AllocTRES")), mem_asked=per_node)


def step_memory(max_rss: str, tasks: str = "", nodes: str = "") -> float | None:
    """A step's memory per node: MaxRSS (its largest task) x tasks per node; None when not polled."""
    rss = memory_bytes(max_rss)
    if rss is None or rss[0] <= 0:
        return None
    return rss[0] * math.ceil((_int(tasks) or 1) / (_int(nodes) or 1))


def attempt_usage(job: dict[str, str], steps: Sequence[tuple[str, str, str]] = ()) -> Usage:
    """An attempt's usage: its job line (`job`: field -> value) and the (MaxRSS, NTasks, NNodes) of its steps."""
    usage = job_usage(job)
    memory = [m for m in (step_memory(*step) for step in steps) if m is not None]
    return dataclasses.replace(usage, mem_used=max(memory)) if memory else usage


def _int(text: str | None) -> int | None:
    text = (text or "").strip()
    return int(text) if text.isdigit() else None
