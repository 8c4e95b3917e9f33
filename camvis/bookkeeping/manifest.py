"""What was launched: jobs/<experiment>/manifest.json, merged by every launch under a lock.

One entry per job (its grid point, config, hash and SLURM/local ids; skipped jobs keep their
earlier entry), one per launch (mode, ids, submitted/skipped, code version) and the SLURM ids camvis
cancelled (SLURM keeps no row for a cancelled pending array task); the format: docs/contracts.md.
No torch here: the launcher runs on login nodes.
"""

from __future__ import annotations

import functools
import json
import os
import subprocess
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

from camvis import __version__, locks
from camvis.config import to_dict
from camvis.errors import ConfigError
from camvis.host import now_iso
from camvis.io import reap_stale_tmp, write_json, write_text

# Grid and JobSpec are camvis.cluster.grid's (the login side, a layer up): named here, not imported.
Grid = JobSpec = Any


@dataclass(frozen=True)
class LaunchRecord:
    """One launch as the manifest keeps it: plain values camvis-launch fills (the manifest knows
    nothing of the launcher's own result)."""

    id: str
    mode: str
    planned: tuple[JobSpec, ...]    # every job looked at: a skipped one keeps its earlier entry
    submitted: tuple[str, ...]      # the names handed to SLURM (or run) so far
    skipped: dict[str, str]         # name -> why not
    array_id: str | None = None     # the first array (kept for readers of one array per launch)
    aggregate_id: str | None = None
    sbatch_calls: int = 0
    array_ids: tuple[str, ...] = ()  # every array: a grid over MaxArraySize is split into several


def job_entry(spec: JobSpec, mode: str, job: Any, array_id: str | None, task: int,
              submitted: str | None = None) -> dict[str, Any]:
    """`submitted`: when it was handed to SLURM (taken before sbatch, so that every file the job
    writes is newer: camvis-status tells this run's files from an earlier run's by it)."""
    paths = getattr(job, "paths", None)
    return {
        "group": spec.group, "fold": spec.fold, "view": spec.view, "axes": spec.axes, "hash": spec.hash,
        "replicate": spec.replicate, "config": to_dict(spec.config), "mode": mode, "job_id": str(job.job_id), "array_id": array_id,
        "task": task, "submitted": submitted or now_iso(),
        "stdout": str(paths.stdout) if paths is not None else None,
        "stderr": str(paths.stderr) if paths is not None else None,
    }


def _skipped_entry(spec: JobSpec) -> dict[str, Any]:
    return {"group": spec.group, "fold": spec.fold, "view": spec.view, "axes": spec.axes, "hash": spec.hash,
            "replicate": spec.replicate, "config": to_dict(spec.config), "mode": None, "job_id": None, "array_id": None, "task": None,
            "submitted": None, "stdout": None, "stderr": None}


LOG_KEYS = ("stdout", "stderr")
"""Entries' paths, kept relative to the experiment's jobs folder (jobs/<experiment>/) so that a
project moves: readers resolve them with `log_path`."""


def relative_logs(entry: dict[str, Any], exp_dir: Path) -> dict[str, Any]:
    """`entry` with its log paths relative to `exp_dir` where they lie inside it."""
    folder = os.path.abspath(exp_dir)
    out = dict(entry)
    for key in LOG_KEYS:
        if out.get(key) and os.path.isabs(str(out[key])):
            full = os.path.abspath(str(out[key]))
            if os.path.commonpath([full, folder]) == folder:
                out[key] = os.path.relpath(full, folder)
    return out


def log_path(value: Any, exp_dir: Path) -> str | None:
    """A manifest's log path here: a relative one from `exp_dir`. An absolute one (manifests before
    relative paths) is taken at its place under `exp_dir` (<job id>/<file>) when there is a file
    there: a moved project's logs are its own copy's, not the old folder's."""
    if value is None or value == "":
        return None
    path = Path(str(value))
    if not path.is_absolute():
        return str(Path(exp_dir) / path)
    here = Path(exp_dir) / path.parent.name / path.name
    return str(here) if here.is_file() else str(path)


def read_manifest(path: Path) -> dict[str, Any]:
    """jobs/<experiment>/manifest.json ({} when the experiment was never launched): the one reader."""
    try:
        data = json.loads(Path(path).read_text())
    except FileNotFoundError:
        return {}
    except (OSError, ValueError) as e:
        raise ConfigError(f"{path}: unreadable manifest ({e}); move it away to start afresh") from e
    if not isinstance(data, dict) or not isinstance(data.get("jobs", {}), dict):
        raise ConfigError(f"{path}: expected an object with a 'jobs' mapping (name -> job)")
    return data


@contextmanager
def _locked(exp_dir: Path) -> Iterator[None]:
    """Writers of one manifest (launches, camvis-status --cancel) must not lose each other's entries."""
    with locks.exclusive(exp_dir / ".manifest.lock", "writing manifest.json"):
        yield


