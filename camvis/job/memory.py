"""Host memory a job needs against what its allocation allows, checked before the pyramid loads.

A job holds the padded pyramid of its levels (uint8 RGB of every image, float32 depth of every
view) in host memory on the CPU; on a GPU only one image's level passes through the host. On
top comes the process itself (Python, torch, the store's table): BASE_BYTES, measured
(benchmarks/bench_memory.py). A job that would not fit its SLURM allocation (SLURM_MEM_PER_NODE,
SLURM_MEM_PER_CPU x CPUs), its cgroup's limit or the node's memory fails at start naming the need,
instead of being killed by the OOM killer mid-epoch.

The model is bounded too, before it is built: its parameters (counted from the architecture,
camvis.bounds.model_need) with their gradients and Adam's two moments, and a lower bound of the activations
one training batch keeps for the backward pass, against the host's memory on the CPU and the GPU's
on CUDA (`model.size_hidden=100000` once tried to allocate 360 GB). A lower bound: never refuses a
job that would fit.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Mapping, Sequence

from camvis.bounds import model_need, node_memory
from camvis.errors import CamvisError

BASE_BYTES = 1 << 30
"""The process without the pyramid: 0.27 GiB measured after imports, 0.5-0.6 GiB while training
the paper model on the CPU at batch 64 (activations come on top on the CPU): 1 GiB is the margin."""
MIB = 1 << 20
CGROUP = Path("/sys/fs/cgroup")


class MemoryAllocationError(CamvisError):
    """The job's memory allocation is smaller than what it needs."""


def pyramid_bytes(padded_shapes: Sequence[tuple[int, int]], n_images: int, n_views: int) -> int:
    """Bytes of the padded pyramid: 3 uint8 per image pixel, 1 float32 per view pixel, every level."""
    return sum((3 * n_images + 4 * n_views) * h * w for h, w in padded_shapes)


def padded_shapes(store, factors: Sequence[int]) -> list[tuple[int, int]]:
    """Each level's (rows, columns) with at most a patch of padding (BatchSource pads less)."""
    p = store.patch_size
    return [(int(store.levels[f][0].shape[2]) + p, int(store.levels[f][0].shape[3]) + p)
            for f in factors if f in store.levels]  # a missing level is BatchSource's error


def check_job(store, factors: Sequence[int], on_gpu: bool, environ: Mapping[str, str] = os.environ,
              cgroup: Path = CGROUP) -> int:
    """The job's host need (bytes), checked against its allocation before anything is loaded."""
    shapes = padded_shapes(store, factors)
    need = host_need(shapes, len(store.images), len(store.views), on_gpu)
    pyramid = pyramid_bytes(shapes, len(store.images), len(store.views))
    where = "on the GPU" if on_gpu else "in host memory"
    check_fits(need, f"the pyramid of {store.path} at factors {list(factors)}: {pyramid / (1 << 30):.1f} GiB "
                     f"{where}, + {BASE_BYTES / (1 << 30):.1f} GiB for the process", environ, cgroup)
    return need


def check_model(cfg, patch_size: int, device, environ: Mapping[str, str] = os.environ,
                cgroup: Path = CGROUP, patches: int | None = None) -> int:
    """MemoryAllocationError naming the key (model.size_hidden or train.batch_size) when the model and one
    training batch cannot fit the GPU's memory (CUDA) or the host's (allocation, cgroup, node), before the
    model is built. `patches`: the store's patch count, which caps a batch."""
    on_gpu = getattr(device, "type", None) == "cuda"
    need, params, activations = model_need(cfg, patch_size, on_gpu, patches)
    key = (f"model.size_hidden={cfg.model.size_hidden}" if 16 * params >= activations
           else f"train.batch_size={cfg.train.batch_size}")
    what = (f"{key}: {params:,} parameters, {16 * params / (1 << 30):.1f} GiB with gradients and Adam's moments, "
            f"+ at least {activations / (1 << 30):.1f} GiB of activations per batch of {cfg.train.batch_size}")
    fix = "lower model.size_hidden" if key.startswith("model.") else "lower train.batch_size"
    if on_gpu:
        import torch

        total = torch.cuda.get_device_properties(device).total_memory
        if need > total:
            raise MemoryAllocationError(f"this job needs at least {need / (1 << 30):.1f} GiB on the GPU ({what}) but "
                                        f"{torch.cuda.get_device_name(device)} has {total / (1 << 30):.1f} GiB: {fix}")
        return need
    check_fits(BASE_BYTES + need, what, environ, cgroup, fix=fix)
    return need


def host_need(padded_shapes: Sequence[tuple[int, int]], n_images: int, n_views: int, on_gpu: bool) -> int:
    """Host bytes the job needs: the process, and the pyramid unless it lives on the GPU."""
    if on_gpu:  # one image's level at a time passes through the host
        return BASE_BYTES + max(3 * h * w for h, w in padded_shapes)
    return BASE_BYTES + pyramid_bytes(padded_shapes, n_images, n_views)


def allocation(environ: Mapping[str, str] = os.environ, cgroup: Path = CGROUP) -> tuple[int, str] | None:
    """(bytes, where it comes from) of the smallest limit on this process's memory, None if none."""
    limits = []
    if environ.get("SLURM_MEM_PER_NODE", "").isdigit():
        limits.append((int(environ["SLURM_MEM_PER_NODE"]) * MIB, f"SLURM_MEM_PER_NODE={environ['SLURM_MEM_PER_NODE']}"))
    if environ.get("SLURM_MEM_PER_CPU", "").isdigit():
        cpus = next((environ[k] for k in ("SLURM_CPUS_PER_TASK", "SLURM_CPUS_ON_NODE") if environ.get(k, "").isdigit()),
                    "1")
        limits.append((int(environ["SLURM_MEM_PER_CPU"]) * MIB * int(cpus),
                       f"SLURM_MEM_PER_CPU={environ['SLURM_MEM_PER_CPU']} x {cpus} CPUs"))
    for path in (cgroup / "memory.max", cgroup / "memory" / "memory.limit_in_bytes"):
        value = _read(path)
        if value is not None and value.isdigit() and int(value) < 1 << 60:  # v1 writes a huge number for none
            limits.append((int(value), f"the cgroup limit {path}"))
    node = node_memory()
    if node is not None:
        limits.append((node, "this node's memory"))
    return min(limits) if limits else None


def check_fits(need: int, what: str, environ: Mapping[str, str] = os.environ, cgroup: Path = CGROUP,
               fix: str = "use fewer data.factors") -> None:
    """MemoryAllocationError if `need` bytes exceed the allocation (none known: nothing to check)."""
    limit = allocation(environ, cgroup)
    if limit is None or need <= limit[0]:
        return
    gib = need / (1 << 30)
    node = node_memory()
    more = (f"raise the grid's slurm.mem_gb to at least {gib * 1.2:.0f} (20 % margin)"
            if node is None or need * 1.2 <= node else "run on a node with more memory")
    raise MemoryAllocationError(
        f"this job needs about {gib:.1f} GiB of host memory ({what}) but its allocation is "
        f"{limit[0] / (1 << 30):.1f} GiB ({limit[1]}): {more}, or {fix}")


def _read(path: Path) -> str | None:
    try:
        return path.read_text().strip()
    except OSError:
        return None
