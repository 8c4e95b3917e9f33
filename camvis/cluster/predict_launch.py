"""Many images (a webcam archive): chunks, run here, on this machine's cores or as a SLURM array.

The image list is cut into chunks of `chunk_size`. Each chunk predicts its images and writes its
rows atomically to `OUT.parts/chunk-K-<hash>.csv` (its bad images to the same name with
`.errors`); once every chunk has ended, the parts and any earlier OUT are merged into OUT (atomic)
and the parts removed. A rerun skips every image already in OUT or in a part (the same real
path with the same SHA-256 of its content; only those paths are hashed here): a run killed
halfway resumes and ends with the same OUT as an uninterrupted run (rows in the order of the
image list; every image's centres are seeded by the seed alone, not by its chunk).

Modes: "here" (this process, one bar over all images), "local" (submitit's LocalExecutor, at most
`parallel` chunks at once, the cores shared) and "slurm" (one job array through submitit with
the throttle `%parallel`; this command waits for it, and a rerun resumes what it left).
No torch at module level: the parent of a SLURM array only lists, submits and merges.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from camvis.bounds import num_threads
from camvis.errors import PredictError
from camvis.cluster.slurm_settings import checked_parameters, site_parameters
from camvis.io import write_json
from camvis.node.predict_task import Options, load as load, predict_chunk, predict_part, write_rows
from camvis.progress import progress_bar
from camvis.bookkeeping.replace_guard import Marker, check_replaceable, json_object

PARTS_SUFFIX = ".parts"
LOCAL_POLL_S = 0.5
MAPS_MARKER = "maps.json"
"""What camvis-predict --map writes into its folder (and requires there before it draws into it)."""
MAPS_FORMAT = "camvis-predict-maps"


def _is_predictions(path: Path) -> bool:
    """A camvis-predict output: a CSV whose header row, or JSON lines whose first row, has its columns."""
    from camvis.job.predict import ROW_COLUMNS

    try:
        with path.open("rb") as f:
            first = f.readline(1 << 16).decode("utf-8").strip()
    except (OSError, UnicodeDecodeError):
        return False
    try:
        keys = set(json.loads(first)) if first.startswith("{") else set(first.split(","))
    except ValueError:
        return False
    return set(ROW_COLUMNS) <= keys


PREDICTIONS = Marker("a camvis-predict output", "camvis-predict", False, "header row", _is_predictions)
MAPS = Marker("a camvis-predict map folder", "camvis-predict --map", True, MAPS_MARKER,
              lambda path: json_object(path / MAPS_MARKER).get("format") == MAPS_FORMAT)


@dataclass(frozen=True)
class Resources:
    """Resources of one chunk's job (local and slurm modes)."""

    parallel: int = 4
    time_min: int = 60
    cpus_per_task: int = 1
    gpus_per_node: int = 0
    mem_gb: float | None = None
    partition: str | None = None
    additional: dict[str, Any] = field(default_factory=dict)
    account: str | None = None      # account, qos, constraint, setup: the site options (site_options)
    qos: str | None = None
    constraint: str | None = None
    setup: tuple[str, ...] = ()


@dataclass
class Outcome:
    written: int = 0        # rows added by this run
    skipped: int = 0        # images already predicted
    problems: list[str] = field(default_factory=list)
    out: Path | None = None


def run(items: Sequence[Any], out: str | os.PathLike, options: Options, *, mode: str = "here",
        chunk_size: int = 100, resources: Resources | None = None, fmt: str = "csv",
        progress: bool | None = None, model_id: str | None = None, force: bool = False) -> Outcome:
    """Predict `items` (camvis.job.predict.Item) into `out`, skipping those it already holds.
    `model_id`: OUT holding another model's predictions is then an error (no mixed files).
    `force`: start afresh (OUT and unmerged parts are removed first)."""
    if chunk_size < 1:
        raise PredictError(f"--chunk-size must be >= 1, got {chunk_size}")
    num_threads()  # CAMVIS_NUM_THREADS refused here, before any part is written, not in a chunk's job
    out = Path(out)
    parts = out.with_name(out.name + PARTS_SUFFIX)
    inputs = ([options.model, *(path for item in items for path in (item.image, item.depth))]
              if force or options.map_dir is not None else [])
    if force:  # only an earlier camvis-predict output goes, never an input or anything else
        check_replaceable(out, kind=PREDICTIONS, inputs=inputs, error=PredictError)
        out.unlink(missing_ok=True)
        _remove_parts(parts, keep_logs=False)
    if options.map_dir is not None:
        _prepare_maps(Path(options.map_dir), inputs)
    done = _done_keys(out, parts, fmt, model_id)
    todo = [item for item in items if not _is_done(item, done)]
    outcome = Outcome(skipped=len(items) - len(todo), out=out)
    chunks = [todo[i:i + chunk_size] for i in range(0, len(todo), chunk_size)]
    jobs = [(k, chunk, parts / f"chunk-{k:05d}-{_chunk_hash(chunk)}.csv") for k, chunk in enumerate(chunks)]
    if jobs:
        parts.mkdir(parents=True, exist_ok=True)
    failed: list[str] = []
    if mode == "here":
        _run_here(jobs, options, progress)
    elif mode in ("local", "slurm"):
        failed = _run_submitit(jobs, options, resources or Resources(), mode, parts, progress)
    else:
        raise PredictError(f"mode must be here, local or slurm, got {mode!r}")
    outcome.problems = _read_problems(parts) + failed
    outcome.written = _merge(out, parts, [item.path for item in items], fmt)
    _remove_parts(parts, keep_logs=bool(failed))
    return outcome


