"""`camvis-status`: the status data (camvis.bookkeeping.status: an experiment's files joined with SLURM's
view, one batched query) rendered as rich tables, refreshed, followed; cancelling.

Reading lives in camvis.bookkeeping.status (camvis-aggregate reads it too), rendering here, so that
both can be tested without a cluster. No torch here: this runs on a login node.
"""

from __future__ import annotations

import math
import sys
import re
import time
from collections import Counter
from pathlib import Path
from typing import Any, Sequence

from rich.console import Console, Group, RenderableType
from rich.live import Live
from rich.table import Table
from rich.text import Text

from camvis.bookkeeping import experiment_files
from camvis.cluster import efficiency_view
from camvis.bookkeeping import slurm_query
from camvis.bookkeeping import store_builds
from camvis.console import default_console, plural, shape_text
from camvis.errors import ConfigError, SubmissionError
from camvis.bookkeeping.jobfolder import as_number
from camvis.bookkeeping.experiment_files import (
    aggregate_ids,
    array_ids,
    as_int,
    expected_jobs,
    find_job,
    experiment_manifest,
    tail,
)
from camvis.bookkeeping.manifest import record_cancelled
from camvis.bookkeeping.status import ExperimentStatus, JobStatus, collect, collect_all, STATE_ORDER
from camvis.bookkeeping.slurm_query import FAILED_STATES, SlurmRow, is_active

STATE_STYLE = {"COMPLETED": "green", "RUNNING": "cyan", "PENDING": "yellow", "REQUEUED": "yellow", "UNKNOWN": "dim"}


# --------------------------------------------------------------------------- formatting


def fmt_duration(seconds: float | None) -> str:
    """1:02:03, 2d 03:04:05; '-' when unknown."""
    if seconds is None or not math.isfinite(seconds) or seconds < 0:
        return "-"
    minutes, secs = divmod(int(round(seconds)), 60)
    hours, minutes = divmod(minutes, 60)
    days, hours = divmod(hours, 24)
    clock = f"{hours}:{minutes:02d}:{secs:02d}"
    return f"{days}d {clock}" if days else clock


def progress_cells(status: JobStatus) -> tuple[str, str, str, str]:
    """(epoch, best, samples/s, ETA) from progress.json; '-' for what is not known."""
    p = status.progress or {}
    epoch, max_epochs = as_int(p.get("epoch")), as_int(p.get("max_epochs"))
    epoch_cell = "-" if epoch is None else f"{epoch}/{max_epochs}" if max_epochs else str(epoch)
    best = p.get("best") if isinstance(p.get("best"), dict) else {}
    value = as_number(best.get("value"))
    best_cell = "-" if value is None else f"{best.get('metric', '')} {value:.4f}".strip()
    rate = as_number(p.get("samples_per_s"))
    rate_cell = "-" if rate is None else f"{rate:,.0f}"
    eta = as_number(p.get("eta_s")) if is_active(status.state) else None
    return epoch_cell, best_cell, rate_cell, fmt_duration(eta)


def device_cell(status: JobStatus) -> str:
    """What the job trains on (camvis.job.device.describe in progress.json or scores.json): `cuda x2`, `cpu`."""
    recorded = (status.progress or {}).get("device") or (status.scores or {}).get("device")
    if not isinstance(recorded, dict) or not isinstance(recorded.get("type"), str):
        return "-"
    count = recorded.get("count")
    return f"{recorded['type']} x{count}" if isinstance(count, int) and count > 1 else recorded["type"]


def node_list(nodes: str) -> list[str]:
    """SLURM's compressed node list of a job ("n[1-3,7]", "gpu[01-02],cpu5") as names."""
    names: list[str] = []
    for prefix, ranges, plain in re.findall(r"([^,\[]+)\[([^\]]+)\]|([^,\[\]]+)", nodes):
        if plain:
            names.append(plain)
            continue
        for part in ranges.split(","):
            low, _, high = part.partition("-")
            names.extend(f"{prefix}{i:0{len(low)}d}" for i in range(int(low), int(high or low) + 1))
    return names


def state_text(state: str, restarts: int = 0, history: Sequence[str] = ()) -> Text:
    """The state, how its earlier attempts ended (sacct -D: node failure, preemption, time limit) and
    how often the job resumed (progress.json): "RUNNING (after NODE_FAIL; restarts 1)"."""
    text = Text(state, style=STATE_STYLE.get(state, "red" if state in FAILED_STATES else "magenta"))
    notes = [f"after {attempts_text(history)}"] if history else []
    notes += [f"restarts {restarts}"] if restarts else []
    if notes:
        text.append(f" ({'; '.join(notes)})", style="dim")
    return text


