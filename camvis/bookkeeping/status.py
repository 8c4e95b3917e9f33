"""What `camvis-status` knows of an experiment, without its display: what the experiment's files say
about its jobs (camvis.bookkeeping.experiment_files) joined with SLURM's view (one batched query,
camvis.bookkeeping.slurm_query). camvis.cluster.monitor renders it; camvis.results reads it."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Sequence

from camvis.bookkeeping import experiment_files, slurm_query, store_builds
from camvis.bookkeeping.experiment_files import (
    JobInfo,
    aggregate_ids,
    cancelled_by_camvis,
    earlier_run_files,
    expected_jobs,
    job_ended_without_scores,
    last_error_line,
    list_experiments,
    read_json,
    experiment_manifest,
    state_from_files,
)
from camvis.bookkeeping.jobfolder import as_number, is_finished
from camvis.bookkeeping.slurm_query import QueryResult, SlurmRow, is_active

STATE_ORDER = ("COMPLETED", "RUNNING", "PENDING", "REQUEUED", "FAILED", "TIMEOUT", "CANCELLED", "UNKNOWN")




@dataclass(frozen=True)
class JobStatus:
    info: JobInfo
    state: str
    source: str  # where the state comes from: sacct | squeue | files | manifest (camvis cancelled it)
    slurm: SlurmRow | None = None
    progress: dict[str, Any] | None = None
    finished: bool = False  # scores.json present with the expected config hash
    error: str | None = None  # last line of the job's error.txt (its traceback), if it failed in Python
    folder: Path | None = None  # outputs/<experiment>/<job>/
    hidden: frozenset[str] = frozenset()  # job files of an earlier run, not shown as this job's
    scores: dict[str, Any] | None = None  # scores.json when finished (the efficiency column reads it)

    @property
    def source_text(self) -> str:
        """Where the state comes from, as the table shows it."""
        if self.source == "manifest":
            return "camvis cancelled it (manifest)"
        return "job files" if self.source == "files" else self.source


def job_status(info: JobInfo, slurm: QueryResult, outputs: str | Path, experiment: str,
               manifest: dict[str, Any] | None = None) -> JobStatus:
    """One job's state: SLURM's row for its id; else camvis's record of cancelling it; else its files.
    Files written before this job was submitted are an earlier run's: never shown as this job's."""
    folder = Path(outputs) / experiment / info.name
    hidden = earlier_run_files(info, folder)
    progress = None if experiment_files.PROGRESS in hidden else read_json(folder / experiment_files.PROGRESS)
    scores = None if experiment_files.SCORES in hidden else read_json(folder / experiment_files.SCORES)
    finished = is_finished(scores, info.config_hash)
    scores = scores if finished else None
    error = None if finished or experiment_files.ERROR in hidden else last_error_line(folder)
    row = slurm.rows.get(info.job_id) if info.mode == "slurm" and info.job_id else None
    if row is not None:
        return JobStatus(info, row.state, slurm.source or "slurm", row, progress, finished, error, folder, hidden,
                         scores)
    if not finished and cancelled_by_camvis(info, manifest):
        return JobStatus(info, "CANCELLED", "manifest", None, progress, False, error, folder, hidden)
    ended = not finished and job_ended_without_scores(info, folder)
    state = state_from_files(info, progress, finished, slurm.reachable, ended)
    return JobStatus(info, state, "files", None, progress, finished, error, folder, hidden, scores)


@dataclass(frozen=True)
class ExperimentStatus:
    experiment: str
    jobs: list[JobStatus]
    slurm: QueryResult
    aggregate: list[tuple[str, str]]  # (SLURM id, state) of the dependent aggregate jobs
    has_slurm_jobs: bool
    store_builds: list[tuple[str, bool]] = field(default_factory=list)  # store_builds.status_line of each build
    stuck: frozenset[str] = frozenset()  # tasks pending for ever behind a failed build (DependencyNeverSatisfied)
    resources: dict[str, dict[str, Any]] = field(default_factory=dict)  # job -> what its launch asked for

    @property
    def counts(self) -> dict[str, int]:
        return state_counts(j.state for j in self.jobs)

    @property
    def active(self) -> bool:
        """Something may still change: a job or aggregate job is active (slurm_query.is_active)."""
        states = [j.state for j in self.jobs if j.info.job_id not in self.stuck] + [s for _, s in self.aggregate]
        return any(is_active(s) for s in states) and not (self.stuck and all(
            j.info.job_id in self.stuck or not is_active(j.state) for j in self.jobs))


def state_counts(states: Iterable[str]) -> dict[str, int]:
    """Counts per state, in a stable, readable order (known states first)."""
    counts = Counter(states)
    order = [s for s in STATE_ORDER if s in counts] + sorted(s for s in counts if s not in STATE_ORDER)
    return {s: counts[s] for s in order}


def slurm_task_ids(infos: Sequence[JobInfo]) -> list[str]:
    return [i.job_id for i in infos if i.job_id and i.mode == "slurm"]


def collect(
    experiment: str,
    jobs: str | Path = "jobs",
    outputs: str | Path = "outputs",
    slurm: QueryResult | None = None,
    runner: slurm_query.Runner | None = None,
) -> ExperimentStatus:
    """Everything `camvis-status EXPERIMENT` shows, with at most ONE batched SLURM query."""
    manifest = experiment_manifest(jobs, experiment)
    experiment_files.check_experiment(experiment, jobs, outputs, manifest)
    infos = expected_jobs(experiment, jobs, outputs, manifest)
    agg = aggregate_ids(manifest)
    builds = store_builds.latest_per_store(manifest, Path(jobs) / experiment)
    ids = slurm_task_ids(infos) + agg + [b["job_id"] for b in builds]
    if slurm is None:
        slurm = slurm_query.query(ids, runner) if ids else QueryResult({}, None, "no SLURM jobs")
    rows = [job_status(info, slurm, outputs, experiment, manifest) for info in infos]
    cancelled = (manifest or {}).get("cancelled") or {}
    agg_states = [(a, slurm.rows[a].state if a in slurm.rows else "CANCELLED" if a in cancelled else "UNKNOWN")
                  for a in agg]
    lines = [store_builds.status_line(b, store_builds.build_state(b["job_id"], slurm.rows)) for b in builds]
    stuck = store_builds.never_satisfied([r.info.job_id for r in rows if r.state == "PENDING" and r.info.job_id]) \
        if any(failed for _, failed in lines) and runner is None else set()
    return ExperimentStatus(experiment, rows, slurm, agg_states, bool(ids), lines, frozenset(stuck),
                            job_resources(manifest))


def collect_all(
    jobs: str | Path = "jobs", outputs: str | Path = "outputs", runner: slurm_query.Runner | None = None
) -> list[ExperimentStatus]:
    """Every experiment under jobs/, sharing one batched SLURM query across them."""
    names = list_experiments(jobs)
    manifests = {n: experiment_manifest(jobs, n) for n in names}
    ids = [i for n in names for i in slurm_task_ids(expected_jobs(n, jobs, outputs, manifests[n]))]
    ids += [a for n in names for a in aggregate_ids(manifests[n])]
    slurm = slurm_query.query(ids, runner) if ids else QueryResult({}, None, "no SLURM jobs")
    return [collect(n, jobs, outputs, slurm=slurm) for n in names]


def job_resources(manifest: dict[str, Any] | None) -> dict[str, dict[str, Any]]:
    """{job: the `resources` of the last launch that submitted it} (camvis.bookkeeping.manifest records them)."""
    out: dict[str, dict[str, Any]] = {}
    for launch in (manifest or {}).get("launches") or []:
        if isinstance(launch, dict) and isinstance(launch.get("resources"), dict):
            for name in launch.get("submitted") or []:
                out[str(name)] = launch["resources"]
    return out


def requested(resources: dict[str, Any] | None) -> tuple[int | None, int, float | None]:
    """(CPUs, GPUs, GB per node) a SLURM launch asked for per job; a local run asked SLURM for nothing."""
    r = resources or {}
    if r.get("mode") not in ("slurm", None) or not r:
        return None, 0, None
    nodes, ranks = count_or(r.get("nodes")), count_or(r.get("ranks_per_node"))
    cpus = nodes * ranks * count_or(r.get("cpus_per_task"))
    return cpus, nodes * count_or(r.get("gpus_per_node"), 0), as_number(r.get("mem_gb"))


def count_or(value: Any, default: int = 1) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) and value >= 0 else default
