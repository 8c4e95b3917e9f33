"""Deciding what to run: skip jobs finished with the same config hash, resubmit failed,
missing or stale ones, and never submit twice a job that SLURM still queues or runs.

A job's status comes from its output directory alone (outputs/<experiment>/<job>/). No torch
here: the launcher runs on login nodes.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Mapping

from camvis.config import job_dir
from camvis.grid import JobSpec
from camvis.jobfiles import CHECKPOINT, ERROR, SCORES, is_finished, read_json


@dataclass(frozen=True)
class Decision:
    job: JobSpec
    submit: bool
    reason: str
    status: str  # finished | stale | failed | incomplete | new | active | forced


def job_status(job: JobSpec, outputs: str | Path) -> tuple[str, str]:
    """(status, reason) of a job from its output directory alone."""
    directory = job_dir(job.config, outputs)
    scores_path = directory / SCORES
    if scores_path.exists():
        scores = read_json(scores_path)
        if scores is None:
            return "stale", f"unreadable {SCORES}: resubmit"
        if is_finished(scores, job.hash):  # camvis-status's rule too
            return "finished", f"finished ({SCORES}, hash {job.hash})"
        found = scores.get("config_hash")
        return "stale", f"config changed since it finished (hash {found} -> {job.hash}): resubmit"
    if (directory / ERROR).exists():
        return "failed", f"failed earlier ({ERROR}): resubmit"
    if (directory / CHECKPOINT).exists():
        return "incomplete", f"unfinished: resumes from {CHECKPOINT}"
    if directory.exists():
        return "incomplete", "started, no checkpoint: resubmit"
    return "new", "new"


def plan(jobs: Iterable[JobSpec], outputs: str | Path, *, force: bool = False,
         active: Mapping[str, str] | None = None) -> list[Decision]:
    """Which jobs to submit. Finished ones are skipped (unless force); jobs that SLURM still
    runs or queues (`active`: name -> "123_4 RUNNING") are never submitted twice."""
    decisions = []
    for job in jobs:
        status, reason = job_status(job, outputs)
        if active and job.name in active:
            decisions.append(Decision(job, False, f"still queued/running as {active[job.name]}", "active"))
        elif status == "finished" and force:
            decisions.append(Decision(job, True, f"--force: {reason}", "forced"))
        else:
            decisions.append(Decision(job, status != "finished", reason, status))
    return decisions
