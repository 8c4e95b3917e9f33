"""One grid point end to end: train (resuming its own checkpoint), then evaluate.

`TrainEvalTask` is what the launcher submits through submitit: on a timeout or a
preemption submitit calls `checkpoint()`, which requeues the same call; the new run finds
the job's checkpoint.pt and carries on from the last finished epoch. Before anything is
written, camvis.job.identity keeps the folder to this config's training: another training's
outputs (or, under --restart, an earlier run's) move to previous/ and training starts afresh;
a finished training with another eval section is only re-evaluated.
"""

from __future__ import annotations

import functools
import os
import time
import traceback
from contextlib import ExitStack
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

import submitit

from camvis import locks
from camvis.bounds import num_threads
from camvis.config import JobConfig, job_dir, to_dict, train_hash
from camvis.errors import CamvisError
from camvis.host import now_iso
from camvis.io import reap_stale_tmp, write_json, write_text
from camvis.bookkeeping.jobfolder import BEST, CONFIG, ERROR, PROGRESS, read_json

if TYPE_CHECKING:
    from camvis.data.store import PatchStore


def run_job(cfg: JobConfig, outputs: str | Path = "outputs", *, restart: str | None = None,
            threads: int | None = None, gpus: int = 0) -> dict[str, Any]:
    """Train then evaluate `cfg` under outputs/<experiment>/<name>/; returns the scores dict.

    `restart`: a restart id (camvis.cluster.plan.new_run_id): train from scratch unless the folder's
    training was started by this same id (a requeued restart resumes its own training).
    `threads`: intra-op threads (a local launch shares the machine's cores between its jobs); the
    config's train.threads wins over it; None: SLURM's CPUs per task, else CAMVIS_NUM_THREADS, else
    torch's default. scores.json records the count used (`threads`).
    `gpus`: the grid's slurm.gpus_per_node (camvis.job.device: a GPU allocation torch cannot use stops the job).
    """
    from camvis.job import device, distributed, efficiency
    from camvis.job.evaluate import EvalInputs, evaluate_job
    from camvis.job.startup import open_job_inputs, open_job_store
    from camvis.job.train import train
    from camvis.job.train_log import log_hparams, write_progress

    began = time.perf_counter()
    directory = job_dir(cfg, outputs)
    _limit_threads(cfg.train.threads if cfg.train.threads != "auto" else threads)
    note = device.check(cfg.train.device, gpus)  # a GPU allocation torch cannot use: stop before any write
    _check_model(cfg, distributed.pick_device(cfg.train.device))  # the same for a model that cannot fit
    env = distributed.setup(cfg.train.device)
    # The job's one open of its store (staged -> opened -> verified), on first use: in prepare when settle has a
    # training to compare statistics with, else for the inputs; a store that fails to open fails after the lock.
    opened = functools.cache(lambda: open_job_store(cfg))
    lock = ExitStack()
    try:
        def prepare() -> None:  # one runner per job folder: a second one fails here, touching nothing
            lock.enter_context(locks.job_lock(locks.job_lock_path(directory), cfg.name))
            print(device.log_line(trained_on), flush=True)  # the log's first lines
            if note:
                print(note, flush=True)
            _start(directory, cfg, env.world_size, restart, inputs=lambda: _normalization(cfg, opened()[0]))

        trained_on = device.describe(env.device, env.world_size, device.allocated_gpus(grid_gpus=gpus))
        main_first(env, prepare)
        meter = efficiency.Meter(env.device, sample_gpu=env.is_main, device_info=trained_on)
        clock = [time.perf_counter()]
        inputs, startup = open_job_inputs(cfg, env.device, opened=opened())  # one pyramid for training and evaluation
        clock.append(time.perf_counter())
        state = train(cfg, directory, env, inputs, run_id=restart, meter=meter)
        clock.append(time.perf_counter())
        last = state.history[-1] if state.history else None
        if env.is_main:
            write_progress(directory, cfg, state, last, phase="evaluating", world_size=env.world_size,
                           figures=meter.progress_fields())
        best = EvalInputs.load(cfg, directory / BEST, inputs.source, train_hash=train_hash(cfg))
        scores = evaluate_job(cfg, directory, best, epochs=state.epoch)
        clock.append(time.perf_counter())
        if env.is_main:
            phases = dict(zip(("load_s", "train_s", "evaluate_s"), (b - a for a, b in zip(clock, clock[1:]))))
            if inputs.first_step_at is not None:  # None: a finished training, only re-evaluated
                startup.update(first_step_s=inputs.first_step_at - clock[1], to_first_step_s=inputs.first_step_at - began)
            scores = efficiency.record(directory, scores, phases, env.device, meter, state.history, startup)
            log_hparams(directory, cfg, scores)  # TensorBoard's HParams tab: this job's row of the grid
            write_progress(directory, cfg, state, last, phase="done", world_size=env.world_size,
                           figures=meter.progress_fields())
        return scores
    except locks.JobLockedError:
        raise
    except Exception as e:
        if env.is_main:  # a domain error is its one line; anything else its traceback
            text = f"error: {e}\n" if isinstance(e, CamvisError) else traceback.format_exc()
            _mark_failed(directory, cfg, text, env.world_size)
        raise
    finally:
        lock.close()
        distributed.teardown()


