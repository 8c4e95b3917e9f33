"""The device a job trains on, said honestly.

A job whose allocation holds GPUs (SLURM_GPUS_ON_NODE, SLURM_JOB_GPUS/SLURM_STEP_GPUS, or its grid's
slurm.gpus_per_node) but whose torch sees no CUDA device (a CPU-only wheel, a driver or visibility
problem) stops at start with one line naming torch's build and the fix, instead of training on the
CPU under `train.device: auto` until its time limit. `train.device: cpu` on such an allocation is
allowed and said. What the job trains on (`describe`) goes to the log's first lines, progress.json,
scores.json, the TensorBoard hparams and camvis-status (camvis.cluster.monitor.device_cell).
"""

from __future__ import annotations

import os
import platform
from pathlib import Path
from typing import Any, Mapping

from camvis.errors import ConfigError

GPU_VARIABLES = ("SLURM_GPUS_ON_NODE", "SLURM_STEP_GPUS", "SLURM_JOB_GPUS")
NVIDIA_VERSION = Path("/proc/driver/nvidia/version")


class DeviceError(ConfigError):
    """The job's allocation holds GPUs that torch cannot use (or train.device=cuda without one)."""


def allocated_gpus(environ: Mapping[str, str] = os.environ, grid_gpus: int = 0) -> tuple[int, str] | None:
    """(GPUs this node's allocation holds, where that is said), None for none."""
    for key in GPU_VARIABLES:
        value = environ.get(key, "").strip()
        if key == "SLURM_GPUS_ON_NODE":
            count = int(value) if value.isdigit() else 0
        else:  # a list of GPU indices, "0,1"; "" or "(null)" for none
            count = len([g for g in value.split(",") if g.strip() and g.strip() != "(null)"])
        if count > 0:
            return count, f"{key}={value}"
    return (grid_gpus, f"slurm.gpus_per_node={grid_gpus}") if grid_gpus > 0 else None


def no_cuda_reason() -> str:
    """Why torch sees no CUDA device, and the fix (without the 'or train.device: cpu' alternative)."""
    import torch

    version = torch.__version__.split("+")[0]
    if torch.version.cuda is None:
        return (f"torch {torch.__version__} is a CPU-only build (torch.version.cuda is None): install the CUDA "
                f"build of torch=={version} (pip install torch=={version} --index-url "
                f"https://download.pytorch.org/whl/<cuXYZ>)")
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    return (f"torch {torch.__version__} (CUDA {torch.version.cuda}) sees no CUDA device: a driver or visibility "
            f"problem (check nvidia-smi on the node"
            + (f"; CUDA_VISIBLE_DEVICES={visible!r}" if visible is not None else "") + ")")


def check(preference: str, grid_gpus: int = 0, environ: Mapping[str, str] = os.environ) -> str | None:
    """DeviceError when the allocation holds GPUs torch cannot use (unless train.device: cpu);
    the line to log when train.device: cpu runs on a GPU allocation; else None."""
    import torch

    held = allocated_gpus(environ, grid_gpus)
    if held is None or torch.cuda.is_available():
        return None
    count, source = held
    gpus = f"{count} GPU{'s' if count != 1 else ''} ({source})"
    if preference == "cpu":
        return f"train.device: cpu on an allocation holding {gpus}: training on the CPU, as configured"
    raise DeviceError(f"the job's allocation holds {gpus} but {no_cuda_reason()}; or set train.device: cpu "
                      f"to train on the CPU (train.device is {preference})")


def describe(device: Any, world_size: int = 1, allocated: tuple[int, str] | None = None) -> dict[str, Any]:
    """What the job trains on: type, name, count (one device per rank), CUDA (torch's build) and
    driver version where known, torch's version, and the GPUs the allocation held."""
    import torch

    on_cuda = getattr(device, "type", None) == "cuda"
    info: dict[str, Any] = {
        "type": "cuda" if on_cuda else "cpu",
        "name": torch.cuda.get_device_name(device) if on_cuda else cpu_name(),
        "count": world_size,
        "cuda": torch.version.cuda,
        "driver": driver_version() if on_cuda else None,
        "torch": torch.__version__,
    }
    if allocated is not None:
        info["allocated_gpus"] = allocated[0]
    return info


def log_line(info: Mapping[str, Any]) -> str:
    """The job log's line: `device: cuda NVIDIA H100 x 2 (CUDA 12.4, driver 550.54.15, torch 2.5.1)`."""
    build = f"CUDA {info['cuda']}" if info.get("cuda") else "CPU-only torch"
    driver = f", driver {info['driver']}" if info.get("driver") else ""
    return (f"device: {info['type']} {info['name']} x {info['count']} ({build}{driver}, "
            f"torch {info.get('torch')})")


def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "cpu"


def driver_version() -> str | None:
    """The NVIDIA kernel driver's version (from /proc, else NVML), None where unknown."""
    try:
        text = NVIDIA_VERSION.read_text()
        for word in text.split():
            if word[:1].isdigit() and word.count(".") >= 1:
                return word
    except OSError:
        pass
    try:
        import pynvml  # nvidia-ml-py, optional

        pynvml.nvmlInit()
        version = pynvml.nvmlSystemGetDriverVersion()
        return version.decode() if isinstance(version, bytes) else str(version)
    except Exception:  # no NVML: unknown, never a failed job
        return None
