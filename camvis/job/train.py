"""Training one grid point: DDP over every rank of the job, resumable from its last epoch.

Adam + BCE with logits, ReduceLROnPlateau on the selection metric, stop at min_lr or
max_epochs, best checkpoint by the selection metric. Every epoch ends with a full
checkpoint (model, optimizer, scheduler, RNG states, epoch, best score) written
atomically, so a requeued job resumes where it stopped and ends with the same result as
an uninterrupted run (bit for bit on the CPU: all randomness is seeded or restored).
Checkpoints record the config's train_hash and resume only under the same one; they are read
with weights_only=True (camvis.job.checkpoints). A loss that is no longer finite stops the job.
torch.compile and fused Adam are used as camvis.job.speedups chooses (never on the CPU unless asked).
"""

from __future__ import annotations

import math
import socket
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch.nn.parallel import DistributedDataParallel

from camvis import metrics
from camvis.job import checkpoints, efficiency, memory, speedups
from camvis.job.batches import BatchSource, EpochSampler, fold_split, inner_split
from camvis.config import JobConfig, to_dict, train_hash
from camvis.job.distributed import DistEnv
from camvis.errors import CamvisError
from camvis.job.evaluate import patch_probabilities
from camvis.host import now_iso
from camvis.io import write_json, write_torch
from camvis.bookkeeping.jobfolder import BEST, CHECKPOINT, LEARNING_CURVE, PROGRESS, TENSORBOARD
from camvis.model import build_model
from camvis.progress import Advance, progress_bar
from camvis.data.store import PatchStore, open_store


@dataclass
class TrainState:
    """What survives a requeue besides the weights and optimizer."""

    epoch: int = 0  # next epoch to run
    best_value: float | None = None
    best_epoch: int | None = None
    finished: bool = False
    restarts: int = 0
    history: list[dict[str, float]] = field(default_factory=list)
    run_id: str | None = None  # the --restart that started this training (None: a plain run)
    normalization: dict[str, Any] | None = None  # the inputs' statistics (Normalization.record): identity


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


def improved(metric: str, value: float, best: float | None) -> bool:
    if best is None:
        return True
    return value < best if metric == "loss" else value > best


def make_optimizer(cfg: JobConfig, model: torch.nn.Module, fused: bool = False) -> tuple[torch.optim.Optimizer, Any]:
    """Adam (`fused`: its fused kernel; else torch's default: foreach on CUDA, a loop on the CPU) and the
    plateau schedule."""
    opt = torch.optim.Adam(model.parameters(), lr=cfg.train.lr, weight_decay=cfg.train.weight_decay,
                           fused=True if fused else None)  # None: exactly the optimizer camvis always built
    sched = torch.optim.lr_scheduler.ReduceLROnPlateau(
        opt,
        mode="min" if cfg.train.selection_metric == "loss" else "max",
        factor=0.1,
        patience=cfg.train.plateau_patience,
        threshold=1e-4,
    )
    return opt, sched


# --------------------------------------------------------------------------- checkpoints


def save_checkpoint(path: Path, model: torch.nn.Module, opt, sched, state: TrainState, cfg: JobConfig,
                    device: torch.device | None = None) -> None:
    """`device`: the job's own GPU, whose RNG state alone is saved (not every visible GPU's: a
    requeue onto a node that shows fewer GPUs must still resume)."""
    payload = {
        "model": model.state_dict(),
        "optimizer": opt.state_dict(),
        "scheduler": sched.state_dict(),
        "rng_cpu": torch.get_rng_state(),
        "rng_cuda": torch.cuda.get_rng_state(device) if device is not None and device.type == "cuda" else None,
        "state": asdict(state),
        "config": to_dict(cfg),
        "train_hash": train_hash(cfg),
        "run_id": state.run_id,
        "normalization": state.normalization,  # camvis.job.identity: resumes only on the same inputs
    }
    write_torch(path, payload)  # atomic; a full disk is a DiskFullError


CHECKPOINT_KEYS = ("model", "optimizer", "scheduler", "rng_cpu", "rng_cuda", "state")


def load_checkpoint(path: Path, model: torch.nn.Module, opt, sched, cfg: JobConfig,
                    device: torch.device | None = None) -> TrainState:
    """Restore a checkpoint of `cfg`'s training; another training's or a foreign file is a CheckpointError.
    `device`: the job's GPU, which gets the saved CUDA RNG state."""
    payload = checkpoints.read(path, required=CHECKPOINT_KEYS)
    found, wanted = checkpoints.recorded_train_hash(payload), train_hash(cfg)
    if found != wanted:
        raise checkpoints.CheckpointError(f"{path}: trained with another config (train hash {found}, this "
                                          f"config's {wanted}); {checkpoints.RESTART_HINT}")
    try:
        model.load_state_dict(payload["model"])
        opt.load_state_dict(own_kernel(payload["optimizer"], opt))
        sched.load_state_dict(payload["scheduler"])
        torch.set_rng_state(payload["rng_cpu"])
        cuda_state = device_rng_state(payload["rng_cuda"], device)
        if cuda_state is not None:
            torch.cuda.set_rng_state(cuda_state, device)
        return TrainState(**payload["state"])
    except (RuntimeError, TypeError, ValueError, KeyError) as e:
        raise checkpoints.CheckpointError(f"{path}: not a checkpoint of this job's model ({_one_line(e)}); "
                                          f"{checkpoints.RESTART_HINT}") from e