def attempts_text(history: Sequence[str]) -> str:
    """('NODE_FAIL', 'NODE_FAIL', 'REQUEUED') -> 'NODE_FAIL x2, REQUEUED': each end once, in order."""
    counts = Counter(history)  # insertion order: first appearance
    return ", ".join(state if n == 1 else f"{state} x{n}" for state, n in counts.items())


SELECTION_LABEL = {"inner": "inner-val best", "heldout": "held-out best"}
"""The best column by train.selection (progress.json's best.on; written since camvis knew both, default inner)."""


def best_header(jobs: Sequence[JobStatus]) -> str:
    """What the best column scores: the inner validation split (the default) or the held-out view (camvis2's
    optimistic rule); 'val best' when the jobs differ."""
    on = {str(((j.progress or {}).get("best") or {}).get("on") or "inner") for j in jobs if j.progress}
    return SELECTION_LABEL.get(on.pop(), "val best") if len(on) == 1 else "inner-val best" if not on else "val best"


def build_table(status: ExperimentStatus) -> Table:
    reps = any(job.info.replicate > 1 for job in status.jobs)  # a replicate column only where there are some
    shape = f" ({shape_text(job.info for job in status.jobs)})" if reps else ""
    table = Table(title=f"{status.experiment}: {plural(len(status.jobs), 'job')}{shape}", title_justify="left")
    for column, justify in [("job (id)", "left"), ("group", "left"), ("fold", "right"), *([("rep", "right")] * reps),
                            ("state", "left"), ("state from", "left"), ("node", "left"), ("device", "left"),
                            ("elapsed", "right"), ("epoch", "right"), (best_header(status.jobs), "right"),
                            ("train samples/s", "right"), ("ETA", "right"), ("efficiency (used/asked)", "left")]:  # fmt: skip
        table.add_column(column, justify=justify, no_wrap=column in ("job (id)", "state"))  # type: ignore[arg-type]
    for job in status.jobs:
        info, row = job.info, job.slurm
        name = Text(info.name)
        if info.job_id:  # a local run's id is its process id, not a SLURM id
            name.append(f" {'pid ' if info.mode == 'local' else ''}{info.job_id}", style="dim")
        fold = "-" if info.fold is None else str(info.fold)
        restarts = int((job.progress or {}).get("restarts") or 0)
        state = state_text(job.state, restarts, row.history if row else ())
        table.add_row(name, info.group, fold, *([str(info.replicate)] * reps), state, Text(job.source_text, style="dim"),
                      ",".join(node_list(row.node)) if row and row.node else "-", device_cell(job),
                      row.elapsed if row and row.elapsed else "-", *progress_cells(job),
                      efficiency_view.cell(efficiency_view.of_job(job, status.resources.get(info.name))))  # fmt: skip
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
        if not body and job.folder is not None and (job.folder / experiment_files.ERROR).exists():
            path = job.folder / experiment_files.ERROR  # the job's own traceback when there is no log
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
    parts: list[RenderableType] = [Text(line, style="bold red" if failed else "dim")
                                   for line, failed in status.store_builds]
    if status.stuck:
        parts.append(Text(f"{plural(len(status.stuck), 'job')} pending for ever behind it (squeue: "
                          f"{store_builds.NEVER})", style="red"))
    parts += [build_table(status), counts_line(status.counts), slurm_line(status)]
    if status.aggregate:
        parts.append(Text("aggregate job: " + ", ".join(f"{i} {s}" for i, s in status.aggregate)))
    parts += [Text(f"warning: {line}", style="yellow") for line in efficiency_view.warnings(status)]
    hidden = [j.info.name for j in status.jobs if j.hidden]
    if hidden:
        parts.append(Text(f"not shown: an earlier run's files in the folders of {', '.join(hidden)} "
                          f"(written before these jobs were submitted; they are not this launch's)", style="dim"))
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
    count: int | None = None,
) -> None:
    """Print the status once, or refresh it every `watch` seconds until nothing is active, `count`
    snapshots were shown, or Ctrl-C: in place on a terminal, else one timestamped snapshot after another
    (a log file or a pipe gets every refresh)."""
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
        if console.is_terminal:
            _watch_live(console, renderable, active, watch, snapshot, count)
        else:
            _watch_plain(console, renderable, active, watch, snapshot, count)
    except KeyboardInterrupt:
        pass


def _watch_live(console: Console, renderable: RenderableType, active: bool, every: float, snapshot: Any,
                count: int | None) -> None:
    shown = 1
    with Live(renderable, console=console, auto_refresh=False) as live:
        while active and (count is None or shown < count):
            time.sleep(every)
            renderable, active = snapshot()
            live.update(renderable, refresh=True)
            shown += 1


