"""One chunk of a prediction run (camvis.cluster.predict_launch submits it, or runs it in-process):
predict its images, then write its rows and problems, each atomically. torch only inside functions:
the login side imports this module to pickle `predict_chunk` by path."""

from __future__ import annotations

import functools
import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from camvis.io import atomic_path
from camvis.job.inputs import DEFAULT_MAX_PIXELS
from camvis.progress import progress_bar


@dataclass(frozen=True)
class Options:
    """What every chunk needs to predict (picklable: it travels to the SLURM jobs)."""

    model: str
    runtime: str = "auto"
    device: str = "auto"
    patches: int = 500
    stride: int | None = None
    seed: int = 0
    batch_size: int = 256
    map_dir: str | None = None
    threads: int | None = None  # a local run's share of the cores; None: camvis.job.predict.cpu_threads
    max_pixels: int = DEFAULT_MAX_PIXELS
    raw_dir: str | None = None  # its visibility.csv fills the truth columns


def predict_chunk(items: Sequence[Any], options: Options, part: str, progress: bool = False) -> int:
    """One chunk: predict, then write the rows and the problems (each atomically). Runs in jobs."""
    with progress_bar("predicting", len(items), enabled=progress, transient=True) as advance:
        return predict_part(items, options, part, advance)


def predict_part(items: Sequence[Any], options: Options, part: str, advance: Any) -> int:
    from camvis.data.raw import read_visibility
    from camvis.job.predict import predict_items

    model = load(options)
    truth = read_visibility(options.raw_dir) if options.raw_dir else None
    rows, problems = predict_items(items, model, patches=options.patches, stride=options.stride, seed=options.seed,
                                   batch_size=options.batch_size, map_dir=options.map_dir,
                                   max_pixels=options.max_pixels, truth=truth, on_done=advance)
    part_path = Path(part)
    errors = part_path.with_suffix(".errors")
    if problems:
        with atomic_path(errors) as tmp:
            tmp.write_text("".join(line.replace("\n", " ") + "\n" for line in problems), encoding="utf-8",
                           errors="backslashreplace")
    else:
        errors.unlink(missing_ok=True)
    write_rows(rows, part_path, "csv")  # last: its presence means the chunk is done
    return len(rows)


@functools.lru_cache(maxsize=2)
def load(options: Options) -> Any:
    """The chunk's model, loaded once per process (all chunks of a run share one)."""
    from camvis.job.predict import load_model

    return load_model(options.model, device=options.device, runtime=options.runtime, threads=options.threads)


def write_rows(rows: list[dict[str, Any]], path: Path, fmt: str) -> None:
    import pandas as pd

    from camvis.job.predict import ROW_COLUMNS

    frame = pd.DataFrame(rows, columns=list(ROW_COLUMNS))
    with atomic_path(path) as tmp:
        if fmt == "jsonl":
            tmp.write_text("".join(json.dumps(_plain(r)) + "\n" for r in frame.to_dict("records")))
        else:
            frame.to_csv(tmp, index=False, float_format="%.9g", na_rep="")


def _plain(row: dict[str, Any]) -> dict[str, Any]:
    """NaN as null, numpy scalars as Python numbers (JSON lines)."""
    import math

    out = {}
    for key, value in row.items():
        value = value.item() if hasattr(value, "item") else value
        out[key] = None if isinstance(value, float) and math.isnan(value) else value
    return out
