"""Batched, read-mostly SLURM queries shared by `camvis-status` and `camvis-aggregate`.

One `sacct -D` call for every job of an experiment (accounting on: one row per attempt, so a
requeued job's earlier attempts are known too, each followed by its steps, whose MaxRSS the attempt's
usage takes: camvis.bookkeeping.usage), else one `squeue -t all` call (which forgets finished jobs after
MinJobAge and keeps no attempts). Parsing is kept apart from the
subprocess calls so that it can be tested on captured output. No torch here: this runs on
a login node.
"""

from __future__ import annotations

import dataclasses
import functools
import re
import shutil
import subprocess
from dataclasses import dataclass
from typing import Callable, Iterable, Sequence

from camvis.bookkeeping import usage as slurm_usage
from camvis.errors import SubmissionError

Runner = Callable[[Sequence[str]], subprocess.CompletedProcess]

# The first five name the job and its state; the rest are what it used (camvis.bookkeeping.usage).
SACCT_FIELDS = "JobID,State,NodeList,Elapsed,ExitCode,TotalCPU,AllocCPUS,ReqMem,MaxRSS,NNodes,NTasks,AllocTRES"
SQUEUE_FORMAT = "%i|%T|%N|%M"
QUERY_TIMEOUT_S = 30.0

# States after which a job will not run again by itself.
DONE_STATES = frozenset({"COMPLETED"})
FAILED_STATES = frozenset(
    {"FAILED", "CANCELLED", "TIMEOUT", "NODE_FAIL", "OUT_OF_MEMORY", "BOOT_FAIL", "DEADLINE", "PREEMPTED"}
)
# REVOKED: a federated sibling job removed because another cluster started it; it never runs here.
TERMINAL_STATES = DONE_STATES | FAILED_STATES | {"REVOKED"}
UNKNOWN = "UNKNOWN"  # no state at all (normalize_state of an empty field; experiment_files when files cannot tell)

# "123_[4-7%2]", "123_[4,6-9]": the pending remainder of an array, one record for many tasks.
_PENDING_RANGE = re.compile(r"^(?P<array>\d+)_\[(?P<ranges>[\d,\-]+)(?:%\d+)?\]$")


@dataclass(frozen=True)
class SlurmRow:
    """SLURM's view of one job or array task."""

    job_id: str  # "123" or "123_4"
    state: str  # normalized: first word, upper case ("CANCELLED by 0" -> "CANCELLED")
    raw_state: str
    node: str = ""
    elapsed: str = ""
    exit_code: str = ""
    # How the job's earlier attempts ended, oldest first ("NODE_FAIL", "REQUEUED", ...): sacct -D
    # only; empty for a job run once and for squeue, which knows the current attempt alone.
    history: tuple[str, ...] = ()
    # sacct only: the current attempt's job line ((field, value) pairs) and the MaxRSS, NTasks, NNodes of
    # its steps that the accounting polled; read into `usage` when asked (a launch's query never does).
    accounting: tuple[tuple[str, str], ...] | None = None
    steps: tuple[tuple[str, str, str], ...] = ()

    @functools.cached_property
    def usage(self) -> slurm_usage.Usage | None:
        """What the current attempt used against its request (camvis.bookkeeping.usage); None from squeue."""
        if self.accounting is None:
            return None
        return slurm_usage.attempt_usage(dict(self.accounting), self.steps)


@dataclass(frozen=True)
class QueryResult:
    """What one batched query found; `source` None means SLURM was not asked or did not answer."""

    rows: dict[str, SlurmRow]
    source: str | None  # "sacct" | "squeue" | None
    note: str = ""  # why SLURM's view is partial or missing, for the user

    @property
    def reachable(self) -> bool:
        return self.source is not None


def normalize_state(raw: str) -> str:
    """'CANCELLED by 0' -> 'CANCELLED', 'RUNNING' -> 'RUNNING', '' -> 'UNKNOWN'."""
    words = raw.strip().split()
    return words[0].rstrip("+").upper() if words else UNKNOWN


