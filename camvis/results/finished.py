"""Finished jobs as camvis-aggregate reads them: a job folder's scores.json and bootstrap.csv,
checked, as one `FinishedJob`; every expected job either loads or says why it is left out.

Replicates: jobs that differ only in their training seed (scores.json `replicate`, a `_rep{r}` name
part, or a plain `train.seed` axis, `_seed{v}`) share a group and a fold; `replicate` tells them apart.
Every bootstrap.csv is read in one parse of their concatenated rows (one pandas call for 5,000 jobs
instead of 5,000: the per-call cost was most of the reading); a file that spoils the parse is found
and left out on its own.

The results layer's own record of a job: compare and aggregate_visibility take it from here,
not from aggregate (which imports them). No torch here.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import io
import re

import numpy as np
import pandas as pd

from camvis.bookkeeping import experiment_files
from camvis.bookkeeping import status as status_model
from camvis.bookkeeping.jobfolder import BOOTSTRAP, as_number
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
    replicate: str = ""  # which training run of its group and fold: "" (the only one), "rep2", "seed43"


BOOT_HEADER = "resample," + ",".join(METRICS)  # what camvis.job.evaluate writes
_FOLD_PART = re.compile(r"_fold\d+")
_REPLICATE = re.compile(r"^(rep\d+|(train-)?seed\d+)$")  # name parts of a replicate axis


def read_bootstrap(path: Path) -> np.ndarray:
    """bootstrap.csv (resample, loss, acc, f1) -> float64 (n, 3) in resample order."""
    return _bootstrap_values(pd.read_csv(path), path)


def _bootstrap_values(df: pd.DataFrame, path: Path) -> np.ndarray:
    missing = [c for c in METRICS if c not in df.columns]
    if missing:
        raise ValueError(f"{path}: missing column(s) {', '.join(missing)} (expected resample, loss, acc, f1)")
    if "resample" in df.columns and not df["resample"].is_monotonic_increasing:
        df = df.sort_values("resample", kind="stable")
    values = df[list(METRICS)].to_numpy(dtype=np.float64)
    if len(values) == 0 or not np.isfinite(values).all():
        raise ValueError(f"{path}: empty or non-finite bootstrap values")
    return values


def read_bootstraps(paths: list[Path]) -> list[np.ndarray | ValueError]:
    """Every file's values (as read_bootstrap), or the ValueError naming it. Files with camvis's own
    header and rows in resample order are parsed together in one pandas call; any other file, and every
    file of a batch that fails to parse, is read on its own."""
    out: list[np.ndarray | ValueError | None] = [None] * len(paths)
    bodies, rows, batch = [], [], []
    for i, path in enumerate(paths):
        try:
            data = path.read_bytes()
        except OSError as e:
            out[i] = ValueError(f"{path}: unreadable ({e.strerror or e})")
            continue
        head, _, body = data.partition(b"\n")
        if head.strip() != BOOT_HEADER.encode() or not body.strip():
            out[i] = _one(path)
            continue
        body = body if body.endswith(b"\n") else body + b"\n"
        bodies.append(body)
        rows.append(body.count(b"\n"))
        batch.append(i)
    if batch:
        try:
            table = pd.read_csv(io.BytesIO(b"".join(bodies)), header=None, dtype=np.float64, engine="c").to_numpy()
            if len(table) != sum(rows) or table.shape[1] != 1 + len(METRICS):
                raise ValueError("rows or columns do not add up")
        except (ValueError, pd.errors.ParserError):  # a bad file in the batch: find it file by file
            table = None
        starts = np.cumsum([0, *rows])
        good = np.ones(len(batch), dtype=bool)
        if table is not None:  # per file: rows in resample order and finite values, checked for all at once
            step_ok = np.append(np.diff(table[:, 0]) > 0, True)
            step_ok[starts[1:] - 1] = True  # a file's last row has no successor in its file
            row_ok = np.isfinite(table[:, 1:]).all(axis=1) & step_ok
            good = np.logical_and.reduceat(row_ok, starts[:-1]) if len(row_ok) else good
        for n, i in enumerate(batch):
            if table is None or not good[n]:
                out[i] = _one(paths[i])
            else:
                out[i] = table[starts[n]:starts[n + 1], 1:]
    return out  # type: ignore[return-value]


def _one(path: Path) -> np.ndarray | ValueError:
    try:
        return read_bootstrap(path)
    except ValueError as e:
        return e if str(path) in str(e) else ValueError(f"{path}: {e}")
    except (OSError, pd.errors.ParserError, pd.errors.EmptyDataError) as e:
        return ValueError(f"{path}: unreadable ({e})")


def replicate_of(name: str, group: str, scores: dict) -> tuple[str, str]:
    """(group without its replicate parts, replicate label): "cat_fold2_rep3" -> ("cat", "rep3"),
    "cat_fold2_lr0.1_seed43" -> ("cat_lr0.1", "seed43"); scores.json's `replicate` (an int, absent = 1)
    names it when the name does not."""
    fold = _FOLD_PART.search(name)  # the first _fold<k>, as experiment_files.variant_label takes it
    head, parts = (name[: fold.start()], name[fold.end() :].split("_")[1:]) if fold else ("", [])
    reps = [p for p in parts if _REPLICATE.match(p)]
    if reps:
        kept = [p for p in parts if not _REPLICATE.match(p)]
        group = "_".join([head, *kept]) if head else group
    number = experiment_files.as_int(scores.get("replicate"))
    label = "_".join(reps) or (f"rep{number}" if number is not None and number != 1 else "")
    return group, label


def load_job(info: experiment_files.JobInfo, folder: Path, boot: np.ndarray | None = None,
             scores: dict | None = None) -> FinishedJob:
    """A finished job's scores.json + bootstrap.csv (`boot`, `scores`: their contents, already read);
    ValueError naming the file if unusable."""
    path = folder / experiment_files.SCORES
    scores = scores if scores is not None else experiment_files.read_json(path)
    if scores is None:
        raise ValueError(f"{path}: unreadable")
    try:
        metrics = {m: float(scores["metrics"][m]) for m in METRICS}
    except (KeyError, TypeError, ValueError) as e:
        raise ValueError(f"{path}: metrics.loss/acc/f1 missing or not numbers") from e
    fold = experiment_files.as_int(scores.get("fold"))
    fold = fold if fold is not None else info.fold
    if fold is None:
        raise ValueError(f"{path}: no fold")
    ci = scores.get("ci") or {}
    group, replicate = replicate_of(info.name, experiment_files.variant_label(info.name, str(scores.get("group") or info.group)),
                                    scores)
    return FinishedJob(
        name=info.name,
        group=group,
        fold=fold,
        view=str(scores.get("view") or info.view or ""),
        model_name=str(scores.get("model_name") or info.name),
        metrics=metrics,
        ci={m: tuple(map(float, ci[m])) for m in METRICS if isinstance(ci.get(m), (list, tuple)) and len(ci[m]) == 2},
        boot=boot if boot is not None else read_bootstrap(folder / boot_file(scores)),
        n_val=as_number(scores.get("n_val"), positive=True),
        n_train=as_number(scores.get("n_train"), positive=True),
        selection=str(scores.get("selection") or "heldout"),  # scores of before the key: camvis2's rule
        # "per-fold (training views)" -> per-fold; scores of before the key were normalized globally
        normalization=str(scores.get("normalization") or "global").split(" ")[0],
        replicate=replicate,
    )


def boot_file(scores: dict | None) -> str:
    """The bootstrap file scores.json names (a name in the job's folder), else bootstrap.csv."""
    name = ((scores or {}).get("bootstrap") or {}).get("file") if isinstance(scores, dict) else None
    name = str(name or BOOTSTRAP)
    return name if Path(name).name == name and name not in (".", "..") else BOOTSTRAP


def _unfinished_reason(status: status_model.JobStatus) -> str:
    p = status.progress or {}
    where = f", epoch {p.get('epoch')}/{p.get('max_epochs')}" if p.get("epoch") is not None else ""
    source = "" if status.source == "files" else f" ({status.source})"
    if status.state == "COMPLETED":
        return f"no scores.json although the job is COMPLETED{source}"
    error = f": {status.error}" if status.error else ""
    return f"not finished: {status.state}{source}{where}{error}"


def load_finished(
    status: status_model.ExperimentStatus, outputs: str | Path, show_progress: bool = False
) -> tuple[list[FinishedJob], dict[str, str]]:
    """(finished jobs, {name: why it is left out}) for every expected job."""
    problems: dict[str, str] = {}
    base = Path(outputs) / status.experiment
    ready = []
    for job in track(status.jobs, "reading scores", enabled=show_progress, transient=True):
        name = job.info.name
        if not job.finished:
            stale = (base / name / experiment_files.SCORES).exists()
            problems[name] = "stale scores.json (written for another config hash)" if stale else _unfinished_reason(job)
            continue
        ready.append(job)
    scores = [j.scores or experiment_files.read_json(base / j.info.name / experiment_files.SCORES) for j in ready]  # read by collect
    boots = read_bootstraps([base / j.info.name / boot_file(s) for j, s in zip(ready, scores)])
    finished: list[FinishedJob] = []
    seen: dict[tuple[str, int, str], str] = {}
    for job, boot, score in zip(ready, boots, scores):
        name = job.info.name
        try:
            if isinstance(boot, ValueError):
                load_job(job.info, base / name, np.empty((0, len(METRICS))), score)  # scores.json's problem first
                raise boot
            loaded = load_job(job.info, base / name, boot, score)
        except (OSError, ValueError) as e:
            problems[name] = f"unusable outputs: {e}"
            continue
        key = (loaded.group, loaded.fold, loaded.replicate)
        if key in seen:
            what = f", replicate {loaded.replicate}" if loaded.replicate else ""
            problems[name] = f"duplicate of {seen[key]} (group {loaded.group}, fold {loaded.fold}{what})"
            continue
        seen[key] = name
        finished.append(loaded)
    return finished, problems
