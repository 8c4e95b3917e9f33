"""Finished jobs as camvis-aggregate reads them: a job folder's scores.json and bootstrap.csv,
checked, as one `FinishedJob`; every expected job either loads or says why it is left out.

The results layer's own record of a job: compare and aggregate_visibility take it from here,
not from aggregate (which imports them). No torch here.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from camvis.cluster import jobfiles
from camvis.cluster import monitor
from camvis.jobdir import as_number
from camvis.metrics import METRICS
from camvis.progress import track


@dataclass(frozen=True)
class FinishedJob:
    name: str
    group: str  # the grid point without its fold (a group, plus plain axes if any)
    fold: int
    view: str
    model_name: str
    metrics: dict[str, float]
    ci: dict[str, tuple[float, float]]
    boot: np.ndarray  # float64 (n_resamples, len(METRICS)), rows in resample order
    n_val: float | None = None
    n_train: float | None = None
    selection: str = "heldout"  # which validation chose the epoch: heldout (camvis2's rule) or inner
    normalization: str = "global"  # the inputs' statistics: per-fold (training views) or global (all views)


def read_bootstrap(path: Path) -> np.ndarray:
    """bootstrap.csv (resample, loss, acc, f1) -> float64 (n, 3) in resample order."""
    df = pd.read_csv(path)
    missing = [c for c in METRICS if c not in df.columns]
    if missing:
        raise ValueError(f"{path}: missing column(s) {', '.join(missing)} (expected resample, loss, acc, f1)")
    if "resample" in df.columns:
        df = df.sort_values("resample", kind="stable")
    values = df[list(METRICS)].to_numpy(dtype=np.float64)
    if len(values) == 0 or not np.isfinite(values).all():
        raise ValueError(f"{path}: empty or non-finite bootstrap values")
    return values


def load_job(info: jobfiles.JobInfo, folder: Path) -> FinishedJob:
    """A finished job's scores.json + bootstrap.csv; ValueError naming the file if unusable."""
    path = folder / jobfiles.SCORES
    scores = jobfiles.read_json(path)
    if scores is None:
        raise ValueError(f"{path}: unreadable")
    try:
        metrics = {m: float(scores["metrics"][m]) for m in METRICS}
    except (KeyError, TypeError, ValueError) as e:
        raise ValueError(f"{path}: metrics.loss/acc/f1 missing or not numbers") from e
    fold = jobfiles.as_int(scores.get("fold"))
    fold = fold if fold is not None else info.fold
    if fold is None:
        raise ValueError(f"{path}: no fold")
    boot_file = (scores.get("bootstrap") or {}).get("file") or "bootstrap.csv"
    ci = scores.get("ci") or {}
    return FinishedJob(
        name=info.name,
        group=jobfiles.variant_label(info.name, str(scores.get("group") or info.group)),
        fold=fold,
        view=str(scores.get("view") or info.view or ""),
        model_name=str(scores.get("model_name") or info.name),
        metrics=metrics,
        ci={m: tuple(map(float, ci[m])) for m in METRICS if isinstance(ci.get(m), (list, tuple)) and len(ci[m]) == 2},
        boot=read_bootstrap(folder / boot_file),
        n_val=as_number(scores.get("n_val"), positive=True),
        n_train=as_number(scores.get("n_train"), positive=True),
        selection=str(scores.get("selection") or "heldout"),  # scores of before the key: camvis2's rule
        # "per-fold (training views)" -> per-fold; scores of before the key were normalized globally
        normalization=str(scores.get("normalization") or "global").split(" ")[0],
    )


def _unfinished_reason(status: monitor.JobStatus) -> str:
    p = status.progress or {}
    where = f", epoch {p.get('epoch')}/{p.get('max_epochs')}" if p.get("epoch") is not None else ""
    source = "" if status.source == "files" else f" ({status.source})"
    if status.state == "COMPLETED":
        return f"no scores.json although the job is COMPLETED{source}"
    error = f": {status.error}" if status.error else ""
    return f"not finished: {status.state}{source}{where}{error}"


def load_finished(
    status: monitor.ExperimentStatus, outputs: str | Path, show_progress: bool = False
) -> tuple[list[FinishedJob], dict[str, str]]:
    """(finished jobs, {name: why it is left out}) for every expected job."""
    finished: list[FinishedJob] = []
    problems: dict[str, str] = {}
    seen: dict[tuple[str, int], str] = {}
    base = Path(outputs) / status.experiment
    for job in track(status.jobs, "reading scores", enabled=show_progress, transient=True):
        name = job.info.name
        if not job.finished:
            stale = (base / name / jobfiles.SCORES).exists()
            problems[name] = "stale scores.json (written for another config hash)" if stale else _unfinished_reason(job)
            continue
        try:
            loaded = load_job(job.info, base / name)
        except (OSError, ValueError) as e:
            problems[name] = f"unusable outputs: {e}"
            continue
        key = (loaded.group, loaded.fold)
        if key in seen:
            problems[name] = f"duplicate of {seen[key]} (group {loaded.group}, fold {loaded.fold})"
            continue
        seen[key] = name
        finished.append(loaded)
    return finished, problems
