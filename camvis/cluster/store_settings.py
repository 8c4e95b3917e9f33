"""The grid's `store:` section: how the base's data.store is made when it is missing.

    store:
      raw: data/raw                 # camvis2's raw layout (camvis-data check)
      preprocessing: exact          # or camvis2
      factors: [2, 4, 8, 16, 32]    # default: every factor the grid's jobs use
      patch_size: 128
      patches_per_image: 500
      seed: 0
      workers: 8                    # default: the build job's CPUs
      slurm: {time: 60, cpus_per_task: 8, mem_gb: 16}

camvis-launch submits the build as one SLURM job when data.store does not exist and makes the job
arrays wait for it (camvis.cluster.store_job). The build job takes the grid's partition, account,
qos, constraint and setup lines unless `store.slurm` sets them; not its `additional` options (GPUs,
holds: a build needs neither). Every problem is recorded in the caller's `errors` list. No torch
here: the launcher runs on login nodes.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal, Sequence

from camvis.config import section_from_dict
from camvis.cluster.slurm_settings import (MAX_TIME_MIN, SlurmSettings, _check_sbatch_text, _setup_lines,
                                           checked_parameters, site_parameters)

DEFAULT_CPUS = 4
"""CPUs of the build job when neither store.workers nor store.slurm.cpus_per_task says."""


@dataclass(frozen=True, kw_only=True)
class StoreSection:
    """The `store:` keys as written (factors None: the jobs' factors)."""

    raw: str = ""
    """The raw data folder the store is built from, in camvis2's layout (`camvis-data check`); required."""
    preprocessing: Literal["exact", "camvis2"] = "exact"
    """exact, camvis's own pipeline; camvis2, camvis2's rule for rule (`camvis-data build --preprocessing`)."""
    factors: tuple[int, ...] | None = None
    """Demagnification factors of the store's levels (null: every factor the grid's jobs use)."""
    patch_size: int = 128
    """Side of a patch in pixels."""
    patches_per_image: int = 500
    """Depth-balanced patch centres sampled per image."""
    seed: int = 0
    """Seed of the sampling."""
    workers: int | None = None
    """Images built in this many processes (null: the build job's CPUs); the same bytes as 1."""
    slurm: dict[str, Any] = field(default_factory=dict)
    """The build job's resources: the store.slurm keys below."""


@dataclass(frozen=True, kw_only=True)
class BuildSlurm:
    """`store.slurm`: the build job's resources (None: the grid's slurm value)."""

    time: int = 60
    """Time limit of the build job in minutes."""
    cpus_per_task: int | None = None
    """CPUs of the build job (null: store.workers, else 4)."""
    mem_gb: float | None = None
    """Memory of the build job in GB (null: the cluster's default); one image per worker, about 1.3 GiB at
    paper size."""
    partition: str | None = None
    """Partition (null: the grid's slurm.partition)."""
    account: str | None = None
    """Account (null: the grid's slurm.account)."""
    qos: str | None = None
    """Quality of service (null: the grid's slurm.qos)."""
    constraint: str | None = None
    """Node features (null: the grid's slurm.constraint)."""
    additional: dict[str, Any] = field(default_factory=dict)
    """Extra sbatch options of the build job; not the grid's (its GPUs or holds)."""
    setup: tuple[str, ...] | None = None
    """Shell lines run before the build (null: the grid's slurm.setup lines)."""


@dataclass(frozen=True)
class StoreBuild:
    """Everything the build job needs: where it writes, from what, with which parameters and resources."""

    store: str                      # the base's data.store (the build's target)
    raw: str
    params: dict[str, Any]          # camvis.data.store_build.build's keywords (factors, patch_size, ...)
    workers: int | None             # None: the job's CPUs
    slurm: SlurmSettings            # the build job's resources (time, cpus_per_task, mem_gb, partition, ...)


def parse_store_section(raw: Any, store: str, slurm: SlurmSettings, job_factors: Sequence[Sequence[int]],
                        errors: list[str]) -> StoreBuild | None:
    """The grid's `store:` section resolved for target `store` (None when the grid has none)."""
    if raw is None:
        return None
    section = section_from_dict(StoreSection, "store", raw, errors)
    if not section.raw:
        errors.append("store.raw: missing; the raw data dir the store is built from (camvis2's layout)")
    for key, low in (("patch_size", 2), ("patches_per_image", 1), ("seed", 0), ("workers", 1)):
        value = getattr(section, key)
        if value is not None and value < low:
            errors.append(f"store.{key}: must be >= {low}, got {value}")
    factors = section.factors or tuple(sorted({f for fs in job_factors for f in fs}))
    if section.factors is not None and (not factors or any(f < 1 for f in factors) or len(set(factors)) != len(factors)):
        errors.append(f"store.factors: expected distinct positive integers, got {list(factors)}")
    resources = _build_slurm(section, slurm, errors)
    params = {"factors": list(factors), "patch_size": section.patch_size, "patches_per_image": section.patches_per_image,
              "seed": section.seed, "preprocessing": section.preprocessing}
    return StoreBuild(store, section.raw, params, section.workers, resources)


def _build_slurm(section: StoreSection, grid: SlurmSettings, errors: list[str]) -> SlurmSettings:
    own = section_from_dict(BuildSlurm, "store.slurm", section.slurm, errors)
    if not 1 <= own.time <= MAX_TIME_MIN:
        errors.append(f"store.slurm.time: expected minutes in 1..{MAX_TIME_MIN}, got {own.time}")
    cpus = next((c for c in (own.cpus_per_task, section.workers) if c is not None), DEFAULT_CPUS)
    if cpus < 1:
        errors.append(f"store.slurm.cpus_per_task: must be >= 1, got {cpus}")
    if own.mem_gb is not None and own.mem_gb <= 0:
        errors.append(f"store.slurm.mem_gb: must be > 0, got {own.mem_gb}")
    setup = grid.setup if own.setup is None else tuple(_setup_lines(list(own.setup), errors))
    pick = {k: getattr(own, k) if getattr(own, k) is not None else getattr(grid, k)
            for k in ("partition", "account", "qos", "constraint")}
    settings = SlurmSettings(time=max(own.time, 1), cpus_per_task=max(cpus, 1), mem_gb=own.mem_gb,
                             additional=dict(own.additional), setup=setup, max_requeues=0,
                             signal_delay_s=0, **pick)
    found: list[str] = []
    _check_sbatch_text(settings, found)
    errors.extend(p.replace("slurm.", "store.slurm.", 1) for p in found)
    return settings


def build_parameters(build: StoreBuild, name: str) -> dict[str, Any]:
    """AutoExecutor.update_parameters() arguments of the build job: one task with its CPUs."""
    s = build.slurm
    params: dict[str, Any] = {"name": name, "timeout_min": s.time, "nodes": 1, "tasks_per_node": 1,
                              "cpus_per_task": s.cpus_per_task}
    return checked_parameters({**params, **site_parameters(s)})


def with_dependency(params: dict[str, Any], build_id: str | None) -> dict[str, Any]:
    """`params` (an array's) that also wait for the build job to end well: afterok, beside any
    dependency the grid's slurm.additional already gives (',' in SLURM: all of them)."""
    if not build_id:
        return params
    extra = dict(params.get("slurm_additional_parameters") or {})
    given = extra.get("dependency")
    extra["dependency"] = f"afterok:{build_id}" + (f",{given}" if given else "")
    return {**params, "slurm_additional_parameters": extra}