def _watch_plain(console: Console, renderable: RenderableType, active: bool, every: float, snapshot: Any,
                 count: int | None) -> None:
    """Not a terminal: rich's Live would print nothing until the end, so each refresh is printed whole."""
    shown = 0
    while True:
        shown += 1
        console.rule(f"{time.strftime('%Y-%m-%d %H:%M:%S')} snapshot {shown}", style="dim")
        console.print(renderable)
        if not active or (count is not None and shown >= count):
            return
        time.sleep(every)
        renderable, active = snapshot()


def follow_log(
    experiment: str,
    job: str,
    jobs: str | Path = "jobs",
    outputs: str | Path = "outputs",
    every: float = 2.0,
    count: int | None = None,
    write: Any = None,
    runner: slurm_query.Runner | None = None,
) -> None:
    """`tail -f` of a job's stdout until the job has ended (or `count` polls, or Ctrl-C). The job and its log
    path are looked up again at every poll: a requeued or relaunched job that writes a new log, or starts its
    log again, is followed there, with a line saying so."""
    write = write or (lambda text: (sys.stdout.write(text), sys.stdout.flush()))
    path: str | None = None
    offset, polls = 0, 0
    try:
        while True:
            polls += 1
            info = find_job(experiment, job, jobs, outputs)
            if info.stdout != path or (path and Path(path).exists() and Path(path).stat().st_size < offset):
                if path is not None:
                    write(f"--- {job}: log now {info.stdout} (requeued or relaunched) ---\n")
                path, offset = info.stdout, 0
            offset = _copy_new(path, offset, write)
            status = next((j for j in collect(experiment, jobs, outputs, runner=runner).jobs
                           if j.info.name == info.name), None)
            if status is None or not is_active(status.state) or (count is not None and polls >= count):
                return
            time.sleep(every)
    except KeyboardInterrupt:
        pass


def _copy_new(path: str | None, offset: int, write: Any) -> int:
    """Write what `path` holds past `offset` (whole lines only); the new offset."""
    if not path or not Path(path).exists():
        return offset
    with open(path, "rb") as f:
        f.seek(offset)
        data = f.read()
    end = data.rfind(b"\n") + 1  # a line still being written waits for the next poll
    if end:
        write(data[:end].decode("utf-8", "replace"))
    return offset + end


def print_logs(logs: list[tuple[str, str | None, list[str] | None]], console: Console) -> None:
    for stream, path, body in logs:
        console.rule(f"{stream}: {path or '(no path in manifest)'}")
        console.print(Text("\n".join(body)) if body else Text("(empty)" if body == [] else "(no file)", style="dim"))


def cancel_experiment(
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
        record_cancelled(Path(jobs) / experiment, [info.job_id], "camvis-status --cancel")
        return [f"cancelled {info.name} ({info.job_id})"]
    manifest = experiment_manifest(jobs, experiment)
    if manifest is None:
        raise ConfigError(f"cannot cancel {experiment!r}: no {Path(jobs) / experiment / 'manifest.json'}")
    roles = {a: "job array" for a in array_ids(manifest)} | {a: "aggregate job" for a in aggregate_ids(manifest)} \
        | {str(b["job_id"]): "store build job" for b in store_builds.builds(manifest)}
    for info in expected_jobs(experiment, jobs, outputs, manifest):  # jobs submitted outside an array
        if info.mode == "slurm" and info.job_id:
            roles.setdefault(info.job_id.split("_", 1)[0], "job")
    if not roles:
        raise ConfigError(f"experiment {experiment!r} has no SLURM jobs to cancel (local runs: stop their process)")
    # An id this experiment already scancelled (a relaunch superseding an aggregate) has ended, though
    # sacct may show it pending for a few seconds more.
    done = (manifest or {}).get("cancelled") or {}
    ids = _still_active([i for i in roles if i not in done], runner)
    if ids:
        _scancel(ids, runner)
        record_cancelled(Path(jobs) / experiment, ids, "camvis-status --cancel")
    return [f"cancelled {roles[i]} {i}" for i in ids] or ["nothing to cancel: every SLURM job has ended"]


def _still_active(ids: list[str], runner: slurm_query.Runner | None) -> list[str]:
    """The ids (arrays or jobs) with a task that has not ended; all of them when SLURM cannot tell."""
    result = slurm_query.query(ids, runner)
    if result.source is None:
        return ids
    # squeue forgets ended jobs: an id it no longer shows has ended too.
    return [i for i in ids if _any_active(i, result.rows)]


def _any_active(array_or_job: str, rows: dict[str, SlurmRow]) -> bool:
    return any(is_active(r.state) for k, r in rows.items() if k == array_or_job or k.startswith(f"{array_or_job}_"))


def _scancel(ids: list[str], runner: slurm_query.Runner | None) -> None:
    result = slurm_query.scancel(ids, runner)
    if result.returncode != 0:
        raise SubmissionError(f"scancel {' '.join(ids)} failed: {(result.stderr or result.stdout).strip()}")
