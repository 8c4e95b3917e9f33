"""Process-group setup for every way a job runs: one process, torchrun, or SLURM/submitit tasks.

One code path for 1 or N ranks: the environment decides. torchrun sets RANK/WORLD_SIZE
itself; under submitit (SLURM or its local executor) they are exported from the job
environment. NCCL on CUDA, gloo on the CPU.
"""

from __future__ import annotations

import os
import re
import socket
import subprocess
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
        from camvis.job.device import DeviceError, no_cuda_reason

        raise DeviceError(f"train.device=cuda but {no_cuda_reason()}; or use train.device=auto or cpu")
    if preference in ("cuda", "auto") and torch.cuda.is_available():
        return torch.device("cuda", local_rank % torch.cuda.device_count())
    return torch.device("cpu")


def rendezvous_address(node: str) -> str:
    """The address rank 0 listens on, for MASTER_ADDR.

    submitit names the job's first node (from SLURM_JOB_NODELIST). On real clusters node names
    resolve (DNS, /etc/hosts) and the name is kept. Where they do not (several slurmd on one
    machine, some container sites) SLURM's own NodeAddr for that node is used.
    """
    try:
        socket.getaddrinfo(node, None)
        return node
    except OSError:
        pass
    try:
        out = subprocess.run(["scontrol", "show", "node", node], capture_output=True, text=True,
                             timeout=30).stdout
    except (OSError, subprocess.SubprocessError) as e:
        raise ConfigError(f"the job's first node '{node}' does not resolve and `scontrol show node {node}` "
                          f"failed ({e}): set MASTER_ADDR to its address") from e
    match = re.search(r"\bNodeAddr=(\S+)", out)
    if not match:
        raise ConfigError(f"the job's first node '{node}' does not resolve and `scontrol show node {node}` "
                          f"names no NodeAddr: set MASTER_ADDR to its address")
    return match.group(1)


def _export_submitit_env() -> None:
    """Inside a multi-task submitit job, export MASTER_ADDR/PORT, RANK, WORLD_SIZE for env://.

    With overwrite: sites pre-set some of these (MASTER_PORT, LOCAL_RANK, WORLD_SIZE...) and
    submitit refuses to export over them otherwise. A pre-set MASTER_PORT is kept (submitit
    reads it). torchrun sets RANK itself: then nothing is exported.
    """
    if "RANK" in os.environ:
        return
    try:
        import submitit

        job_env = submitit.JobEnvironment()
    except RuntimeError:  # not inside a submitit job
        return
    if job_env.num_tasks > 1:
        torch_env = submitit.helpers.TorchDistributedEnvironment()
        torch_env.master_addr = rendezvous_address(torch_env.master_addr)
        if "MASTER_PORT" not in os.environ:
            torch_env.master_port = master_port(job_env.job_id)
        torch_env.export(set_cuda_visible_devices=False, overwrite=True)


def master_port(job_id: str) -> int:
    """The job's rendezvous port, the same on every rank (seeded by the job id, as submitit's own) but
    below Linux's ephemeral range (32768-60999): submitit draws from 20000-60000, where an outgoing
    connection can hold the port and rank 0 dies with EADDRINUSE while the other ranks wait for it."""
    import random

    return random.Random(f"camvis-{job_id}").randint(20000, 32767)


def setup(device_preference: str = "auto") -> DistEnv:
    """Join the job's process group (if it has more than one rank) and pick this rank's device."""
    _export_submitit_env()
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    device = pick_device(device_preference, local_rank)
    if world_size > 1 and not dist.is_initialized():
        backend = "nccl" if device.type == "cuda" else "gloo"
        extra = {}
        if device.type == "cuda":
            torch.cuda.set_device(device)
            extra["device_id"] = device  # binds NCCL to this GPU at once (no guess, eager init)
        dist.init_process_group(backend=backend, init_method="env://", rank=rank, world_size=world_size, **extra)
    return DistEnv(rank=rank, world_size=world_size, local_rank=local_rank, device=device)


def teardown() -> None:
    if dist.is_initialized():
        dist.destroy_process_group()


def barrier() -> None:
    if dist.is_initialized():
        dist.barrier()

