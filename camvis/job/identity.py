"""Which training a job folder's results come from; earlier results are moved aside, never overwritten.

outputs/<exp>/<job>/ holds ONE training (checkpoint.pt and best.pt record its train_hash, of
the data, model and train sections, and the restart id of the run that started it) and its
latest evaluation (scores.json records the full config_hash). Before a job writes anything,
`settle` compares them with the job's config:

- same training (and, under --restart, the same restart id: a requeued restart resumes its own
  fresh training): kept; it resumes, or re-evaluates when finished. An evaluation of another
  config is moved to previous/<time>_eval-<config_hash>/ first.
- another training, a --restart of an earlier run, or an unreadable checkpoint under --restart:
  every top-level entry moves to previous/<time>_train-<train_hash>/ and training starts afresh.
- the same config on other inputs: train_hash covers the config only (the launcher hashes it
  without opening the store), so checkpoints also record the statistics their inputs were
  normalized with (rule, mean, std); when the store now gives the job others (rebuilt with
  per-fold statistics, or from other data), the training is another one and moves aside too.
  A checkpoint without the record predates per-fold statistics: it was normalized globally.

Hidden entries (locks, writers' .tmp files) stay. camvis-status and camvis-aggregate read a
job folder's top level only, so previous/ is never taken for the current result.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from camvis.job import checkpoint
from camvis.config import JobConfig, config_hash, train_hash
from camvis.data.store_info import NORM_GLOBAL
from camvis.bookkeeping.jobfolder import BEST, CHECKPOINT, PREVIOUS, PROGRESS, SCORES, TENSORBOARD, read_json

TRAINING = (CHECKPOINT, BEST, PROGRESS, TENSORBOARD)  # what an eval-only change keeps
# Moved first: a folder caught mid-move never looks finished; checkpoint.pt last: a killed
# move is redone (into another folder) by the next run, since it still sees the old training.
_FIRST, _LAST = (SCORES,), (BEST, CHECKPOINT)


@dataclass(frozen=True)
class Trained:
    """The training a job folder holds, as its checkpoint (or best.pt) records it."""

    train_hash: str | None
    run_id: str | None
    normalization: dict[str, Any] | None = None  # train.TrainState.normalization, as saved


def trained(directory: Path) -> Trained | None:
    """The folder's training, from checkpoint.pt, else best.pt; None when nothing was trained.
    An unreadable or foreign file is a CheckpointError."""
    for name in (CHECKPOINT, BEST):
        path = directory / name
        if path.exists():
            payload = checkpoint.read(path, required=("model",))
            state = payload.get("state") if isinstance(payload.get("state"), dict) else {}
            run_id = payload.get("run_id", state.get("run_id"))
            norm = payload.get("normalization")
            return Trained(checkpoint.recorded_train_hash(payload), run_id if isinstance(run_id, str) else None,
                           norm if isinstance(norm, dict) else None)
    return None


def settle(directory: Path, cfg: JobConfig, restart: str | None = None,
           inputs: Callable[[], dict[str, Any]] | None = None) -> tuple[Path, str] | None:
    """Make `directory` hold only outputs of `cfg`'s training (see the module doc); returns
    (where the earlier outputs went, why) or None when nothing moved. `inputs`: the job's
    Normalization.record(), asked for only when there is a training to compare it with."""
    if not directory.is_dir():
        return None
    try:
        current = trained(directory)
    except checkpoint.CheckpointError:
        if restart is None:
            raise
        return move_aside(directory, "train-unreadable"), "its checkpoint is unreadable"
    wanted = train_hash(cfg)
    if current is not None and current.train_hash != wanted:
        why = f"trained with another config (train hash {current.train_hash} -> {wanted})"
        return move_aside(directory, f"train-{current.train_hash}"), why
    if current is not None and inputs is not None:
        why = inputs_differ(current.normalization, inputs())
        if why:
            return move_aside(directory, f"train-{current.train_hash}"), why
    if current is not None and restart is not None and current.run_id != restart:
        return move_aside(directory, f"train-{current.train_hash}"), "--restart"
    if current is None and restart is not None and (directory / SCORES).exists():
        return move_aside(directory, "train-none"), "--restart"
    return keep_earlier_evaluation(directory, cfg)


def inputs_differ(recorded: dict[str, Any] | None, now: dict[str, Any]) -> str | None:
    """Why a training recorded with normalization `recorded` is not one on inputs normalized as `now`
    (both Normalization.record()s), or None when they are the same."""
    old_rule = recorded.get("rule") if recorded is not None else NORM_GLOBAL  # before the record: global
    if old_rule != now.get("rule"):
        return f"trained on inputs normalized with {old_rule} statistics, the store now gives {now.get('rule')}"
    if recorded is not None and (recorded.get("mean") != now.get("mean") or recorded.get("std") != now.get("std")):
        return "trained on inputs normalized with other statistics (the store was rebuilt from other data)"
    return None


def keep_earlier_evaluation(directory: Path, cfg: JobConfig) -> tuple[Path, str] | None:
    """An evaluation of another config is moved aside before a new one is written (also camvis-eval's)."""
    if not (directory / SCORES).exists():
        return None
    found = (read_json(directory / SCORES) or {}).get("config_hash")
    if found == config_hash(cfg):
        return None  # the same config: re-evaluating gives the same result (--force)
    moving = [name for name in _entries(directory) if name not in TRAINING]
    return move_aside(directory, f"eval-{found or 'unknown'}", moving), f"evaluated with another config ({found})"


def move_aside(directory: Path, label: str, names: list[str] | None = None) -> Path:
    """Move `names` (default: every top-level entry but previous/ and hidden ones) into
    previous/<UTC time>_<label>/ (renames within the folder: nothing is copied or rewritten)."""
    names = _entries(directory) if names is None else names
    target = _new_folder(directory / PREVIOUS, label)
    order = [n for n in _FIRST if n in names] + [n for n in names if n not in _FIRST + _LAST] + \
        [n for n in _LAST if n in names]
    for name in order:
        os.replace(directory / name, target / name)
    return target


def _entries(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir() if p.name != PREVIOUS and not p.name.startswith("."))


def _new_folder(parent: Path, label: str) -> Path:
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    for n in range(1, 1000):
        path = parent / (f"{stamp}_{label}" + (f"_{n}" if n > 1 else ""))
        try:
            path.mkdir(parents=True)
            return path
        except FileExistsError:
            continue
    raise FileExistsError(f"{parent}: too many earlier outputs named {stamp}_{label}")