def _prepare_maps(folder: Path, inputs: list[Any]) -> None:
    """Maps are drawn by image name into a folder camvis-predict made (its maps.json), a new or an
    empty one: never over the images themselves or into another command's folder."""
    check_replaceable(folder, kind=MAPS, inputs=inputs, error=PredictError)
    if not (folder / MAPS_MARKER).exists():
        write_json(folder / MAPS_MARKER, {"format": MAPS_FORMAT, "made_by": "camvis-predict --map"})


def _is_done(item: Any, done: dict[str, set[str]]) -> bool:
    """Already in OUT: the same real path with the same content (only such files are hashed here)."""
    if item.path not in done:
        return False
    from camvis.job.inputs import file_digest

    return file_digest(item.path) in done[item.path]


def _chunk_hash(chunk: Sequence[Any]) -> str:
    """Names a part by its images: a rerun's differently cut chunks never overwrite old parts."""
    return hashlib.sha256("\n".join(str(i.image) for i in chunk).encode()).hexdigest()[:10]


def _run_here(jobs: list[tuple[int, list[Any], Path]], options: Options, progress: bool | None) -> None:
    """Every chunk in this process, one bar over all their images."""
    with progress_bar("predicting", sum(len(chunk) for _, chunk, _ in jobs), enabled=progress) as advance:
        for _, chunk, part in jobs:
            predict_part(chunk, options, str(part), advance)


def _executor(folder: Path, cluster: str, resources: Resources, n_jobs: int) -> Any:
    import submitit

    executor = submitit.AutoExecutor(folder=folder, cluster=cluster)
    params: dict[str, Any] = {"name": "camvis-predict", "timeout_min": resources.time_min, "tasks_per_node": 1,
                              "cpus_per_task": resources.cpus_per_task}
    if resources.gpus_per_node:
        params["gpus_per_node"] = resources.gpus_per_node
    if cluster == "slurm":
        params["slurm_array_parallelism"] = min(resources.parallel, max(n_jobs, 1))
        params.update(checked_parameters(site_parameters(resources)))  # memory, partition, ..., setup lines
    executor.update_parameters(**params)
    return executor


def _run_submitit(jobs: list[tuple[int, list[Any], Path]], options: Options, resources: Resources, mode: str,
                  parts: Path, progress: bool | None) -> list[str]:
    """Every chunk as a job; waits for all, counting finished chunks on a bar. Returns one line per
    failed job."""
    failed: list[str] = []
    if not jobs:
        return failed
    folder = parts / "logs"
    if mode == "slurm":
        from camvis.cluster.launch import check_slurm

        check_slurm()
        executor = _executor(folder, "slurm", resources, len(jobs))
        submitted = executor.map_array(predict_chunk, [c for _, c, _ in jobs], [options] * len(jobs),
                                       [str(p) for _, _, p in jobs])
        pending: list[Any] = []
    else:
        from camvis.cluster.launch import local_threads

        # the cores are shared between the chunks that run at once
        options = dataclasses.replace(options, threads=local_threads(resources.parallel))
        executor = _executor(folder, "local", resources, len(jobs))
        submitted, pending = [], list(jobs)
    with progress_bar(f"chunks ({mode})", len(jobs), enabled=progress) as advance:
        running = list(submitted)
        try:
            while running or pending:
                while pending and len(running) < resources.parallel:  # the throttle, as on SLURM
                    _, chunk, part = pending.pop(0)
                    running.append(executor.submit(predict_chunk, chunk, options, str(part)))
                for job in [j for j in running if j.done()]:
                    running.remove(job)
                    error = job.exception()
                    if error is not None:  # its images stay out of OUT: a rerun retries them
                        failed.append(f"job {job.job_id}: failed ({type(error).__name__}: "
                                      f"{_last_line(error)}); logs in {folder}")
                    advance()
                time.sleep(LOCAL_POLL_S if running else 0)
        except KeyboardInterrupt:
            for job in running:
                job.cancel(check=False)
            raise
    return failed


