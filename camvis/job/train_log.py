"""What a training reports: progress.json, TensorBoard scalars and hparams, the log line, the learning curve.

Only rank 0 writes. progress.json is what camvis-status reads (one small atomic file); the job's
tensorboard/ folder is one TensorBoard run (a grid's jobs line up as runs in one
`tensorboard --logdir outputs/<experiment>`); learning_curve.png is drawn from the checkpoint's history.
"""

from __future__ import annotations

import socket
from pathlib import Path
from typing import Any

import numpy as np

from camvis.config import JobConfig, train_hash
from camvis.host import now_iso
from camvis.io import write_json
from camvis.job import efficiency
from camvis.job.checkpoint import TrainState
from camvis.job.distributed import DistEnv
from camvis.bookkeeping.jobfolder import LEARNING_CURVE, PROGRESS, TENSORBOARD

_SCALARS = {"Loss/train": "train_loss", "Loss/val": "val_loss", "Accuracy/train": "train_acc",
            "Accuracy/val": "val_acc", "F1/val": "val_f1", "LearningRate": "lr",
            "Throughput/samples_per_s": "samples_per_s"}
HPARAM_METRICS = ("loss", "acc", "f1")


class TrainLog:
    """The epochs' reports, opened for the training loop: TensorBoard scalars, progress.json and the log
    line on rank 0 after every epoch. While open, the meter samples GPU utilisation (every rank)."""

    def __init__(self, job_dir: Path, cfg: JobConfig, env: DistEnv, meter: efficiency.Meter, start_epoch: int):
        self.job_dir, self.cfg, self.env, self.meter = job_dir, cfg, env, meter
        self.writer = _tensorboard(job_dir, start_epoch) if env.is_main else None
        self.epoch_times: list[float] = []

    def __enter__(self) -> TrainLog:
        self.meter.start_training()
        return self

    def __exit__(self, *exc: object) -> None:
        self.meter.stop_training()
        if self.writer is not None:
            self.writer.close()

    def epoch(self, state: TrainState, record: dict[str, float], seconds: float) -> None:
        """Report the epoch just checkpointed (`state.epoch` is the next one), which took `seconds`."""
        self.epoch_times.append(seconds)
        if not self.env.is_main:
            return
        _log_epoch(self.writer, state, record, seconds)
        write_progress(self.job_dir, self.cfg, state, record, eta_s=_eta(self.cfg, state, self.epoch_times),
                       world_size=self.env.world_size, figures=self.meter.progress_fields(record["samples_per_s"]))
        log(self.env, _epoch_line(self.cfg, state, record))


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


def _eta(cfg: JobConfig, state: TrainState, epoch_times: list[float]) -> float | None:
    if state.finished:
        return 0.0
    return float(np.mean(epoch_times)) * (cfg.train.max_epochs - state.epoch) if epoch_times else None


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


# --------------------------------------------------------------------------- TensorBoard


def _tensorboard(job_dir: Path, start_epoch: int):
    """One TensorBoard run per job: its folder's tensorboard/ (every tag below is a scalar of this run, so
    a grid's jobs line up as runs in one `tensorboard --logdir outputs/<experiment>`)."""
    from torch.utils.tensorboard import SummaryWriter

    # purge_step drops events a killed run logged past its last checkpoint
    return SummaryWriter(log_dir=str(job_dir / TENSORBOARD), purge_step=start_epoch)


def _log_epoch(writer, state: TrainState, record: dict, epoch_time: float) -> None:
    """The epoch's scalars, train beside val under one tag prefix each (add_scalar, never add_scalars:
    that makes a sub-run per series, which the runs list and the HParams tab then show as extra jobs)."""
    step = state.epoch - 1
    for tag, key in _SCALARS.items():
        if record.get(key) is not None:
            writer.add_scalar(tag, record[key], step)
    writer.add_scalar("Time/epoch_s", epoch_time, step)
    writer.flush()


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


# --------------------------------------------------------------------------- the log


def _epoch_line(cfg: JobConfig, state: TrainState, record: dict) -> str:
    return (
        f"[{cfg.name}] epoch {state.epoch}/{cfg.train.max_epochs} "
        f"train_loss {record['train_loss']:.4f} val_loss {record['val_loss']:.4f} "
        f"val_acc {record['val_acc']:.4f} val_f1 {record['val_f1']:.4f} lr {record['lr']:.1e} "
        f"{record['samples_per_s']:.0f} samples/s best {cfg.train.selection_metric} "
        f"{state.best_value:.4f} (epoch {state.best_epoch + 1})"
    )


def log(env: DistEnv, message: str) -> None:
    """A line of the job's log, printed by rank 0 only."""
    if env.is_main:
        print(message, flush=True)
