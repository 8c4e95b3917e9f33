"""A job's start, in one line: stage the store (data.stage) -> open it once -> verify it -> load the pyramid.

`open_job_store` is the job's one open of its store: everything after it on the node (the statistics
camvis.job.identity compares, the fold split, the memory checks, the batches) takes the opened
PatchStore, never a path, so a staged job reads the shared store only to stage it. A staged copy whose
block fails its CRC-32 at verification (the copy was altered after it was made; camvis.data.stage
trusts a copy by its manifest) is discarded and staged again, once.

The phases are timed for scores.json's `startup` (camvis.job.efficiency): where a job's first
training step waits.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any, Callable

import torch

from camvis.config import JobConfig
from camvis.data import stage
from camvis.data.store import PatchStore, open_store
from camvis.errors import StoreError
from camvis.job.train import TrainInputs, open_inputs

Opened = tuple[PatchStore, dict[str, Any]]
"""The job's store and the seconds of its phases so far (stage_s, open_s, verify_s)."""


def open_job_store(cfg: JobConfig, log: Callable[[str], None] = print) -> Opened:
    """cfg.data.store, or its node-local copy under data.stage, opened and its mapped blocks verified."""
    timing: dict[str, Any] = {"stage": None}
    staged = _stage(cfg, log, timing)
    for attempt in (1, 2):
        path = staged.path if staged is not None else Path(cfg.data.store)
        try:
            start = time.perf_counter()
            store = open_store(path)
            opened = time.perf_counter()
            store.verify_levels()  # mapped: every block's CRC-32, once per node (compressed: as read)
            timing.update(open_s=opened - start, verify_s=time.perf_counter() - opened)
            return store, timing
        except StoreError as e:
            if staged is None or staged.action == "skipped":
                raise
            if attempt == 2:
                raise StoreError(f"{e} (the node-local copy of {cfg.data.store} made for data.stage)") from e
            log(f"data.stage: the copy {staged.path} is corrupt ({e}); staging it again")
            stage.discard(staged)
            staged = _stage(cfg, log, timing)
    raise AssertionError("unreachable")


def open_job_inputs(cfg: JobConfig, device: torch.device, log: Callable[[str], None] = print,
                    opened: Opened | None = None) -> tuple[TrainInputs, dict[str, Any]]:
    """The job's inputs (camvis.job.train.open_inputs) from its store (`opened`, else open_job_store's);
    and the seconds of each phase: stage_s, open_s, verify_s, levels_s."""
    store, timing = opened if opened is not None else open_job_store(cfg, log)
    start = time.perf_counter()
    inputs = open_inputs(cfg, device, store)
    return inputs, {**timing, "levels_s": time.perf_counter() - start}


def _stage(cfg: JobConfig, log: Callable[[str], None], timing: dict[str, Any]) -> stage.Staged | None:
    if cfg.data.stage is None:
        return None
    root = stage.resolve_root(cfg.data.stage)
    staged = stage.stage_store(cfg.data.store, root,
                               on_wait=lambda who: log(f"data.stage: waiting for {who}"))
    if staged.note:
        log(staged.note)
    elif staged.action == "copied":
        log(f"data.stage: copied {cfg.data.store} to {staged.path} ({staged.nbytes / 2**30:.2f} GiB, "
            f"{staged.seconds:.1f} s)")
    timing["stage"] = staged.action
    timing["stage_s"] = timing.get("stage_s", 0.0) + staged.seconds
    timing["staged_path"] = str(staged.path)
    return staged
