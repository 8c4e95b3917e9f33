"""A job's start, phase by phase: stage the store (data.stage), open it, load the pyramid.

The phases are timed for scores.json's `startup` (camvis.job.efficiency): where a job's first
training step waits. A staged copy whose block fails its CRC-32 while the pyramid is read (the
copy was altered after it was made; camvis.data.stage trusts a copy by its manifest) is discarded
and staged again, once.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any, Callable

import torch

from camvis.config import JobConfig
from camvis.data import stage
from camvis.data.store import open_store
from camvis.errors import StoreError
from camvis.job.train import TrainInputs, open_inputs


def open_job_inputs(cfg: JobConfig, device: torch.device, log: Callable[[str], None] = print
                    ) -> tuple[TrainInputs, dict[str, Any]]:
    """The job's inputs (camvis.job.train.open_inputs) from cfg.data.store, or from its node-local
    copy under data.stage; and the seconds of each phase: stage_s, open_s, levels_s."""
    timing: dict[str, Any] = {"stage": None}
    staged = _stage(cfg, log, timing)
    for attempt in (1, 2):
        path = staged.path if staged is not None else Path(cfg.data.store)
        try:
            start = time.perf_counter()
            store = open_store(path)
            opened = time.perf_counter()
            inputs = open_inputs(cfg, device, store)
            timing.update(open_s=opened - start, levels_s=time.perf_counter() - opened)
            return inputs, timing
        except StoreError as e:
            if staged is None or staged.action == "skipped":
                raise
            if attempt == 2:
                raise StoreError(f"{e} (the node-local copy of {cfg.data.store} made for data.stage)") from e
            log(f"data.stage: the copy {staged.path} is corrupt ({e}); staging it again")
            stage.discard(staged)
            staged = _stage(cfg, log, timing)
    raise AssertionError("unreachable")


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