def own_kernel(saved: dict[str, Any], opt: torch.optim.Optimizer) -> dict[str, Any]:
    """The saved optimizer state with this optimizer's kernel choice (fused, foreach): load_state_dict
    would otherwise restore the saving job's, and a job resumed under another train.fused_adam would
    silently keep it. The moments are the same either way; `step` is moved where the kernel wants it."""
    if not isinstance(saved, dict) or not isinstance(saved.get("param_groups"), list):
        return saved  # not an optimizer state: load_state_dict says so (a CheckpointError)
    groups = [{**group, "fused": mine.get("fused"), "foreach": mine.get("foreach")}
              for group, mine in zip(saved["param_groups"], opt.param_groups)]
    return {**saved, "param_groups": groups + saved["param_groups"][len(groups):]}


def device_rng_state(saved, device: torch.device | None) -> torch.Tensor | None:
    """The saved CUDA RNG state for the job's `device` (None: nothing to restore). Checkpoints
    before this one hold a list, one state per GPU the saving job saw: take the device's own,
    or none when the node now shows fewer GPUs than the saving one did."""
    if saved is None or device is None or device.type != "cuda":
        return None
    if isinstance(saved, (list, tuple)):
        index = device.index or 0
        return saved[index] if index < len(saved) else None
    return saved


def _one_line(error: BaseException) -> str:
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    return lines[0] if lines else type(error).__name__


def save_best(path: Path, model: torch.nn.Module, state: TrainState, cfg: JobConfig) -> None:
    payload = {
        "model": model.state_dict(),
        "epoch": state.best_epoch,
        "metric": cfg.train.selection_metric,
        "value": state.best_value,
        "config": to_dict(cfg),
        "train_hash": train_hash(cfg),
        "run_id": state.run_id,
        "normalization": state.normalization,  # camvis.job.evaluate checks it against its inputs
    }
    write_torch(path, payload)  # atomic; a full disk is a DiskFullError


# --------------------------------------------------------------------------- one epoch


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


def epoch_on_device(batches: list[torch.Tensor], device: torch.device) -> list[torch.Tensor]:
    """The epoch's index batches moved to the device in one copy, not one per step."""
    if device.type == "cpu" or not batches:
        return batches
    sizes = [len(b) for b in batches]
    return list(torch.cat(batches).to(device).split(sizes))


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
    torch.manual_seed(cfg.train.seed)
    model = build_model(cfg, inputs.store.patch_size).to(env.device)
    meter = meter if meter is not None else efficiency.Meter(env.device, sample_gpu=env.is_main)
    if env.is_main:
        meter.measure_model(model)
    if env.device.type == "cuda":
        model = model.to(memory_format=torch.channels_last)
        torch.backends.cudnn.benchmark = True  # fixed shapes: the fastest conv algorithms, found once
    speed = speedups.choose(cfg, env.device)
    meter.speedups = speed.record()
    opt, sched = make_optimizer(cfg, model, fused=speed.fused_adam)
    state = _resume(cfg, job_dir / CHECKPOINT, model, opt, sched, env, run_id)
    # what the inputs were normalized with (camvis.job.identity.settle has matched a resumed checkpoint's)
    state.normalization = inputs.source.normalization.record()
    if state.finished:
        if env.is_main:
            write_learning_curve(job_dir, cfg, state)
        return state
    net = _compiled(_wrap_ddp(model, env), speed, env)
    sampler = EpochSampler(inputs.train_idx, inputs.store.table["label"], batch_size=cfg.train.batch_size,
                           seed=cfg.train.seed, rank=env.rank, world_size=env.world_size,
                           epoch_patches=cfg.train.epoch_patches)
    writer = _tensorboard(job_dir, env, state.epoch)
    epoch_times: list[float] = []
    meter.start_training()  # GPU utilisation is sampled while training runs
    try:
        while not state.finished:
            start = time.perf_counter()
            batches = epoch_on_device(sampler.batches(state.epoch), env.device)
            n_samples = sum(len(b) for b in batches)
            # A bar on rank 0 on a terminal only; the epoch's log line below is printed either way.
            with progress_bar(f"epoch {state.epoch + 1}/{cfg.train.max_epochs}", n_samples,
                              enabled=None if env.is_main else False, transient=True) as advance:
                counts = torch.zeros(4, dtype=torch.long, device=env.device)  # tn, fp, fn, tp
                step = _first_step_clock(inputs, env.device, advance)
                train_loss = train_epoch(net, opt, inputs.source, batches, env, step, counts)
            check_finite(cfg, state, "training loss", train_loss)
            samples_per_s = n_samples * env.world_size / max(time.perf_counter() - start, 1e-9)
            record = {"train_loss": train_loss, "train_acc": metrics.accuracy_from_counts(*counts.tolist()),
                      **_validate_and_step(model, inputs, cfg, env, sched, state, job_dir),
                      "samples_per_s": samples_per_s}
            _finish_epoch(cfg, job_dir, env, model, opt, sched, state, record)
            epoch_times.append(time.perf_counter() - start)
            if env.is_main:
                _log_epoch(writer, state, record, epoch_times[-1])
                write_progress(job_dir, cfg, state, record, eta_s=_eta(cfg, state, epoch_times),
                               world_size=env.world_size, figures=meter.progress_fields(samples_per_s))
                log(env, _epoch_line(cfg, state, record))
    finally:
        meter.stop_training()
        if writer is not None:
            writer.close()
    if env.is_main:
        write_learning_curve(job_dir, cfg, state)
    return state




