"""A job folder's files, named once for the job that writes them and for every reader, and the
rule that says a job is finished. camvis.bookkeeping: the job side (compute nodes) and the login
side (camvis.cluster, camvis.results) both read it; it imports nothing of camvis.

outputs/<experiment>/<job>/ holds checkpoint.pt, best.pt, config.yaml, progress.json, error.txt,
the evaluation's files and, last, scores.json; earlier outputs are kept under previous/
(camvis.job.identity). The formats: docs/contracts.md.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

# The files of a job directory, named once for the job that writes them and every reader.
SCORES, PROGRESS, CHECKPOINT, BEST, ERROR = "scores.json", "progress.json", "checkpoint.pt", "best.pt", "error.txt"
CONFIG = "config.yaml"  # the job config as run
# The evaluation's files (camvis.job.evaluate), read back by camvis-aggregate (camvis.results).
PREDICTIONS, CONFUSION_CSV, CONFUSION_PNG = "predictions.csv", "confusion.csv", "confusion.png"
BOOTSTRAP, VISIBILITY = "bootstrap.csv", "visibility.csv"
LEARNING_CURVE = "learning_curve.png"  # the training's curves (camvis.job.train_log)
# Folders: the evaluation's figures, TensorBoard's events, earlier outputs (camvis.job.identity).
FIGURES, TENSORBOARD, PREVIOUS = "figures", "tensorboard", "previous"
JOB_FILES = (SCORES, PROGRESS, CHECKPOINT, BEST)
# Beside the job folders, in outputs/<experiment>/: camvis-aggregate's per-image visibility calibration
# (camvis.results.aggregate_visibility.calibrate), carried into a job's bundle (camvis.job.predict.describe).
VISIBILITY_CALIBRATION = "visibility_calibration.json"


def read_json(path: Path) -> dict[str, Any] | None:
    """A JSON object, or None when missing or unreadable (a monitor must not crash on one bad file)."""
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def as_number(value: Any, kind: type = float, positive: bool = False) -> Any:
    """`kind(value)` when it is a finite number (> 0 with `positive`), else None: the one parser
    for the numbers read from job files, whose values a monitor cannot trust."""
    try:
        out = kind(value)
    except (TypeError, ValueError, OverflowError):
        return None
    if not math.isfinite(out) or (positive and out <= 0):
        return None
    return out


def as_int(value: Any) -> int | None:
    return as_number(value, int)


def is_finished(scores: dict[str, Any] | None, config_hash: str | None) -> bool:
    """Finished = scores.json exists and was written for the same config (docs/contracts.md).

    The same rule as camvis.cluster.plan's: scores without a config_hash do not count when the job's
    hash is known. `config_hash` None (a job folder with no manifest entry): nothing to compare.
    """
    if scores is None:
        return False
    return config_hash is None or scores.get("config_hash") == config_hash