def _check_model(cfg: JobConfig, on: Any) -> None:
    """The model and a batch against the memory there (camvis.job.memory.check_model), before anything is
    written; a store that is not there is left to the job's own error, later."""
    from camvis.data.store_info import StoreInfo, patch_count
    from camvis.job import memory

    try:
        info = StoreInfo.read(cfg.data.store)
    except CamvisError:
        return
    if info is not None and isinstance(info.patch_size, int) and info.patch_size > 0:
        memory.check_model(cfg, info.patch_size, on, patches=patch_count(cfg.data.store))


def main_first(env: Any, fn: Any, *args: Any) -> None:
    """fn(*args) on rank 0 while the other ranks wait; its failure fails every rank (they would
    otherwise wait at the barrier for good, e.g. on a refused checkpoint)."""
    error: Exception | None = None
    if env.is_main:
        try:
            fn(*args)
        except Exception as e:
            error = e
    failure = (str(error) or type(error).__name__) if error is not None else None
    if env.distributed:
        failure = _broadcast(failure)
    if error is not None:
        raise error
    if failure is not None:
        raise CamvisError(f"rank 0 failed to prepare the job folder: {failure}")


def _broadcast(message: str | None) -> str | None:
    import torch.distributed as dist

    box = [message]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def _start(directory: Path, cfg: JobConfig, world_size: int, restart: str | None = None,
           inputs: Callable[[], dict[str, Any]] | None = None) -> None:
    """Keep the folder to this config's training (earlier outputs to previous/; `inputs`: the job's
    statistics, asked for only when there is a training to compare them with), then a (re)started
    job is running, not failed: drop the last run's error and say so at once."""
    from camvis.job import identity

    directory.mkdir(parents=True, exist_ok=True)
    moved = identity.settle(directory, cfg, restart, inputs=inputs)
    if moved is not None:
        print(f"{cfg.name}: {moved[1]}: earlier outputs moved to {moved[0]}", flush=True)
    reap_stale_tmp(directory, recursive=True)  # .tmp files of a killed run (checkpoint.pt's ...)
    (directory / ERROR).unlink(missing_ok=True)
    write_text(directory / CONFIG, yaml_dump(to_dict(cfg)))
    _set_phase(directory, cfg, "starting", world_size)


def _normalization(cfg: JobConfig, store: PatchStore) -> dict[str, Any]:
    """The statistics the job's inputs are normalized with (its fold's), as checkpoints record them."""
    return store.normalization(cfg.data.fold, cfg.data.factors).record()


def _set_phase(directory: Path, cfg: JobConfig, phase: str, world_size: int) -> None:
    """Change the phase in progress.json, keeping the epochs and scores a requeued run already has."""
    from camvis.job.checkpoint import TrainState
    from camvis.job.train_log import write_progress

    progress = read_json(directory / PROGRESS)
    if progress is None:
        write_progress(directory, cfg, TrainState(), None, phase=phase, world_size=world_size)
        return
    progress.update(state=phase, updated=now_iso(), world_size=world_size)
    write_json(directory / PROGRESS, progress)


def yaml_dump(data: dict[str, Any]) -> str:
    import yaml

    return yaml.safe_dump(data, sort_keys=False)


def _limit_threads(threads: int | None = None) -> None:
    """One intra-op thread per allotted CPU: ranks and jobs sharing a node must not oversubscribe it
    (`threads`: train.threads when the config fixes it, else a local launch's share)."""
    import torch

    slurm = os.environ.get("SLURM_CPUS_PER_TASK", "")
    cpus = threads or (int(slurm) if slurm.isdigit() and int(slurm) > 0 else None) or num_threads()
    if cpus:
        torch.set_num_threads(cpus)


def _mark_failed(directory: Path, cfg: JobConfig, trace: str, world_size: int) -> None:
    """Leave the error beside the outputs so `camvis-status` can show it without SLURM logs."""
    try:
        write_text(directory / ERROR, trace)
        _set_phase(directory, cfg, "failed", world_size)
    except OSError:  # never hide the job's own exception behind a file-system one
        pass


class TrainEvalTask(submitit.helpers.Checkpointable):
    """The submitit callable: `TrainEvalTask(restart)(cfg, outputs)`; requeued as it is (same
    restart id) on timeout, so a requeued --restart resumes the training it started."""

    def __init__(self, restart: str | None = None, threads: int | None = None, gpus: int = 0) -> None:
        self.restart = restart
        self.threads = threads  # a local launch's share of the cores; None on SLURM
        self.gpus = gpus  # the grid's slurm.gpus_per_node

    def __call__(self, cfg: JobConfig, outputs: str = "outputs") -> dict[str, Any]:
        return run_job(cfg, outputs, restart=getattr(self, "restart", None),  # tasks pickled before them
                       threads=getattr(self, "threads", None), gpus=getattr(self, "gpus", 0))