def record(exp_dir: Path, grid: Grid, launch: LaunchRecord, outputs: str | Path,
           entries: dict[str, dict[str, Any]], update_last: bool = False) -> Path:
    """Merge this launch into jobs/<exp>/manifest.json (atomically, under a lock).
    `update_last` rewrites this launch's record (found by its id) instead of appending a new one."""
    path = exp_dir / "manifest.json"
    with _locked(exp_dir):
        reap_stale_tmp(exp_dir)  # manifest.json.tmp files of killed launches
        manifest = read_manifest(path)
        jobs = manifest.get("jobs", {})
        jobs.update({name: relative_logs(e, exp_dir) for name, e in entries.items()})
        for spec in launch.planned:  # skipped jobs keep their earlier entry
            if spec.name not in jobs:  # (not setdefault: a 5,000-job grid's entries are costly to build)
                jobs[spec.name] = _skipped_entry(spec)
        launches = manifest.get("launches", [])
        entry = _launch_entry(launch, grid)
        mine = [i for i, x in enumerate(launches) if isinstance(x, dict) and x.get("id") == entry["id"]]
        if update_last and mine:
            entry["time"] = launches[mine[-1]]["time"]
            launches[mine[-1]] = entry
        else:
            launches.append(entry)
        manifest.update(experiment=grid.experiment, grid=str(grid.path), description=grid.description,
                        order=[j.name for j in grid.jobs],  # the grid's order: figures keep it
                        # relative to jobs/<exp>/ (projects move); status/aggregate tell a wrong --outputs by it
                        outputs=os.path.relpath(os.path.abspath(outputs), os.path.abspath(exp_dir)),
                        updated=now_iso(), launches=launches, jobs=jobs)
        _write(path, manifest)
    return path


INDENT_UP_TO = 1000  # jobs; a bigger manifest is written on one line


def _write(path: Path, manifest: dict[str, Any]) -> None:
    """Indented for people up to INDENT_UP_TO jobs; beyond, compact: json's C encoder does not
    indent, and the pure-Python one takes seconds over a 5,000-job manifest (written twice per launch)."""
    if len(manifest.get("jobs", {})) <= INDENT_UP_TO:
        write_json(path, manifest)
    else:
        write_text(path, json.dumps(manifest, sort_keys=True, default=str) + "\n")


def record_cancelled(exp_dir: Path, ids: list[str], by: str, reason: str = "") -> None:
    """Remember the SLURM ids camvis cancelled ("123" a whole array or job, "123_4" one task), with
    when: SLURM keeps no row for a pending array task cancelled, and status must still say CANCELLED."""
    path = exp_dir / "manifest.json"
    with _locked(exp_dir):
        manifest = read_manifest(path)
        if not manifest:
            return
        cancelled = manifest.get("cancelled")
        cancelled = cancelled if isinstance(cancelled, dict) else {}
        for job_id in ids:
            cancelled[str(job_id)] = {"time": now_iso(), "by": by, **({"reason": reason} if reason else {})}
        manifest.update(cancelled=cancelled, updated=now_iso())
        _write(path, manifest)


def record_store_build(exp_dir: Path, experiment: str, entry: dict[str, Any]) -> None:
    """Append a store build job (camvis.cluster.store_job) to `store_builds`, before the arrays that wait
    for it are submitted: a relaunch finds it there (the manifest is begun if this is the first launch)."""
    path = exp_dir / "manifest.json"
    with _locked(exp_dir):
        manifest = read_manifest(path)
        manifest.setdefault("experiment", experiment)
        manifest.setdefault("jobs", {})
        manifest.setdefault("launches", [])
        found = manifest.get("store_builds")
        manifest.update(store_builds=[*(found if isinstance(found, list) else []), relative_logs(entry, exp_dir)],
                        updated=now_iso())
        _write(path, manifest)


def _launch_entry(launch: LaunchRecord, grid: Grid) -> dict[str, Any]:
    return {"id": launch.id, "time": now_iso(), "mode": launch.mode, "array_id": launch.array_id,
            "array_ids": list(launch.array_ids), "aggregate_id": launch.aggregate_id,
            "submitted": list(launch.submitted), "skipped": dict(launch.skipped), "code_version": code_version(),
            "sbatch_calls": launch.sbatch_calls, "overrides": list(grid.overrides),
            "resources": _resources(launch.mode, grid)}


def _resources(mode: str, grid: Grid) -> dict[str, Any]:
    """What each job of this launch asked for (summary.md shows it per group)."""
    s = grid.slurm
    return {"mode": mode, "nodes": s.nodes, "ranks_per_node": s.ntasks, "gpus_per_node": s.gpus_per_node,
            "cpus_per_task": s.cpus_per_task, "mem_gb": s.mem_gb, "time_min": s.time}


@functools.cache
def code_version() -> str:
    """camvis's version plus the git commit of the working tree when there is one; asked of git once
    per process (a local launch records the manifest once per job)."""
    try:
        proc = subprocess.run(["git", "describe", "--always", "--dirty"], capture_output=True, text=True,
                              timeout=10, cwd=Path(__file__).resolve().parent)
    except (OSError, subprocess.SubprocessError):
        return __version__
    sha = proc.stdout.strip()
    return f"{__version__}+g{sha}" if proc.returncode == 0 and sha else __version__
