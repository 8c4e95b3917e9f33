"""What a compute node sees, for `camvis-doctor --on-node` (runs in the job, on the node; imports torch).

One (name, value) pair per line: host, CPUs, memory, GPUs, torch.cuda.is_available(), CUDA, driver,
NCCL, bf16, node-local scratch and its free space. A GPU part without a GPU says "no GPU".
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess

SCRATCH_VARS = ("SLURM_TMPDIR", "TMPDIR", "LOCAL_SCRATCH", "SCRATCH")


def node_report() -> list[tuple[str, str]]:
    import torch

    lines = [("host", socket.gethostname()), ("cpus", str(len(os.sched_getaffinity(0)))),
             ("memory", _memory()), ("torch", torch.__version__)]
    available = torch.cuda.is_available()
    lines.append(("torch.cuda.is_available()", str(available)))
    lines.append(("gpus", ", ".join(torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count()))
                  if available else f"no GPU (CUDA_VISIBLE_DEVICES={os.environ.get('CUDA_VISIBLE_DEVICES', 'unset')})"))
    lines.append(("cuda", f"{torch.version.cuda} (torch's build)" if torch.version.cuda else "no GPU: a CPU-only torch"))
    lines.append(("driver", _driver()))
    nccl = ".".join(map(str, torch.cuda.nccl.version())) if available and hasattr(torch.cuda, "nccl") else None
    lines.append(("nccl", nccl or "no GPU"))
    lines.append(("bf16", str(torch.cuda.is_bf16_supported()) if available else "no GPU (CPU autocast only)"))
    lines.append(("scratch", _scratch()))
    return lines


def _memory() -> str:
    slurm = os.environ.get("SLURM_MEM_PER_NODE")
    available = None
    try:
        with open("/proc/meminfo") as f:
            info = dict(line.split(":", 1) for line in f)
        available = int(info["MemAvailable"].split()[0]) / 2**20
    except (OSError, KeyError, ValueError):
        pass
    node = f"{available:.1f} GiB available on the node" if available is not None else "node memory unknown"
    return f"{int(slurm) / 1024:.1f} GiB allocated by SLURM; {node}" if slurm and slurm.isdigit() else node


def _driver() -> str:
    if shutil.which("nvidia-smi") is None:
        return "no GPU (no nvidia-smi)"
    try:
        out = subprocess.run(["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"],
                             capture_output=True, text=True, timeout=10).stdout.split()
    except (OSError, subprocess.SubprocessError):
        out = []
    return out[0] if out else "no GPU (nvidia-smi lists none)"


def _scratch() -> str:
    for name in SCRATCH_VARS:
        folder = os.environ.get(name)
        if folder and os.path.isdir(folder):
            free = shutil.disk_usage(folder).free / 1e9
            return f"${name}={folder}: {free:,.1f} GB free (data.stage: ${name})"
    return f"no node-local scratch variable set ({', '.join('$' + v for v in SCRATCH_VARS)}); data.stage needs one"
