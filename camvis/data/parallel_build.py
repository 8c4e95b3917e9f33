"""The images of a store build in several processes (camvis-data build --workers N).

Images are independent: each worker decodes and checks one image's files (as camvis.data.raw's
RawReader does), writes its levels (each image is its own chunk of the level arrays) and returns
its histograms and patch rows. The parent keeps the reader's bookkeeping (problems, warnings,
check rows) and merges the results in the serial build's order, so the store's bytes are the
same as a serial build's. A view's depth map is checked once in the parent and loaded once per
worker that gets one of its images.
"""

from __future__ import annotations

import multiprocessing
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import zarr

from camvis.data import raw
from camvis.data.levels import LEVEL_CONFIG, image_part

_DEPTH: dict[str, np.ndarray] = {}  # a worker's depth map of its current view


def parallel_images(reader: raw.RawReader, tmp: Path, factors: tuple[int, ...], patch_size: int,
                    per_image: int, seed: int, workers: int
                    ) -> Iterator[tuple[raw.RawImage, np.ndarray, dict[str, Any]]]:
    """(image, its view's depth, levels.image_part's result) of each good image, in the serial
    build's order; the reader's problems, warnings and rows are filled as RawReader.images() does."""
    ds = reader.dataset
    reader._started = True  # one pass, as RawReader.images()
    index = {img.name: i for i, img in enumerate(ds.images)}
    # spawn: the parent may hold threads (zarr's, torch's) that a fork would copy mid-lock
    with multiprocessing.get_context("spawn").Pool(workers) as pool:
        for view, depth, depth_ok in raw._views_depth(ds, reader.problems):
            nan_pct = float(np.isnan(depth).mean()) * 100 if depth is not None else float("nan")
            tasks = [(str(tmp), ds, img, index[img.name], ds.views.index(view), depth is not None,
                      depth_ok, nan_pct, factors, patch_size, per_image, seed)
                     for img in ds.images if img.view == view]
            for img, (problems, warnings, row, part) in zip([t[2] for t in tasks],
                                                           pool.imap(_one_image, tasks)):
                reader.problems.extend(problems)
                reader.warnings.extend(warnings)
                if row is not None:
                    reader.rows.append(row)
                if part is not None:
                    yield img, depth, part
            del depth
    raw._check_visibility_csv(ds, reader.problems, reader.warnings)
    reader._done = True


def _one_image(task: tuple) -> tuple[list[str], list[str], Any, dict[str, Any] | None]:
    """In a worker: check one image's files and, if they are fine, write its levels."""
    tmp, ds, img, i, v, has_depth, depth_ok, nan_pct, factors, patch_size, per_image, seed = task
    depth = _view_depth(ds, img.view) if has_depth else None
    problems: list[str] = []
    warnings: list[str] = []
    read = raw._read_image(img, depth, nan_pct, problems, warnings)
    if read is None:
        return problems, warnings, None, None
    rgb, labels, row = read
    if not (depth_ok and depth is not None):  # checked, not written (as RawReader.images)
        return problems, warnings, row, None
    images = {f: zarr.open_array(Path(tmp) / f"levels/{f}/images", mode="r+", config=LEVEL_CONFIG) for f in factors}
    return problems, warnings, row, image_part(images, i, v, rgb, labels, depth, patch_size, per_image, seed)


def _view_depth(ds: raw.RawDataset, view: str) -> np.ndarray:
    if view not in _DEPTH:
        _DEPTH.clear()  # one depth map per worker
        _DEPTH[view] = raw.load_depth(ds, view)
    return _DEPTH[view]