def write_learning_curve(job_dir: Path, cfg: JobConfig, state: TrainState) -> None:
    """learning_curve.png: training against validation loss and accuracy per epoch, from the history the
    checkpoint keeps (so a resumed or re-evaluated job draws every epoch), the kept epoch marked."""
    from camvis.plots.evaluation import plot_learning_curve

    if not state.history:
        return
    validation = "inner validation" if cfg.train.selection == "inner" else "held-out validation"
    best = None if state.best_epoch is None else state.best_epoch + 1
    plot_learning_curve(state.history, job_dir / LEARNING_CURVE, f"{cfg.experiment}/{cfg.name}: learning curve "
                        f"(selection on {cfg.train.selection_metric})", validation, best)


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


def _resume(cfg: JobConfig, ckpt: Path, model, opt, sched, env: DistEnv, run_id: str | None) -> TrainState:
    """The state of the last finished epoch if a checkpoint exists (weights, optimizer, RNG restored)."""
    if not ckpt.exists():
        return TrainState(run_id=run_id)
    state = load_checkpoint(ckpt, model, opt, sched, cfg, env.device)
    state.restarts += 1
    state.finished = training_done(cfg, state, opt.param_groups[0]["lr"])
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
            save_best(job_dir / BEST, model, state, cfg)
    lr = sched.optimizer.param_groups[0]["lr"]
    return {"val_loss": val["loss"], "val_acc": val["acc"], "val_f1": val["f1"], "lr": lr}


def _finish_epoch(cfg: JobConfig, job_dir: Path, env: DistEnv, model, opt, sched, state: TrainState,
                  record: dict[str, float]) -> None:
    """Close the epoch in the state and make it durable: a requeue resumes after it."""
    state.history.append(record)
    state.epoch += 1
    state.finished = training_done(cfg, state, record["lr"])
    if env.is_main:
        save_checkpoint(job_dir / CHECKPOINT, model, opt, sched, state, cfg, env.device)


def check_finite(cfg: JobConfig, state: TrainState, what: str, value: float) -> None:
    """Stop before a diverged epoch is checkpointed or selected (the value is the same on every rank)."""
    if not math.isfinite(value):
        raise DivergedError(f"{cfg.experiment}/{cfg.name}: the {what} became {value} in epoch {state.epoch + 1} "
                            f"(train.lr={cfg.train.lr:g}): training diverged and stopped, no scores written; lower "
                            f"train.lr (or check the data) and relaunch")


def training_done(cfg: JobConfig, state: TrainState, lr: float) -> bool:
    """Stop at max_epochs or once the plateau schedule has taken the rate down to min_lr."""
    return state.epoch >= cfg.train.max_epochs or lr <= cfg.train.min_lr * (1 + 1e-6)


def _eta(cfg: JobConfig, state: TrainState, epoch_times: list[float]) -> float | None:
    if state.finished:
        return 0.0
    return float(np.mean(epoch_times)) * (cfg.train.max_epochs - state.epoch) if epoch_times else None