def is_active(state: str) -> bool:
    """Whether a job in `state` may still run, or run again, by itself: the one definition of
    "active" (the launcher does not resubmit active jobs, camvis-status --watch waits for them,
    --cancel scancels them).

    Active = not terminal, so every state SLURM may add or that is not listed here (PENDING,
    RUNNING, REQUEUED, REQUEUE_HOLD, SPECIAL_EXIT, SUSPENDED, STOPPED, ...) keeps the job SLURM's.
    UNKNOWN is not active: it is not a state SLURM reports for a job it knows, but the absence of
    one (an empty state field, or a job SLURM has forgotten and whose files cannot tell); nothing
    will change it, so --watch must not wait on it and the launcher may submit the job again.
    """
    state = normalize_state(state)
    return state not in TERMINAL_STATES and state != UNKNOWN


def expand_job_id(job_id: str) -> list[str]:
    """'123_[4-6%2]' -> ['123_4', '123_5', '123_6']; plain ids are returned as they are."""
    match = _PENDING_RANGE.match(job_id)
    if match is None:
        return [job_id]
    out: list[str] = []
    for part in match["ranges"].split(","):
        if not part:
            continue
        low, _, high = part.partition("-")
        out.extend(f"{match['array']}_{i}" for i in range(int(low), int(high or low) + 1))
    return out


def parse_rows(text: str, fields: Sequence[str]) -> dict[str, SlurmRow]:
    """Parse '|'-separated sacct/squeue lines; pending ranges are expanded. sacct -D shows a requeued job once
    per attempt, the latest last: the last row of an id is its current state, the earlier ones its history.
    Steps ("123_4.batch", "123_4.0") follow their attempt's row: their memory goes to that attempt's usage."""
    rows: dict[str, SlurmRow] = {}
    steps: dict[str, list[tuple[str, str, str]]] = {}  # job id -> its current attempt's polled steps
    accounted = "TotalCPU" in fields
    at = {f: i for i, f in enumerate(fields)}
    rss, tasks, nodes = (at.get(f, len(fields)) for f in ("MaxRSS", "NTasks", "NNodes"))
    for line in text.splitlines():
        if not line.strip():
            continue
        cells = line.split("|") + [""] * len(fields)  # one more: absent fields are ""
        job_id = cells[at["JobID"]].strip()
        if "." in job_id:  # a step: only its memory is read (most lines of a big grid are steps)
            if accounted and cells[rss].strip():
                polled = (cells[rss].strip(), cells[tasks].strip(), cells[nodes].strip())
                steps.setdefault(job_id.split(".", 1)[0], []).append(polled)
            continue
        if not job_id:
            continue
        values = dict(zip(fields, (v.strip() for v in cells)))
        raw = values.get("State", "")
        for one in expand_job_id(job_id):
            steps.pop(one, None)  # a new attempt: the earlier one's steps are not its own
            rows[one] = SlurmRow(
                job_id=one,
                state=normalize_state(raw),
                raw_state=raw,
                node=_none_to_empty(values.get("NodeList", "")),
                elapsed=values.get("Elapsed", ""),
                exit_code=values.get("ExitCode", ""),
                history=_history(rows.get(one)),
                accounting=tuple(values.items()) if accounted else None,
            )
    for job_id, polled in steps.items():
        if job_id in rows:
            rows[job_id] = dataclasses.replace(rows[job_id], steps=tuple(polled))
    return rows


def _history(earlier: SlurmRow | None) -> tuple[str, ...]:
    """The attempts before a row: the earlier row's, and the earlier row itself if it ran (a PENDING
    row is no attempt: a pending array range that sacct still lists beside the task split off it)."""
    if earlier is None:
        return ()
    return earlier.history if earlier.state == "PENDING" else (*earlier.history, earlier.state)


def parse_sacct(text: str) -> dict[str, SlurmRow]:
    return parse_rows(text, SACCT_FIELDS.split(","))


def parse_squeue(text: str) -> dict[str, SlurmRow]:
    return parse_rows(text, ["JobID", "State", "NodeList", "Elapsed"])


def _none_to_empty(node: str) -> str:
    # sacct writes "None assigned" for pending jobs, squeue an empty field or "(null)".
    return "" if node.lower().startswith(("none", "(null)")) else node


