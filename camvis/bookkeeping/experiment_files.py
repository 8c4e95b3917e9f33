"""What an experiment's files say about its jobs: the manifest (jobs/<experiment>/manifest.json),
each job's folder (outputs/<experiment>/<job>/: progress.json, scores.json, error.txt), submitit's
result files and log tails; and a job's state when SLURM has no row for it.

Read by camvis-status and camvis-aggregate (camvis.bookkeeping.status joins this with SLURM's view). A bad
job file reads as absent (a monitor must not crash on one); a bad manifest is a ConfigError.
No torch here: this runs on login nodes.
"""

from __future__ import annotations

import datetime
import re
from dataclasses import dataclass
import os
from pathlib import Path
from typing import Any

from camvis.bookkeeping import manifest
from camvis.config import name_problem
from camvis.errors import ConfigError
from camvis.bookkeeping.jobfolder import ERROR, JOB_FILES, PROGRESS, SCORES, as_int, read_json

_FOLD = re.compile(r"_fold(\d+)")


# --------------------------------------------------------------------------- what is expected


@dataclass(frozen=True)
class JobInfo:
    """One expected job: from the manifest, or guessed from its folder under outputs/."""

    name: str
    group: str
    fold: int | None
    view: str | None = None
    mode: str = "unknown"  # slurm | local | debug | unknown
    job_id: str | None = None  # "123_4" for SLURM array tasks
    config_hash: str | None = None
    stdout: str | None = None
    stderr: str | None = None
    submitted: str | None = None
    replicate: int = 1  # which training seed of its grid point (the grid's `replicates`)

    @property
    def variant(self) -> str:
        return variant_label(self.name, self.group)


def variant_label(name: str, group: str) -> str:
    """The grid point without its fold: "cat_fold3" -> "cat", "cat_fold3_lr0.001" -> "cat_lr0.001"."""
    label, n = _FOLD.subn("", name, count=1)
    return label if n and label else group


def fold_from_name(name: str) -> int | None:
    match = _FOLD.search(name)
    return int(match.group(1)) if match else None


def experiment_manifest(jobs: str | Path, experiment: str) -> dict[str, Any] | None:
    """jobs/<experiment>/manifest.json, or None when the experiment was never launched."""
    return manifest.read_manifest(Path(jobs) / experiment / "manifest.json") or None


def _opt_str(value: Any) -> str | None:
    return None if value is None or value == "" else str(value)


def _info_from_manifest(name: str, entry: dict[str, Any], exp_dir: Path) -> JobInfo:
    fold = as_int(entry.get("fold"))
    return JobInfo(
        name=name,
        group=str(entry.get("group") or variant_label(name, name)),
        fold=fold if fold is not None else fold_from_name(name),
        view=_opt_str(entry.get("view")),
        mode=str(entry.get("mode") or "unknown"),
        job_id=_opt_str(entry.get("job_id")),
        config_hash=_opt_str(entry.get("hash")),
        stdout=manifest.log_path(entry.get("stdout"), exp_dir),  # from the jobs folder: projects move
        stderr=manifest.log_path(entry.get("stderr"), exp_dir),
        submitted=_opt_str(entry.get("submitted")),
        replicate=as_int(entry.get("replicate")) or 1,
    )


def _info_from_dir(path: Path) -> JobInfo:
    scores = read_json(path / SCORES) or {}
    fold = as_int(scores.get("fold"))
    return JobInfo(
        name=path.name,
        group=str(scores.get("group") or variant_label(path.name, path.name)),
        fold=fold if fold is not None else fold_from_name(path.name),
        view=_opt_str(scores.get("view")),
        mode="unknown",
        replicate=as_int(scores.get("replicate")) or 1,
    )


def job_dirs(outputs: str | Path, experiment: str) -> list[Path]:
    """Folders under outputs/<experiment>/ that a job wrote (not aggregate's figures/)."""
    base = Path(outputs) / experiment
    if not base.is_dir():
        return []
    return sorted(d for d in base.iterdir() if d.is_dir() and any((d / f).exists() for f in JOB_FILES))


