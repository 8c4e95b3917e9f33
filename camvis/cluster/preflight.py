"""What a launch checks before it submits anything: every job's store exists, is a camvis store this
camvis reads and has the job's fold, factors and a usable patch size; the outputs and jobs folders
can be written. A problem found here costs a second; found by the jobs, it costs a queue wait each.

Reads store metadata only (camvis.data.store_info, no zarr, no torch): the launcher must start fast.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Callable, Mapping, Sequence

from camvis.bounds import model_need, node_memory
from camvis.cluster.grid import JobSpec
from camvis.cluster.slurm_settings import SlurmSettings
from camvis.data.store_info import StoreInfo, patch_count

GIB = 1 << 30


def problems(jobs: Sequence[JobSpec], outputs: str | Path, jobs_dir: str | Path, experiment: str,
             to_build: Mapping[str, StoreInfo | None] | None = None) -> list[str]:
    """Every problem, one line each (empty: good to go). `to_build`: stores not built yet that a build job
    will make (camvis.cluster.store_job), -> what they will hold (None: checked by the build plan)."""
    out: list[str] = []
    stores = StoreInfo.cache()
    by_store: dict[str, list[JobSpec]] = {}
    for job in jobs:
        by_store.setdefault(job.config.data.store, []).append(job)
    for store, specs in by_store.items():
        if to_build is not None and store in to_build:
            out += _expected_problems(to_build[store], specs)
        else:
            out += _store_problems(store, specs, stores)
    for what, folder in (("--outputs", Path(outputs) / experiment), ("--jobs-dir", Path(jobs_dir) / experiment)):
        problem = writable_problem(folder)
        if problem:
            out.append(f"{what}: {problem}")
    return out


def _store_problems(store: str, jobs: list[JobSpec], stores: Callable[..., StoreInfo | None]) -> list[str]:
    if not Path(store).exists():
        return [f"data.store: {store} does not exist (jobs {_names(jobs)}); build it with "
                f"camvis-data build RAW_DIR {store}, or point data.store=... at a built store"]
    errors: list[str] = []
    info = stores(store, errors)
    if info is None:
        return errors
    for job in jobs:
        info.check(job.config, f"job {job.name}", errors)
    factors = {f for job in jobs for f in job.config.data.factors}
    return errors + info.problems(factors)


def _expected_problems(info: StoreInfo | None, jobs: list[JobSpec]) -> list[str]:
    """A store still to be built: folds and factors against what the build will write; its levels'
    arrays are the jobs' to find."""
    if info is None:
        return []
    errors: list[str] = []
    for job in jobs:
        info.check(job.config, f"job {job.name} (store to be built)", errors)
    return errors + info.problems(set())


def memory_problems(jobs: Sequence[JobSpec], slurm: SlurmSettings, mode: str,
                    patch_sizes: Mapping[str, object]) -> list[str]:
    """slurm.mem_gb against this machine for a run here (--local, --debug); each distinct model with one
    training batch per rank (camvis.bounds.model_need, a lower bound) against slurm.mem_gb, or this
    machine's memory here, for jobs on the CPU. GPU jobs are checked at start, against their GPU."""
    out: list[str] = []
    node = node_memory() if mode in ("local", "debug") else None
    if node is not None and slurm.mem_gb is not None and slurm.mem_gb * GIB > node:
        out.append(f"slurm.mem_gb={slurm.mem_gb:g}: more than this machine has ({node / GIB:.1f} GiB) for a "
                   f"--{mode} run")
    limits = [(slurm.mem_gb * GIB, f"slurm.mem_gb={slurm.mem_gb:g}")] if slurm.mem_gb is not None else []
    limits += [(node, f"this machine's {node / GIB:.1f} GiB")] if node is not None else []
    if not limits:
        return out
    limit, source = min(limits)
    seen: set[tuple[object, ...]] = set()
    for job in jobs:
        cfg, patch = job.config, patch_sizes.get(job.config.data.store)
        on_gpu = slurm.gpus_per_node > 0 and cfg.train.device != "cpu"
        key = (cfg.model, cfg.train.batch_size, len(cfg.data.factors), cfg.data.store)
        if on_gpu or not isinstance(patch, int) or patch < 4 or key in seen:
            continue
        seen.add(key)
        count = patch_count(cfg.data.store)  # None (a store to be built): one sample, still a lower bound
        need, params, activations = model_need(cfg, patch, False, 1 if count is None else count)
        need *= slurm.ntasks  # without the process itself: a lower bound, never a false refusal
        if need > limit:
            name = (f"model.size_hidden={cfg.model.size_hidden}" if 16 * params >= activations
                    else f"train.batch_size={cfg.train.batch_size}")
            out.append(f"{name} (job {job.name}): {slurm.ntasks} rank(s) need at least {need / GIB:.1f} GiB "
                       f"(model {params:,} parameters and one batch) on the CPU, more than {source}")
    return out


def _names(jobs: list[JobSpec], most: int = 4) -> str:
    names = [j.name for j in jobs]
    return ", ".join(names[:most]) + (f" and {len(names) - most} more" if len(names) > most else "")


def writable_problem(folder: Path) -> str | None:
    """None when `folder` exists and can be written, or could be created; else why not."""
    existing = folder
    while not existing.exists():
        if existing.parent == existing:
            break
        existing = existing.parent
    if existing.exists() and not existing.is_dir():
        return f"{existing} is a file, not a folder ({folder} cannot be made)"
    if not os.access(existing, os.W_OK | os.X_OK):
        verb = "written" if existing == folder else "made"
        return f"{existing} is not writable by this user ({folder} cannot be {verb})"
    return None


def message(found: list[str]) -> str:
    """One error for every problem: a launch submits nothing while any is left."""
    if len(found) == 1:
        return f"preflight: {found[0]}; nothing submitted"
    return f"preflight: {len(found)} problems, nothing submitted:\n  " + "\n  ".join(found)
