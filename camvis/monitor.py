"""`camvis-status`: join an experiment's manifest, SLURM's view and each job's progress.json.

Reading (manifest, job files, one batched SLURM query) is kept apart from rendering (rich
tables) so that both can be tested without a cluster. No torch here: this runs on a login node.
"""

from __future__ import annotations

import json
import math
import re
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Sequence

from rich.console import Console, Group, RenderableType
from rich.live import Live
from rich.table import Table
from rich.text import Text

from camvis import slurm_query
from camvis.errors import ConfigError, SubmissionError
from camvis.slurm_query import FAILED_STATES, TERMINAL_STATES, QueryResult, SlurmRow

JOB_FILES = ("scores.json", "progress.json", "checkpoint.pt", "best.pt")
STATE_ORDER = ("COMPLETED", "RUNNING", "PENDING", "REQUEUED", "FAILED", "TIMEOUT", "CANCELLED", "UNKNOWN")
STATE_STYLE = {"COMPLETED": "green", "RUNNING": "cyan", "PENDING": "yellow", "REQUEUED": "yellow", "UNKNOWN": "dim"}
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


def read_json(path: Path) -> dict[str, Any] | None:
    """A JSON object, or None when missing or unreadable (a monitor must not crash on one bad file)."""
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def read_manifest(jobs: str | Path, experiment: str) -> dict[str, Any] | None:
    """jobs/<experiment>/manifest.json, or None when the experiment was never launched."""
    path = Path(jobs) / experiment / "manifest.json"
    if not path.exists():
        return None
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError) as e:
        raise ConfigError(f"{path}: cannot read the manifest: {e}") from e
    if not isinstance(data, dict) or not isinstance(data.get("jobs", {}), dict):
        raise ConfigError(f"{path}: expected an object with a 'jobs' mapping (name -> job)")
    return data


def _opt_str(value: Any) -> str | None:
    return None if value is None or value == "" else str(value)


def as_int(value: Any) -> int | None:
    try:
        return int(value)
    except (TypeError, ValueError):
        return None


def _info_from_manifest(name: str, entry: dict[str, Any]) -> JobInfo:
    fold = as_int(entry.get("fold"))
    return JobInfo(
        name=name,
        group=str(entry.get("group") or variant_label(name, name)),
        fold=fold if fold is not None else fold_from_name(name),
        view=_opt_str(entry.get("view")),
        mode=str(entry.get("mode") or "unknown"),
        job_id=_opt_str(entry.get("job_id")),
        config_hash=_opt_str(entry.get("hash")),
        stdout=_opt_str(entry.get("stdout")),
        stderr=_opt_str(entry.get("stderr")),
        submitted=_opt_str(entry.get("submitted")),
    )