def expected_jobs(
    experiment: str, jobs: str | Path = "jobs", outputs: str | Path = "outputs", manifest: dict[str, Any] | None = None
) -> list[JobInfo]:
    """The manifest's jobs when there is a manifest, else every job folder; sorted by grid point."""
    if manifest is None:
        manifest = experiment_manifest(jobs, experiment)
    if manifest is not None:
        for name in manifest["jobs"]:  # a name is a folder under outputs/<experiment>/: none reaches outside
            problem = name_problem("job", name)
            if problem is not None:
                raise ConfigError(f"{Path(jobs) / experiment / 'manifest.json'}: {problem}; "
                                  f"a job folder must lie inside {Path(outputs) / experiment}")
        exp_dir = Path(jobs) / experiment
        infos = [_info_from_manifest(n, e if isinstance(e, dict) else {}, exp_dir) for n, e in manifest["jobs"].items()]
    else:
        infos = [_info_from_dir(d) for d in job_dirs(outputs, experiment)]
    return sorted(infos, key=lambda i: (i.group, i.variant, i.fold if i.fold is not None else -1, i.name))


def check_experiment(experiment: str, jobs: str | Path, outputs: str | Path,
                     manifest: dict[str, Any] | None) -> None:
    """A ConfigError unless `experiment` exists in these folders: a manifest under `jobs` or job folders
    under `outputs`, and, when its manifest says its jobs write elsewhere, a folder under `outputs`
    too (else every job would look FAILED for want of its files)."""
    where = Path(outputs) / experiment
    if manifest is None:
        if not job_dirs(outputs, experiment):
            known = ", ".join(list_experiments(jobs)) or "none"
            raise ConfigError(f"unknown experiment {experiment!r}: no {Path(jobs) / experiment / 'manifest.json'} "
                              f"and no job folders under {where}/ (known: {known})")
        return
    recorded = manifest.get("outputs")  # relative to jobs/<experiment>/ (older manifests: as given)
    if isinstance(recorded, str) and recorded:
        recorded = os.path.normpath(Path(jobs).absolute() / experiment / recorded)
    if isinstance(recorded, str) and recorded and not where.exists() \
            and Path(recorded) != Path(outputs).absolute():
        raise ConfigError(f"experiment {experiment!r} has no folder {where}/: its manifest "
                          f"({Path(jobs) / experiment / 'manifest.json'}) says its jobs write under {recorded}; "
                          f"give --outputs {recorded} (or set $CAMVIS_OUTPUTS / camvis.yaml's outputs)")


def list_experiments(jobs: str | Path = "jobs") -> list[str]:
    base = Path(jobs)
    return sorted(d.name for d in base.iterdir() if (d / "manifest.json").is_file()) if base.is_dir() else []


def aggregate_ids(manifest: dict[str, Any] | None) -> list[str]:
    """SLURM ids of the dependent aggregate jobs of every launch."""
    launches = (manifest or {}).get("launches") or []
    return [str(x["aggregate_id"]) for x in launches if isinstance(x, dict) and x.get("aggregate_id")]


def array_ids(manifest: dict[str, Any] | None) -> list[str]:
    """SLURM ids of every launch's job arrays (`array_ids`; a manifest written before launches
    could split a grid has only `array_id`)."""
    ids: list[str] = []
    for x in (manifest or {}).get("launches") or []:
        if not isinstance(x, dict):
            continue
        many = x.get("array_ids") if isinstance(x.get("array_ids"), list) else [x.get("array_id")]
        ids += [str(a) for a in many if a and str(a) not in ids]
    return ids


# --------------------------------------------------------------------------- what a job's files say


def state_from_files(
    info: JobInfo, progress: dict[str, Any] | None, finished: bool, slurm_known: bool, ended: bool = False
) -> str:
    """A job's state when SLURM has no row for it: local runs, forgotten or unreachable SLURM jobs.
    `ended`: the job left a newer error.txt, or submitit's result file, without scores."""
    if finished:
        return "COMPLETED"
    phase = str((progress or {}).get("state", ""))
    if phase == "failed" or ended:
        return "FAILED"
    if phase == "done":
        return "COMPLETED"
    if phase in ("starting", "training", "evaluating"):
        # A SLURM job that SLURM no longer knows is not running, whatever its last progress said.
        return "UNKNOWN" if slurm_known and info.mode == "slurm" else "RUNNING"
    if info.mode == "slurm" and slurm_known:
        return "UNKNOWN"
    return "PENDING" if info.submitted or info.job_id else "UNKNOWN"