def write_progress(job_dir: Path, cfg: JobConfig, state: TrainState, record: dict | None,
                   *, phase: str | None = None, eta_s: float | None = None, world_size: int = 1,
                   figures: dict[str, Any] | None = None) -> None:
    """progress.json for camvis-status: where the job is, in one small atomic file; `figures`: the
    figures of camvis.job.efficiency.Meter.progress_fields, at the top level."""
    phase = phase or ("evaluating" if state.finished else "training")
    write_json(
        Path(job_dir) / PROGRESS,
        {
            "state": phase,
            "epoch": state.epoch,
            "max_epochs": cfg.train.max_epochs,
            "metrics": {k: v for k, v in (record or {}).items() if k != "samples_per_s"},
            "best": {"metric": cfg.train.selection_metric, "value": state.best_value, "epoch": state.best_epoch,
                     "on": cfg.train.selection},  # what scored it: the inner split or the held-out view
            "samples_per_s": (record or {}).get("samples_per_s"),
            "eta_s": eta_s,
            "updated": now_iso(),
            "host": socket.gethostname(),
            "restarts": state.restarts,
            "world_size": world_size,
            "train_hash": train_hash(cfg),
            **(figures or {}),
        },
    )


def _tensorboard(job_dir: Path, env: DistEnv, start_epoch: int):
    """One TensorBoard run per job: its folder's tensorboard/ (every tag below is a scalar of this run, so
    a grid's jobs line up as runs in one `tensorboard --logdir outputs/<experiment>`)."""
    if not env.is_main:
        return None
    from torch.utils.tensorboard import SummaryWriter

    # purge_step drops events a killed run logged past its last checkpoint
    return SummaryWriter(log_dir=str(job_dir / TENSORBOARD), purge_step=start_epoch)


_SCALARS = {"Loss/train": "train_loss", "Loss/val": "val_loss", "Accuracy/train": "train_acc",
            "Accuracy/val": "val_acc", "F1/val": "val_f1", "LearningRate": "lr",
            "Throughput/samples_per_s": "samples_per_s"}


def _log_epoch(writer, state: TrainState, record: dict, epoch_time: float) -> None:
    """The epoch's scalars, train beside val under one tag prefix each (add_scalar, never add_scalars:
    that makes a sub-run per series, which the runs list and the HParams tab then show as extra jobs)."""
    step = state.epoch - 1
    for tag, key in _SCALARS.items():
        if record.get(key) is not None:
            writer.add_scalar(tag, record[key], step)
    writer.add_scalar("Time/epoch_s", epoch_time, step)
    writer.flush()


HPARAM_METRICS = ("loss", "acc", "f1")


def log_hparams(job_dir: Path, cfg: JobConfig, scores: dict) -> None:
    """At the end of a job: its hyper-parameters and final held-out scores as TensorBoard hparams, in the
    job's own run, so the HParams tab compares every job of a grid (one row each)."""
    from torch.utils.tensorboard import SummaryWriter
    from torch.utils.tensorboard.summary import hparams

    m, t = cfg.model, cfg.train
    params = {"group": cfg.group, "fold": cfg.data.fold, "size_hidden": m.size_hidden,
              "share_weights": m.share_weights, "use_mlp": m.use_mlp, "align_features": m.align_features,
              "lr": t.lr, "batch_size": t.batch_size, "weight_decay": t.weight_decay, "seed": t.seed,
              "selection_metric": t.selection_metric, "factors": ",".join(map(str, cfg.data.factors))}
    speed = scores.get("speedups") or {}  # what the job trained with (camvis.job.speedups)
    params.update({key: speed[key] for key in ("compile", "fused_adam") if isinstance(speed.get(key), bool)})
    trained_on = scores.get("device") or {}  # camvis.job.device.describe
    params.update({f"device_{key}": trained_on[key] for key in ("type", "name", "count", "cuda", "driver")
                   if isinstance(trained_on.get(key), (str, int))})
    final = {f"Test/{k}": float(v) for k, v in (scores.get("metrics") or {}).items()
             if k in HPARAM_METRICS and v is not None}
    step = int(scores.get("epochs") or 0)
    with SummaryWriter(log_dir=str(job_dir / TENSORBOARD)) as writer:  # the same run: same folder
        for summary in hparams(params, final):
            writer.file_writer.add_summary(summary)
        for tag, value in final.items():
            writer.add_scalar(tag, value, step)


def _epoch_line(cfg: JobConfig, state: TrainState, record: dict) -> str:
    return (
        f"[{cfg.name}] epoch {state.epoch}/{cfg.train.max_epochs} "
        f"train_loss {record['train_loss']:.4f} val_loss {record['val_loss']:.4f} "
        f"val_acc {record['val_acc']:.4f} val_f1 {record['val_f1']:.4f} lr {record['lr']:.1e} "
        f"{record['samples_per_s']:.0f} samples/s best {cfg.train.selection_metric} "
        f"{state.best_value:.4f} (epoch {state.best_epoch + 1})"
    )


def log(env: DistEnv, message: str) -> None:
    if env.is_main:
        print(message, flush=True)
