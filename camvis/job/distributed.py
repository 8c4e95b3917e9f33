"""Process-group setup for every way a job runs: one process, torchrun, or SLURM/submitit tasks.

One code path for 1 or N ranks: the environment decides. torchrun sets RANK/WORLD_SIZE
itself; under submitit (SLURM or its local executor) they are exported from the job
environment. NCCL on CUDA, gloo on the CPU.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist

from camvis.errors import ConfigError


@dataclass(frozen=True)
class DistEnv:
    rank: int
    world_size: int
    local_rank: int
    device: torch.device

    @property
    def is_main(self) -> bool:
        """Only rank 0 writes files, logs and progress."""
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1


def pick_device(preference: str, local_rank: int = 0) -> torch.device:
    """`auto` takes CUDA when there is one; `cuda` without a GPU is an error, not a silent CPU run."""
    if preference == "cuda" and not torch.cuda.is_available():
        raise ConfigError("train.device=cuda but torch sees no CUDA device (use train.device=auto or cpu)")
    if preference in ("cuda", "auto") and torch.cuda.is_available():
        return torch.device("cuda", local_rank % torch.cuda.device_count())
    return torch.device("cpu")


def _export_submitit_env() -> None:
    """Inside a multi-task submitit job, export MASTER_ADDR/PORT, RANK, WORLD_SIZE for env://."""
    if "RANK" in os.environ:
        return
    try:
        import submitit

        job_env = submitit.JobEnvironment()
    except RuntimeError:  # not inside a submitit job
        return
    if job_env.num_tasks > 1:
        submitit.helpers.TorchDistributedEnvironment().export(set_cuda_visible_devices=False)


def setup(device_preference: str = "auto") -> DistEnv:
    """Join the job's process group (if it has more than one rank) and pick this rank's device."""
    _export_submitit_env()
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    device = pick_device(device_preference, local_rank)
    if world_size > 1 and not dist.is_initialized():
        backend = "nccl" if device.type == "cuda" else "gloo"
        if device.type == "cuda":
            torch.cuda.set_device(device)
        dist.init_process_group(backend=backend, init_method="env://", rank=rank, world_size=world_size)
    return DistEnv(rank=rank, world_size=world_size, local_rank=local_rank, device=device)


def teardown() -> None:
    if dist.is_initialized():
        dist.destroy_process_group()


def barrier() -> None:
    if dist.is_initialized():
        dist.barrier()

