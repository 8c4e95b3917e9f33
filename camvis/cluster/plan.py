"""Deciding what to run: skip jobs finished with the same config hash, resubmit failed,
missing or stale ones, and never submit twice a job that SLURM still queues or runs.

A job's status comes from its output directory alone (outputs/<experiment>/<job>/). What a
resubmitted job then does (resume, re-evaluate, retrain keeping the earlier outputs) is
camvis.job.identity's rule, run by the job itself; the reasons here say it in advance from the
hashes that scores.json and progress.json record. No torch here: the launcher runs on login nodes.
"""

from __future__ import annotations

import os
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Mapping

from camvis.config import experiment_dir, job_dir, name_problem, train_hash
from camvis.errors import ConfigError
from camvis.cluster.grid import JobSpec
from camvis.bookkeeping.jobfolder import CHECKPOINT, ERROR, PROGRESS, SCORES, is_finished, read_json

RETRAINS = "retrains from scratch, earlier outputs kept under previous/"


@dataclass(frozen=True)
class Decision:
    job: JobSpec
    submit: bool
    reason: str
    status: str  # finished | stale | failed | incomplete | new | active | forced | restart


def new_run_id() -> str:
    """A --restart's id: the job trains afresh unless its folder's training carries this id."""
    return uuid.uuid4().hex[:12]


def outputs_status(job: JobSpec, outputs: str | Path) -> tuple[str, str]:
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
        return "stale", f"config changed since it finished (hash {found} -> {job.hash}): " + \
            _what_it_does(scores.get("train_hash"), job, "re-evaluates best.pt (only eval changed)")
    if (directory / ERROR).exists():
        return "failed", f"failed earlier ({ERROR}): resubmit"
    if (directory / CHECKPOINT).exists():
        recorded = (read_json(directory / PROGRESS) or {}).get("train_hash")
        return "incomplete", "unfinished: " + _what_it_does(recorded, job, f"resumes from {CHECKPOINT}")
    if directory.exists():
        return "incomplete", "started, no checkpoint: resubmit"
    return "new", "new"


def _what_it_does(recorded: str | None, job: JobSpec, same: str) -> str:
    """What the job will do with the training its folder holds (hash from scores/progress.json)."""
    if recorded is None:  # written before camvis recorded it: the job reads its checkpoint
        return f"{same} if the training config matches, else {RETRAINS}"
    return same if recorded == train_hash(job.config) else f"training config changed: {RETRAINS}"


def plan(jobs: Iterable[JobSpec], outputs: str | Path, *, force: bool = False, restart: bool = False,
         active: Mapping[str, str] | None = None) -> list[Decision]:
    """Which jobs to submit. Finished ones are skipped (unless force: they re-evaluate, or
    restart: every job retrains); jobs that SLURM still runs or queues (`active`: name ->
    "123_4 RUNNING") are never submitted twice."""
    decisions = []
    folders = _Folders(outputs)
    for job in jobs:
        status, reason = ("new", "new") if folders.absent(job) else outputs_status(job, outputs)
        if active and job.name in active:
            decisions.append(Decision(job, False, f"still queued/running as {active[job.name]}", "active"))
        elif restart:
            decisions.append(Decision(job, True, f"--restart: {RETRAINS}" if status != "new" else
                                      "--restart: new", "restart"))
        elif status == "finished" and force:
            decisions.append(Decision(job, True, f"--force: {reason}; re-evaluates best.pt, no training", "forced"))
        else:
            decisions.append(Decision(job, status != "finished", reason, status))
    return decisions


class _Folders:
    """Which job folders exist, one listing of outputs/<experiment>/ per experiment: a job without a
    folder is new without the stat calls and path resolution outputs_status makes (a 5,000-job grid's
    first launch). Its name is a checked file-system-safe name, so its folder lies under outputs
    whenever the experiment's folder does; an experiment whose folder cannot be listed or resolves
    outside outputs leaves every job to outputs_status (and its error)."""

    def __init__(self, outputs: str | Path) -> None:
        self.outputs = outputs
        self.listed: dict[str, set[str] | None] = {}

    def absent(self, job: JobSpec) -> bool:
        experiment = job.config.experiment
        if experiment not in self.listed:
            self.listed[experiment] = self._names(experiment)
        names = self.listed[experiment]
        return names is not None and job.config.name not in names and name_problem("name", job.config.name) is None

    def _names(self, experiment: str) -> set[str] | None:
        try:
            folder = experiment_dir(experiment, self.outputs)
            return set(os.listdir(folder))
        except FileNotFoundError:
            return set()
        except (ConfigError, OSError):
            return None