def _info_from_dir(path: Path) -> JobInfo:
    scores = read_json(path / "scores.json") or {}
    fold = as_int(scores.get("fold"))
    return JobInfo(
        name=path.name,
        group=str(scores.get("group") or variant_label(path.name, path.name)),
        fold=fold if fold is not None else fold_from_name(path.name),
        view=_opt_str(scores.get("view")),
        mode="unknown",
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
        manifest = read_manifest(jobs, experiment)
    if manifest is not None:
        infos = [_info_from_manifest(n, e if isinstance(e, dict) else {}) for n, e in manifest["jobs"].items()]
    else:
        infos = [_info_from_dir(d) for d in job_dirs(outputs, experiment)]
    return sorted(infos, key=lambda i: (i.group, i.variant, i.fold if i.fold is not None else -1, i.name))


def list_experiments(jobs: str | Path = "jobs") -> list[str]:
    base = Path(jobs)
    return sorted(d.name for d in base.iterdir() if (d / "manifest.json").is_file()) if base.is_dir() else []


def aggregate_ids(manifest: dict[str, Any] | None) -> list[str]:
    """SLURM ids of the dependent aggregate jobs of every launch."""
    launches = (manifest or {}).get("launches") or []
    return [str(x["aggregate_id"]) for x in launches if isinstance(x, dict) and x.get("aggregate_id")]


def array_ids(manifest: dict[str, Any] | None) -> list[str]:
    launches = (manifest or {}).get("launches") or []
    return [str(x["array_id"]) for x in launches if isinstance(x, dict) and x.get("array_id")]


# --------------------------------------------------------------------------- state of each job


@dataclass(frozen=True)
class JobStatus:
    info: JobInfo
    state: str
    source: str  # where the state comes from: sacct | squeue | files
    slurm: SlurmRow | None = None
    progress: dict[str, Any] | None = None
    finished: bool = False  # scores.json present with the expected config hash
    error: str | None = None  # last line of the job's error.txt (its traceback), if it failed in Python
    folder: Path | None = None  # outputs/<experiment>/<job>/


def is_finished(scores: dict[str, Any] | None, config_hash: str | None) -> bool:
    """Finished = scores.json exists and was written for the same config (contract)."""
    if scores is None:
        return False
    return config_hash is None or scores.get("config_hash") in (None, config_hash)


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


def job_ended_without_scores(info: JobInfo, folder: Path) -> bool:
    """error.txt newer than progress.json (not an earlier attempt), or submitit's result file."""
    error_t, progress_t = _mtime(folder / "error.txt"), _mtime(folder / "progress.json")
    if error_t is not None and (progress_t is None or error_t >= progress_t):
        return True
    return _mtime(submitit_result_path(info)) is not None


def last_error_line(folder: Path) -> str | None:
    lines = [ln for ln in tail(folder / "error.txt", 5) or [] if ln.strip()]
    return lines[-1].strip() if lines else None


def job_status(info: JobInfo, slurm: QueryResult, outputs: str | Path, experiment: str) -> JobStatus:
    folder = Path(outputs) / experiment / info.name
    progress = read_json(folder / "progress.json")
    finished = is_finished(read_json(folder / "scores.json"), info.config_hash)
    error = None if finished else last_error_line(folder)
    row = slurm.rows.get(info.job_id) if info.mode == "slurm" and info.job_id else None
    if row is not None:
        return JobStatus(info, row.state, slurm.source or "slurm", row, progress, finished, error, folder)
    ended = not finished and job_ended_without_scores(info, folder)
    state = state_from_files(info, progress, finished, slurm.reachable, ended)
    return JobStatus(info, state, "files", None, progress, finished, error, folder)


@dataclass(frozen=True)
class ExperimentStatus:
    experiment: str
    jobs: list[JobStatus]
    slurm: QueryResult
    aggregate: list[tuple[str, str]]  # (SLURM id, state) of the dependent aggregate jobs
    has_slurm_jobs: bool

    @property
    def counts(self) -> dict[str, int]:
        return state_counts(j.state for j in self.jobs)

    @property
    def active(self) -> bool:
        """Something may still change: a job or aggregate job neither terminal nor UNKNOWN."""
        states = [j.state for j in self.jobs] + [s for _, s in self.aggregate]
        return any(s not in TERMINAL_STATES and s != "UNKNOWN" for s in states)


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
    manifest = read_manifest(jobs, experiment)
    infos = expected_jobs(experiment, jobs, outputs, manifest)
    if manifest is None and not infos:
        known = ", ".join(list_experiments(jobs)) or "none"
        raise ConfigError(
            f"unknown experiment {experiment!r}: no {Path(jobs) / experiment / 'manifest.json'} "
            f"and no job folders under {Path(outputs) / experiment}/ (known: {known})"
        )
    agg = aggregate_ids(manifest)
    ids = slurm_task_ids(infos) + agg
    if slurm is None:
        slurm = slurm_query.query(ids, runner) if ids else QueryResult({}, None, "no SLURM jobs")
    rows = [job_status(info, slurm, outputs, experiment) for info in infos]
    agg_states = [(a, slurm.rows[a].state if a in slurm.rows else "UNKNOWN") for a in agg]
    return ExperimentStatus(experiment, rows, slurm, agg_states, bool(ids))


def collect_all(
    jobs: str | Path = "jobs", outputs: str | Path = "outputs", runner: slurm_query.Runner | None = None
) -> list[ExperimentStatus]:
    """Every experiment under jobs/, sharing one batched SLURM query across them."""
    names = list_experiments(jobs)
    manifests = {n: read_manifest(jobs, n) for n in names}
    ids = [i for n in names for i in slurm_task_ids(expected_jobs(n, jobs, outputs, manifests[n]))]
    ids += [a for n in names for a in aggregate_ids(manifests[n])]
    slurm = slurm_query.query(ids, runner) if ids else QueryResult({}, None, "no SLURM jobs")
    return [collect(n, jobs, outputs, slurm=slurm) for n in names]


# --------------------------------------------------------------------------- formatting


def default_console() -> Console:
    """The terminal's console; piped, redirected or in a batch job, a wide one rather than wrapped cells."""
    console = Console()
    return console if console.is_terminal else Console(width=max(console.width, 160))


def fmt_duration(seconds: float | None) -> str:
    """1:02:03, 2d 03:04:05; '-' when unknown."""
    if seconds is None or not math.isfinite(seconds) or seconds < 0:
        return "-"
    minutes, secs = divmod(int(round(seconds)), 60)
    hours, minutes = divmod(minutes, 60)
    days, hours = divmod(hours, 24)
    clock = f"{hours}:{minutes:02d}:{secs:02d}"
    return f"{days}d {clock}" if days else clock


def _num(value: Any) -> float | None:
    try:
        out = float(value)
    except (TypeError, ValueError):
        return None
    return out if math.isfinite(out) else None


def progress_cells(status: JobStatus) -> tuple[str, str, str, str]:
    """(epoch, best, samples/s, ETA) from progress.json; '-' for what is not known."""
    p = status.progress or {}
    epoch, max_epochs = as_int(p.get("epoch")), as_int(p.get("max_epochs"))
    epoch_cell = "-" if epoch is None else f"{epoch}/{max_epochs}" if max_epochs else str(epoch)
    best = p.get("best") if isinstance(p.get("best"), dict) else {}
    value = _num(best.get("value"))
    best_cell = "-" if value is None else f"{best.get('metric', '')} {value:.4f}".strip()
    rate = _num(p.get("samples_per_s"))
    rate_cell = "-" if rate is None else f"{rate:,.0f}"
    eta = _num(p.get("eta_s")) if status.state not in TERMINAL_STATES else None
    return epoch_cell, best_cell, rate_cell, fmt_duration(eta)


def state_text(state: str) -> Text:
    style = STATE_STYLE.get(state, "red" if state in FAILED_STATES else "magenta")
    return Text(state, style=style)


def build_table(status: ExperimentStatus) -> Table:
    table = Table(title=f"{status.experiment}: {len(status.jobs)} jobs", title_justify="left")
    for column, justify in [("job", "left"), ("group", "left"), ("fold", "right"), ("state", "left"),
                            ("node", "left"), ("elapsed", "right"), ("epoch", "right"), ("best", "right"),
                            ("samples/s", "right"), ("ETA", "right")]:  # fmt: skip
        table.add_column(column, justify=justify, no_wrap=column in ("job", "state"))  # type: ignore[arg-type]
    for job in status.jobs:
        info, row = job.info, job.slurm
        name = Text(info.name)
        if info.job_id:
            name.append(f" {info.job_id}", style="dim")
        fold = "-" if info.fold is None else str(info.fold)
        table.add_row(name, info.group, fold, state_text(job.state), row.node if row and row.node else "-",
                      row.elapsed if row and row.elapsed else "-", *progress_cells(job))  # fmt: skip
    return table


def counts_line(counts: dict[str, int]) -> Text:
    line = Text()
    for i, (state, n) in enumerate(counts.items()):
        line.append("  " if i else "")
        line.append_text(state_text(state))
        line.append(f" {n}")
    return line


def slurm_line(status: ExperimentStatus) -> Text:
    s = status.slurm
    if not status.has_slurm_jobs:
        return Text("local run: states from job files", style="dim")
    if s.source is None:
        return Text(f"{s.note}: states from job files", style="yellow")
    note = f" ({s.note}; jobs it no longer knows are read from job files)" if s.note else ""
    return Text(f"SLURM view: {s.source}{note}", style="dim")


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


def failure_tails(status: ExperimentStatus, lines: int = 10) -> list[RenderableType]:
    """For each failed job: a header line and the last lines of its stderr (else of its error.txt);
    a tail already shown for another job is named, not repeated."""
    out: list[RenderableType] = []
    shown: dict[tuple[str, ...], str] = {}
    for job in status.jobs:
        if job.state not in FAILED_STATES:
            continue
        path: str | Path | None = job.info.stderr
        body = tail(path, lines)
        if not body and job.folder is not None and (job.folder / "error.txt").exists():
            path = job.folder / "error.txt"  # the job's own traceback when there is no log
            body = tail(path, lines)
        exit_code = f", exit {job.slurm.exit_code}" if job.slurm and job.slurm.exit_code else ""
        head = Text(f"{job.info.name} {job.info.job_id or ''} {job.slurm.raw_state if job.slurm else job.state}"
                    f"{exit_code} — {path or 'no stderr path in the manifest'}", style="bold red")  # fmt: skip
        if body and tuple(body) in shown:
            out += [head, Text(f"(same last lines as {shown[tuple(body)]})", style="dim")]
            continue
        if body:
            shown[tuple(body)] = job.info.name
        out += [head, Text("\n".join(body) if body else "(no log file)", style="dim")]
    return out


def status_renderable(status: ExperimentStatus, tail_lines: int = 10) -> RenderableType:
    parts: list[RenderableType] = [build_table(status), counts_line(status.counts), slurm_line(status)]
    if status.aggregate:
        parts.append(Text("aggregate job: " + ", ".join(f"{i} {s}" for i, s in status.aggregate)))
    return Group(*parts, *failure_tails(status, tail_lines))


def overview_table(statuses: Sequence[ExperimentStatus]) -> Table:
    states = [s for s in STATE_ORDER if any(s in st.counts for st in statuses)]
    others = sorted({s for st in statuses for s in st.counts} - set(states))
    table = Table(title="experiments", title_justify="left")
    for column in ["experiment", "jobs", *states, *others, "SLURM view"]:
        table.add_column(column, justify="left" if column in ("experiment", "SLURM view") else "right")
    for st in statuses:
        view = st.slurm.source or ("files" if st.has_slurm_jobs else "local")
        table.add_row(st.experiment, str(len(st.jobs)), *(str(st.counts.get(s, 0)) for s in states + others), view)
    return table


def overview_renderable(statuses: Sequence[ExperimentStatus], jobs: str | Path = "jobs") -> RenderableType:
    if not statuses:
        return Text(f"no experiments under {jobs}/ (no */manifest.json)")
    notes = {st.slurm.note for st in statuses if st.has_slurm_jobs and st.slurm.source is None}
    return Group(overview_table(statuses), *(Text(f"{n}: states from job files", style="yellow") for n in notes))


# --------------------------------------------------------------------------- actions


def show(
    experiment: str | None,
    jobs: str | Path = "jobs",
    outputs: str | Path = "outputs",
    console: Console | None = None,
    watch: float | None = None,
    runner: slurm_query.Runner | None = None,
) -> None:
    """Print the status once, or refresh it live every `watch` seconds until nothing is active (or Ctrl-C)."""
    console = console or default_console()

    def snapshot() -> tuple[RenderableType, bool]:
        if experiment is None:
            statuses = collect_all(jobs, outputs, runner)
            return overview_renderable(statuses, jobs), any(s.active for s in statuses)
        status = collect(experiment, jobs, outputs, runner=runner)
        return status_renderable(status), status.active

    renderable, active = snapshot()
    if watch is None:
        console.print(renderable)
        return
    try:
        with Live(renderable, console=console, auto_refresh=False) as live:
            while active:
                time.sleep(watch)
                renderable, active = snapshot()
                live.update(renderable, refresh=True)
    except KeyboardInterrupt:
        pass
    if not console.is_terminal:  # Live leaves the last line open when not on a terminal
        console.line()


def find_job(experiment: str, job: str, jobs: str | Path = "jobs", outputs: str | Path = "outputs") -> JobInfo:
    """A job by name ("cat_fold3") or by SLURM id ("123_4")."""
    infos = expected_jobs(experiment, jobs, outputs)
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
    error = Path(outputs) / experiment / info.name / "error.txt"
    if error.exists():
        logs.append(("error.txt", str(error), tail(error, lines)))
    return logs


def print_logs(logs: list[tuple[str, str | None, list[str] | None]], console: Console) -> None:
    for stream, path, body in logs:
        console.rule(f"{stream}: {path or '(no path in manifest)'}")
        console.print(Text("\n".join(body)) if body else Text("(no file)", style="dim"))


def cancel(
    experiment: str,
    job: str | None = None,
    jobs: str | Path = "jobs",
    outputs: str | Path = "outputs",
    runner: slurm_query.Runner | None = None,
) -> list[str]:
    """scancel one task (by name or id), or the whole experiment (arrays + aggregate jobs).
    Returns human-readable lines saying what was cancelled."""
    if job is not None:
        info = find_job(experiment, job, jobs, outputs)
        if info.mode != "slurm" or not info.job_id:
            raise ConfigError(f"job {info.name} is a {info.mode} run with no SLURM id: stop the process that runs it")
        _scancel([info.job_id], runner)
        return [f"cancelled {info.name} ({info.job_id})"]
    manifest = read_manifest(jobs, experiment)
    if manifest is None:
        raise ConfigError(f"cannot cancel {experiment!r}: no {Path(jobs) / experiment / 'manifest.json'}")
    roles = {a: "job array" for a in array_ids(manifest)} | {a: "aggregate job" for a in aggregate_ids(manifest)}
    for info in expected_jobs(experiment, jobs, outputs, manifest):  # jobs submitted outside an array
        if info.mode == "slurm" and info.job_id:
            roles.setdefault(info.job_id.split("_", 1)[0], "job")
    if not roles:
        raise ConfigError(f"experiment {experiment!r} has no SLURM jobs to cancel (local runs: stop their process)")
    ids = _still_active(list(roles), runner)
    if ids:
        _scancel(ids, runner)
    return [f"cancelled {roles[i]} {i}" for i in ids] or ["nothing to cancel: every SLURM job has ended"]


def _still_active(ids: list[str], runner: slurm_query.Runner | None) -> list[str]:
    """The ids (arrays or jobs) with a task that has not ended; all of them when SLURM cannot tell."""
    result = slurm_query.query(ids, runner)
    if result.source is None:
        return ids
    # squeue forgets ended jobs: an id it no longer shows has ended too.
    return [i for i in ids if _any_active(i, result.rows)]


def _any_active(array_or_job: str, rows: dict[str, SlurmRow]) -> bool:
    return any(
        r.state not in TERMINAL_STATES for k, r in rows.items() if k == array_or_job or k.startswith(f"{array_or_job}_")
    )


def _scancel(ids: list[str], runner: slurm_query.Runner | None) -> None:
    result = slurm_query.cancel(ids, runner)
    if result.returncode != 0:
        raise SubmissionError(f"scancel {' '.join(ids)} failed: {(result.stderr or result.stdout).strip()}")
