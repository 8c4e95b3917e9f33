"""Training one grid point: DDP over every rank of the job, resumable from its last epoch.

Adam + BCE with logits, ReduceLROnPlateau on the selection metric, stop at min_lr or
max_epochs (camvis.job.optimizer), best checkpoint by the selection metric. Every epoch ends
with a full checkpoint (model, optimizer, scheduler, RNG states, epoch, best score) written
atomically (camvis.job.checkpoint), so a requeued job resumes where it stopped and ends with the
same result as an uninterrupted run (bit for bit on the CPU: all randomness is seeded or restored).
Checkpoints record the config's train_hash and resume only under the same one. A loss that is no
longer finite stops the job. What the epochs report (progress.json, TensorBoard, the learning
curve) is camvis.job.train_log's. torch.compile and fused Adam are used as camvis.job.speedups
chooses (never on the CPU unless asked).
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch.nn.parallel import DistributedDataParallel

from camvis import metrics
from camvis.job import checkpoint, efficiency, memory, speedups
from camvis.job.batches import BatchSource, EpochSampler, fold_split, inner_split
from camvis.config import JobConfig
from camvis.job.checkpoint import TrainState
from camvis.job.distributed import DistEnv
from camvis.errors import CamvisError
from camvis.job.evaluate import patch_probabilities
from camvis.job.optimizer import make_optimizer, training_done
from camvis.job.train_log import TrainLog, log, write_learning_curve
from camvis.bookkeeping.jobfolder import BEST, CHECKPOINT
from camvis.model import build_model
from camvis.progress import Advance, progress_bar
from camvis.data.store import PatchStore, open_store


class DivergedError(CamvisError):
    """The loss is no longer finite: the weights are lost, nothing is evaluated."""


@dataclass
class TrainInputs:
    store: PatchStore
    source: BatchSource
    train_idx: np.ndarray
    val_idx: np.ndarray
    view: str
    first_step_at: float | None = None  # perf_counter() when the first training step ended (start-up timing)


def open_inputs(cfg: JobConfig, device: torch.device, store: PatchStore | None = None) -> TrainInputs:
    """Open the store and move the pyramid to the device once, for training and evaluation alike.

    BatchSource checks data.factors against the store's levels, fold_split data.fold against its views;
    a job whose allocation cannot hold what it loads fails here (camvis.job.memory).
    """
    store = store if store is not None else open_store(cfg.data.store)
    train_idx, val_idx, view = fold_split(store, cfg.data.fold)
    memory.check_job(store, cfg.data.factors, on_gpu=device.type == "cuda")  # before the OOM killer would
    memory.check_model(cfg, store.patch_size, device, patches=len(train_idx))  # before the model is built
    if cfg.train.selection == "inner":  # validate on training images: the held-out view is scored once
        train_idx, val_idx = inner_split(store, train_idx, cfg.train.inner_fraction, cfg.train.seed)
    source = BatchSource(store, cfg.data.factors, device, fold=cfg.data.fold)  # the fold's statistics
    return TrainInputs(store, source, train_idx, val_idx, view)


# --------------------------------------------------------------------------- the loop


def train(cfg: JobConfig, job_dir: Path, env: DistEnv, inputs: TrainInputs | None = None, *,
          run_id: str | None = None, meter: efficiency.Meter | None = None) -> TrainState:
    """Train (or resume training) one job; returns the final state. Only rank 0 writes.

    `inputs`: the job's open store and device pyramid (opened here if None), which the
    caller can hand on to the evaluation instead of loading the pyramid a second time.
    `run_id`: recorded in a fresh training's checkpoints (a --restart's id; camvis.job.identity).
    A checkpoint of another training is an error: camvis.job.identity.settle moves it aside first.
    `meter`: the job's efficiency figures (camvis.job.efficiency), written to progress.json every epoch.
    """
    job_dir = Path(job_dir)
    inputs = inputs if inputs is not None else open_inputs(cfg, env.device)
    meter = meter if meter is not None else efficiency.Meter(env.device, sample_gpu=env.is_main)
    model, opt, sched, speed = _build(cfg, inputs, env, meter)
    state = _resume(cfg, job_dir / CHECKPOINT, model, opt, sched, env, run_id)
    # what the inputs were normalized with (camvis.job.identity.settle has matched a resumed checkpoint's)
    state.normalization = inputs.source.normalization.record()
    if not state.finished:
        net = _compiled(_wrap_ddp(model, env), speed, env)
        sampler = _sampler(cfg, inputs, env)
        with TrainLog(job_dir, cfg, env, meter, state.epoch) as report:
            while not state.finished:
                start = time.perf_counter()
                batches = epoch_on_device(sampler.batches(state.epoch), env.device)
                train_loss, train_acc = _train_pass(net, opt, inputs, batches, cfg, env, state)
                samples_per_s = sum(map(len, batches)) * env.world_size / max(time.perf_counter() - start, 1e-9)
                record = {"train_loss": train_loss, "train_acc": train_acc,
                          **_validate_and_step(model, inputs, cfg, env, sched, state, job_dir),
                          "samples_per_s": samples_per_s}
                _finish_epoch(cfg, job_dir, env, model, opt, sched, state, record)
                report.epoch(state, record, time.perf_counter() - start)
    if env.is_main:
        write_learning_curve(job_dir, cfg, state)
    return state


# --------------------------------------------------------------------------- before the first epoch


def _build(cfg: JobConfig, inputs: TrainInputs, env: DistEnv, meter: efficiency.Meter
           ) -> tuple[torch.nn.Module, torch.optim.Optimizer, Any, speedups.Speedups]:
    """The seeded model on the device, its optimizer and schedule, and the speed-ups chosen for it."""
    torch.manual_seed(cfg.train.seed)
    model = build_model(cfg, inputs.store.patch_size).to(env.device)
    if env.is_main:
        meter.measure_model(model)
    if env.device.type == "cuda":
        model = model.to(memory_format=torch.channels_last)
        torch.backends.cudnn.benchmark = True  # fixed shapes: the fastest conv algorithms, found once
    speed = speedups.choose(cfg, env.device)
    meter.speedups = speed.record()
    opt, sched = make_optimizer(cfg, model, fused=speed.fused_adam)
    return model, opt, sched, speed


def _resume(cfg: JobConfig, ckpt: Path, model, opt, sched, env: DistEnv, run_id: str | None) -> TrainState:
    """The state of the last finished epoch if a checkpoint exists (weights, optimizer, RNG restored)."""
    if not ckpt.exists():
        return TrainState(run_id=run_id)
    state = checkpoint.load(ckpt, model, opt, sched, cfg, env.device)
    state.restarts += 1
    state.finished = training_done(cfg, state.epoch, opt.param_groups[0]["lr"])
    if state.finished:
        log(env, f"{cfg.name}: training finished at epoch {state.epoch} ({ckpt}): no training, re-evaluating")
    else:
        log(env, f"resuming {cfg.name} from {ckpt} at epoch {state.epoch}")
    return state


def _wrap_ddp(model: torch.nn.Module, env: DistEnv) -> torch.nn.Module:
    if not env.distributed:
        return model
    return DistributedDataParallel(model, device_ids=[env.device] if env.device.type == "cuda" else None)


def _compiled(net: torch.nn.Module, speed: speedups.Speedups, env: DistEnv) -> torch.nn.Module:
    """The training forward, compiled when chosen: the DDP wrapper itself under DDP (PyTorch's advice:
    its optimizer splits the graph at the gradient buckets). The bare model stays eager: it is what is
    validated, evaluated and checkpointed (a compiled module's state_dict keys carry a prefix)."""
    if speed.compile or speed.fused_adam or speed.chosen_by != "cpu":  # a CPU job's output stays as it was
        log(env, f"speed-ups: compile {speed.compile}, fused Adam {speed.fused_adam} ({speed.chosen_by})")
    return torch.compile(net) if speed.compile else net


def _sampler(cfg: JobConfig, inputs: TrainInputs, env: DistEnv) -> EpochSampler:
    """This rank's share of every epoch's training patches, class-balanced, reproducible per epoch."""
    return EpochSampler(inputs.train_idx, inputs.store.table["label"], batch_size=cfg.train.batch_size,
                        seed=cfg.train.seed, rank=env.rank, world_size=env.world_size,
                        epoch_patches=cfg.train.epoch_patches)


# --------------------------------------------------------------------------- one epoch


def _train_pass(net, opt, inputs: TrainInputs, batches: list[torch.Tensor], cfg: JobConfig, env: DistEnv,
                state: TrainState) -> tuple[float, float]:
    """The epoch's training pass: its loss (stopping the job if not finite) and accuracy over all ranks.
    A bar on rank 0 on a terminal only; the epoch's log line (camvis.job.train_log) is printed either way."""
    with progress_bar(f"epoch {state.epoch + 1}/{cfg.train.max_epochs}", sum(map(len, batches)),
                      enabled=None if env.is_main else False, transient=True) as advance:
        counts = torch.zeros(4, dtype=torch.long, device=env.device)  # tn, fp, fn, tp
        step = _first_step_clock(inputs, env.device, advance)
        loss = train_epoch(net, opt, inputs.source, batches, env, step, counts)
    check_finite(cfg, state, "training loss", loss)
    return loss, metrics.accuracy_from_counts(*counts.tolist())


def train_epoch(model, opt, source: BatchSource, batches: list[torch.Tensor], env: DistEnv,
                advance: Advance | None = None, counts: torch.Tensor | None = None) -> float:
    """One pass over this rank's batches; returns the mean training loss over all ranks. `counts` (4 zeros on
    the device), if given, receives the epoch's confusion counts (tn, fp, fn, tp) of the training logits."""
    model.train()
    use_bf16 = env.device.type == "cuda"
    total = torch.zeros(2, dtype=torch.float64, device=env.device)  # loss sum, samples
    for idx, x, y, _ in source.iter_batches(batches, channels_last=use_bf16):
        with torch.autocast(env.device.type, dtype=torch.bfloat16, enabled=use_bf16):
            logits = model(x)
        # summed: the mean of an empty batch (a rank's share of a tiny epoch) is NaN
        loss_sum = F.binary_cross_entropy_with_logits(logits.float(), y, reduction="sum")
        opt.zero_grad(set_to_none=True)
        (loss_sum / max(len(idx), 1)).backward()
        opt.step()
        total[0] += loss_sum.detach().double()
        total[1] += len(idx)
        if counts is not None:  # on the device, no sync: the logits' sign is the prediction at p = 0.5
            counts += torch.bincount((2 * y.long() + (logits.detach() >= 0).long()).reshape(-1), minlength=4)
        if advance is not None:
            advance(len(idx))
    if env.distributed:
        dist.all_reduce(total)
        if counts is not None:
            dist.all_reduce(counts)
    return float(total[0] / total[1].clamp(min=1))


def _first_step_clock(inputs: TrainInputs, device: torch.device, advance: Advance) -> Advance:
    """`advance`, which also notes in `inputs` when the job's first training step ended."""
    if inputs.first_step_at is not None:
        return advance

    def step(n: int) -> None:
        if inputs.first_step_at is None:
            if device.type == "cuda":
                torch.cuda.synchronize(device)  # once: the step has run, not only been queued
            inputs.first_step_at = time.perf_counter()
        advance(n)
    return step


def epoch_on_device(batches: list[torch.Tensor], device: torch.device) -> list[torch.Tensor]:
    """The epoch's index batches moved to the device in one copy, not one per step."""
    if device.type == "cpu" or not batches:
        return batches
    sizes = [len(b) for b in batches]
    return list(torch.cat(batches).to(device).split(sizes))


# --------------------------------------------------------------------------- after the pass


def validate(model, inputs: TrainInputs, cfg: JobConfig, env: DistEnv) -> dict[str, float]:
    """Loss, macro accuracy and macro F1 on the validation patches (the held-out view, or the inner
    split under train.selection inner), every patch counted once over the ranks.

    Every rank validates with rank 0's BatchNorm statistics (the ones best.pt saves): DDP only
    broadcasts them at the next training forward, and each rank's running stats follow its own batches.
    """
    broadcast_buffers(model, env)
    preds = patch_probabilities(model, inputs.source, inputs.val_idx, cfg.eval.batch_size, env.device)
    return metrics.scores(preds["score"], preds["label"], logits=preds["logit"])


def broadcast_buffers(model: torch.nn.Module, env: DistEnv) -> None:
    """Rank 0's buffers (BatchNorm running statistics) on every rank."""
    if not env.distributed:
        return
    net = model.module if isinstance(model, DistributedDataParallel) else model
    for buffer in net.buffers():
        dist.broadcast(buffer.data, src=0)


def _validate_and_step(model, inputs: TrainInputs, cfg: JobConfig, env: DistEnv, sched, state: TrainState,
                       job_dir: Path) -> dict[str, float]:
    """Validate, step the plateau schedule on the selection metric, keep the best weights."""
    val = validate(model, inputs, cfg, env)
    check_finite(cfg, state, "validation loss", val["loss"])
    value = val[cfg.train.selection_metric]
    sched.step(value)
    if improved(cfg.train.selection_metric, value, state.best_value):
        state.best_value, state.best_epoch = value, state.epoch
        if env.is_main:
            checkpoint.save_best(job_dir / BEST, model, state, cfg)
    lr = sched.optimizer.param_groups[0]["lr"]
    return {"val_loss": val["loss"], "val_acc": val["acc"], "val_f1": val["f1"], "lr": lr}


def improved(metric: str, value: float, best: float | None) -> bool:
    if best is None:
        return True
    return value < best if metric == "loss" else value > best


def check_finite(cfg: JobConfig, state: TrainState, what: str, value: float) -> None:
    """Stop before a diverged epoch is checkpointed or selected (the value is the same on every rank)."""
    if not math.isfinite(value):
        raise DivergedError(f"{cfg.experiment}/{cfg.name}: the {what} became {value} in epoch {state.epoch + 1} "
                            f"(train.lr={cfg.train.lr:g}): training diverged and stopped, no scores written; lower "
                            f"train.lr (or check the data) and relaunch")


def _finish_epoch(cfg: JobConfig, job_dir: Path, env: DistEnv, model, opt, sched, state: TrainState,
                  record: dict[str, float]) -> None:
    """Close the epoch in the state and make it durable: a requeue resumes after it."""
    state.history.append(record)
    state.epoch += 1
    state.finished = training_done(cfg, state.epoch, record["lr"])
    if env.is_main:
        checkpoint.save(job_dir / CHECKPOINT, model, opt, sched, state, cfg, env.device)