def submitit_result_path(info: JobInfo) -> Path | None:
    """submitit writes <folder>/<id>_<task>_result.pkl beside <id>_<task>_log.out when a job ends."""
    if not info.stdout or not info.stdout.endswith("_log.out"):
        return None
    return Path(info.stdout[: -len("_log.out")] + "_result.pkl")


def _mtime(path: Path | None) -> float | None:
    try:
        return path.stat().st_mtime if path is not None else None
    except OSError:
        return None


def _epoch(iso: str | None) -> float | None:
    """An ISO time as seconds since the epoch (naive: local time); None if absent or unreadable."""
    try:
        return datetime.datetime.fromisoformat(iso).timestamp() if iso else None
    except (TypeError, ValueError):
        return None


def earlier_run_files(info: JobInfo, folder: Path) -> frozenset[str]:
    """The job files in `folder` last written before this job was submitted: an earlier run's (a
    relaunched job still queued must not show them as its own). None without a submission time."""
    since = _epoch(info.submitted)
    if since is None:
        return frozenset()
    return frozenset(f for f in (SCORES, PROGRESS, ERROR) if (t := _mtime(folder / f)) is not None and t < since)


def cancelled_by_camvis(info: JobInfo, manifest: dict[str, Any] | None) -> dict[str, Any] | None:
    """The manifest's record of camvis cancelling this job or its array (SLURM keeps no row for a
    cancelled pending array task), or None."""
    cancelled = (manifest or {}).get("cancelled")
    if not info.job_id or not isinstance(cancelled, dict):
        return None
    for key in (info.job_id, info.job_id.split("_", 1)[0]):
        if isinstance(cancelled.get(key), dict):
            return cancelled[key]
    return None


def job_ended_without_scores(info: JobInfo, folder: Path) -> bool:
    """error.txt newer than progress.json (not an earlier attempt, nor an earlier run's), or
    submitit's result file."""
    error_t, progress_t = _mtime(folder / ERROR), _mtime(folder / PROGRESS)
    since = _epoch(info.submitted)
    if error_t is not None and since is not None and error_t < since:
        error_t = None
    if error_t is not None and (progress_t is None or error_t >= progress_t):
        return True
    return _mtime(submitit_result_path(info)) is not None


def last_error_line(folder: Path) -> str | None:
    lines = [ln for ln in tail(folder / ERROR, 5) or [] if ln.strip()]
    return lines[-1].strip() if lines else None


# --------------------------------------------------------------------------- logs


def tail(path: str | Path | None, lines: int = 20, max_bytes: int = 65536) -> list[str] | None:
    """The last `lines` lines of a text file (reads at most `max_bytes` from its end); None if absent."""
    if not path:
        return None
    try:
        with open(path, "rb") as f:
            f.seek(0, 2)
            size = f.tell()
            f.seek(max(0, size - max_bytes))
            data = f.read()
    except OSError:
        return None
    text = data.decode("utf-8", errors="replace").replace("\r", "\n")
    return text.splitlines()[-lines:] if lines > 0 else []


def find_job(experiment: str, job: str, jobs: str | Path = "jobs", outputs: str | Path = "outputs") -> JobInfo:
    """A job by name ("cat_fold3") or by SLURM id ("123_4")."""
    manifest = experiment_manifest(jobs, experiment)
    check_experiment(experiment, jobs, outputs, manifest)
    infos = expected_jobs(experiment, jobs, outputs, manifest)
    for info in infos:
        if job in (info.name, info.job_id):
            return info
    known = ", ".join(i.name for i in infos[:12]) + (" ..." if len(infos) > 12 else "")
    raise ConfigError(f"experiment {experiment!r} has no job {job!r} (name or SLURM id); known: {known or 'none'}")


def job_logs(
    experiment: str, job: str, jobs: str | Path = "jobs", outputs: str | Path = "outputs", lines: int = 40
) -> list[tuple[str, str | None, list[str] | None]]:
    """[(stream, path, last lines or None if the file is absent)]: stdout, stderr, and the job's
    error.txt when it left one."""
    info = find_job(experiment, job, jobs, outputs)
    logs = [("stdout", info.stdout, tail(info.stdout, lines)), ("stderr", info.stderr, tail(info.stderr, lines))]
    error = Path(outputs) / experiment / info.name / ERROR
    if error.exists():
        logs.append((ERROR, str(error), tail(error, lines)))
    return logs
