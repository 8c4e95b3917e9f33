"""What a job cost, recorded in its scores.json at the end: wall time per phase (this attempt's: a requeued
job's earlier attempts are not added), peak host memory and, on CUDA, peak device memory.

Written by rank 0 after the evaluation, by rewriting scores.json atomically with the extra keys: the file is
complete at every moment, and its presence still means the job is finished.
"""

from __future__ import annotations

import resource
import sys
from pathlib import Path
from typing import Any

from camvis.io import write_json
from camvis.jobdir import SCORES


def peak_host_mem_gb() -> float:
    """This process's peak resident memory (ru_maxrss: KiB on Linux, bytes on macOS)."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / 1e9 if sys.platform == "darwin" else peak * 1024 / 1e9


def peak_device_mem_gb(device: Any) -> float | None:
    import torch

    if getattr(device, "type", None) != "cuda":
        return None
    return torch.cuda.max_memory_allocated(device) / 1e9


def record(job_dir: Path, scores: dict[str, Any], seconds: dict[str, float], device: Any,
           startup: dict[str, Any] | None = None) -> dict[str, Any]:
    """`scores` with `timing` ({load_s, train_s, evaluate_s}), the peak memories and `startup` (the
    start's phases, camvis.job.startup), written to scores.json."""
    extra: dict[str, Any] = {"timing": {k: round(v, 3) for k, v in seconds.items()},
                             "peak_host_mem_gb": round(peak_host_mem_gb(), 4)}
    if startup is not None:
        extra["startup"] = {k: round(v, 3) if isinstance(v, float) else v for k, v in startup.items()}
    device_gb = peak_device_mem_gb(device)
    if device_gb is not None:
        extra["peak_device_mem_gb"] = round(device_gb, 4)
    scores = {**scores, **extra}
    write_json(Path(job_dir) / SCORES, scores)
    return scores
