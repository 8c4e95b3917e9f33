"""One grid point end to end: train (resuming if a checkpoint exists), then evaluate.

`TrainEvalTask` is what the launcher submits through submitit: on a timeout or a
preemption submitit calls `checkpoint()`, which requeues the same call; the new run finds
the job's checkpoint.pt and carries on from the last finished epoch.
"""

from __future__ import annotations

import os
import traceback
from pathlib import Path
from typing import Any

import submitit

from camvis.config import JobConfig, job_dir, to_dict
from camvis.io import write_json, write_text

SCORES = "scores.json"


def run_job(cfg: JobConfig, outputs: str | Path = "outputs") -> dict[str, Any]:
    """Train then evaluate `cfg` under outputs/<experiment>/<name>/; returns the scores dict."""
    import yaml

    from camvis import distributed
    from camvis.evaluate import evaluate_job
    from camvis.train import train, write_progress

    directory = job_dir(cfg, outputs)
    _limit_threads()
    env = distributed.setup(cfg.train.device)
    try:
        if env.is_main:
            directory.mkdir(parents=True, exist_ok=True)
            write_text(directory / "config.yaml", yaml.safe_dump(to_dict(cfg), sort_keys=False))
        distributed.barrier()
        state = train(cfg, directory, env)
        last = state.history[-1] if state.history else None
        if env.is_main:
            write_progress(directory, cfg, state, last, phase="evaluating", world_size=env.world_size)
        scores = evaluate_job(cfg, directory, device=env.device, epochs=state.epoch)
        if env.is_main:
            write_progress(directory, cfg, state, last, phase="done", world_size=env.world_size)
        return scores
    except Exception:
        if env.is_main:
            _mark_failed(directory, traceback.format_exc())
        raise
    finally:
        distributed.teardown()


def _limit_threads() -> None:
    """One intra-op thread per allotted CPU: ranks and jobs sharing a node must not oversubscribe it."""
    import torch

    cpus = os.environ.get("SLURM_CPUS_PER_TASK") or os.environ.get("CAMVIS_NUM_THREADS")
    if cpus and cpus.isdigit() and int(cpus) > 0:
        torch.set_num_threads(int(cpus))


def _mark_failed(directory: Path, trace: str) -> None:
    """Leave the error beside the outputs so `camvis-status` can show it without SLURM logs."""
    try:
        write_text(directory / "error.txt", trace)
    except OSError:
        pass


class TrainEvalTask(submitit.helpers.Checkpointable):
    """The submitit callable: `task(cfg, outputs)`; requeued with the same arguments on timeout."""

    def __call__(self, cfg: JobConfig, outputs: str = "outputs") -> dict[str, Any]:
        return run_job(cfg, outputs)