def query_ids(job_ids: Iterable[str | None]) -> list[str]:
    """The ids to ask for: one per array (asking for the array returns all its tasks, the
    pending remainder included) and every plain job id; sorted, no duplicates."""
    ids = {str(j).split("_", 1)[0] for j in job_ids if j and str(j).split("_", 1)[0].isdigit()}
    return sorted(ids, key=int)


def tool_on_path(name: str) -> bool:
    return shutil.which(name) is not None


def slurm_on_path() -> bool:
    return tool_on_path("sacct") or tool_on_path("squeue")


def _run(cmd: Sequence[str]) -> subprocess.CompletedProcess:
    return subprocess.run(list(cmd), capture_output=True, text=True, timeout=QUERY_TIMEOUT_S, check=False)


def sacct_command(ids: Sequence[str]) -> list[str]:
    # -D: every attempt of a requeued job (duplicates), not only the latest; no -X: the steps hold MaxRSS.
    return ["sacct", "-D", "-j", ",".join(ids), "-P", "-n", "-o", SACCT_FIELDS]


def squeue_command(ids: Sequence[str]) -> list[str]:
    return ["squeue", "-h", "-t", "all", "-j", ",".join(ids), "-o", SQUEUE_FORMAT]


def query(job_ids: Iterable[str | None], runner: Runner | None = None) -> QueryResult:
    """SLURM's view of `job_ids` (task ids like "123_4" or plain ids) in ONE batched call:
    sacct when accounting works, else squeue -t all. Never raises for an absent SLURM."""
    ids = query_ids(job_ids)
    if not ids:
        return QueryResult({}, None, "no SLURM job ids")
    if runner is None:
        if not slurm_on_path():
            return QueryResult({}, None, "SLURM is not reachable (no sacct/squeue on PATH)")
        runner = _run
    sacct = _call(runner, sacct_command(ids))
    if sacct is not None and sacct.returncode == 0:
        return QueryResult(_with_unrecorded(parse_sacct(sacct.stdout), ids, runner), "sacct")
    squeue = _call(runner, squeue_command(ids))
    if squeue is None:
        return QueryResult({}, None, "SLURM is not reachable (sacct and squeue could not run)")
    if squeue.returncode == 0:
        return QueryResult(parse_squeue(squeue.stdout), "squeue", "accounting off: squeue forgets finished jobs")
    if "invalid job id" in (squeue.stderr or "").lower():  # every id already forgotten
        return QueryResult({}, "squeue", "accounting off and squeue no longer knows these jobs")
    message = (squeue.stderr or squeue.stdout or "").strip().splitlines()
    return QueryResult({}, None, f"SLURM is not reachable: {message[-1] if message else 'squeue failed'}")


def _with_unrecorded(rows: dict[str, SlurmRow], ids: list[str], runner: Runner) -> dict[str, SlurmRow]:
    """sacct learns of a job seconds after sbatch (slurmdbd lags the controller): the ids it has no
    row for at all are asked of squeue, in one more call, only when there are some."""
    missing = [i for i in ids if not any(k == i or k.startswith(f"{i}_") for k in rows)]
    squeue = _call(runner, squeue_command(missing)) if missing else None
    if squeue is None or squeue.returncode != 0:  # "Invalid job id": long forgotten, nothing to add
        return rows
    return {**parse_squeue(squeue.stdout), **rows}


def _call(runner: Runner, cmd: list[str]) -> subprocess.CompletedProcess | None:
    try:
        return runner(cmd)
    except (OSError, subprocess.SubprocessError):
        return None


def scancel(job_ids: Sequence[str], runner: Runner | None = None) -> subprocess.CompletedProcess:
    """scancel every id in one call ("123" cancels a whole array, "123_4" one task)."""
    if runner is None:
        if not tool_on_path("scancel"):
            raise SubmissionError("cannot cancel: scancel is not on PATH (SLURM is not reachable)")
        runner = _run
    try:
        return runner(["scancel", *job_ids])
    except (OSError, subprocess.SubprocessError) as e:
        raise SubmissionError(f"scancel {' '.join(job_ids)} failed: {e}") from e