def _last_line(error: BaseException) -> str:
    lines = [line for line in str(error).strip().splitlines() if line.strip()]
    return lines[-1] if lines else type(error).__name__


# --------------------------------------------------------------------------- files


def _done_keys(out: Path, parts: Path, fmt: str, model_id: str | None) -> dict[str, set[str]]:
    """{real path: content digests} already predicted (OUT and finished parts); another model's
    rows are an error (no mixed files)."""
    sources = ([out] if out.exists() else []) + _part_files(parts)
    done: dict[str, set[str]] = {}
    for path in sources:
        frame = _read_rows(path, fmt if path == out else "csv")
        others = sorted(set(frame["model"].astype(str)) - {model_id}) if model_id else []
        if others:
            raise PredictError(f"{path}: holds predictions of model {others[0]}, not {model_id}; choose another "
                               "--out or pass --force to start it afresh")
        for key, digest in zip(frame["path"].astype(str), frame["sha256"].astype(str)):
            done.setdefault(key, set()).add(digest)
    return done


def _part_files(parts: Path) -> list[Path]:
    return sorted(parts.glob("chunk-*.csv")) if parts.is_dir() else []  # temporaries start with "."


def _read_problems(parts: Path) -> list[str]:
    lines: list[str] = []
    for path in sorted(parts.glob("chunk-*.errors")) if parts.is_dir() else []:
        lines += [line for line in path.read_text().splitlines() if line.strip()]
    return lines


def _merge(out: Path, parts: Path, order: list[str], fmt: str) -> int:
    """OUT := earlier OUT + every part, in the order of the image list (`order`: real paths); the
    parts go. A row is one (path, sha256): a part's row OUT already holds is dropped. Returns the
    rows the parts added."""
    import pandas as pd

    from camvis.job.predict import ROW_COLUMNS

    part_files = _part_files(parts)
    if not part_files:
        return 0
    old = _read_rows(out, fmt) if out.exists() else pd.DataFrame(columns=list(ROW_COLUMNS))
    new = pd.concat([_read_rows(p, "csv") for p in part_files], ignore_index=True)
    new = new[~_keys(new).isin(set(_keys(old)))].drop_duplicates(["path", "sha256"])
    rank = {name: k for k, name in enumerate(order)}
    new = new.assign(_rank=new["path"].astype(str).map(rank).fillna(len(order))).sort_values(
        "_rank", kind="stable").drop(columns="_rank")
    if not len(new):  # every image failed, or all were there: OUT is left as it was (none made)
        return 0
    merged = pd.concat([old, new], ignore_index=True) if len(old) else new
    write_rows(merged.to_dict("records"), out, fmt)
    return len(new)


def _keys(frame: Any) -> Any:
    return frame["path"].astype(str) + "\0" + frame["sha256"].astype(str)


def _remove_parts(parts: Path, keep_logs: bool) -> None:
    """Merged parts go; submitit's logs stay when a job failed (its post-mortem)."""
    import shutil

    if keep_logs:
        for path in parts.glob("chunk-*"):
            path.unlink(missing_ok=True)
    else:
        shutil.rmtree(parts, ignore_errors=True)


def _read_rows(path: Path, fmt: str) -> Any:
    import pandas as pd

    from camvis.job.predict import ROW_COLUMNS
    from camvis.job.visibility import INTERVAL_COLUMNS

    try:
        frame = (pd.read_json(path, lines=True, dtype={"image": str, "timestamp": str}) if fmt == "jsonl"
                 else pd.read_csv(path, dtype={"image": str, "view": str, "timestamp": str, "path": str,
                                               "sha256": str}, keep_default_na=False,
                                  na_values={k: [""] for k in ("visibility_m", *INTERVAL_COLUMNS, "fit_quality",
                                                               "true_visibility_m", "log10_error")}))
    except (OSError, ValueError) as e:
        raise PredictError(f"{path}: cannot read earlier predictions ({e}); move it away or pass --force") from e
    missing = [c for c in ROW_COLUMNS if c not in frame.columns and c not in INTERVAL_COLUMNS] if len(frame.columns) \
        else []  # outputs of before the interval columns are appended to (NaN intervals)
    if missing:
        raise PredictError(f"{path}: not a camvis-predict output of this version (missing column(s) "
                           f"{', '.join(missing)}); choose another --out or pass --force")
    if not len(frame.columns):
        frame = pd.DataFrame(columns=list(ROW_COLUMNS))
    return frame
