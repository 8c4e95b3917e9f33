"""camvis's .pt files: the training's checkpoint and best weights, written and read here only.

Writing: checkpoint.pt at the end of every epoch (model, optimizer, scheduler, RNG states, the
TrainState, the config and its train_hash, the inputs' normalization), best.pt whenever the
selection metric improves; both atomically (temp name, then rename: camvis.io.write_torch), by
rank 0 only. A checkpoint resumes only under the same train_hash.

Reading: torch.load(weights_only=True) only, one-line errors. A checkpoint is a zip of tensors and
plain containers; nothing in it may run code. A file that would (a planted pickle), a truncated
one or one that is not a camvis checkpoint is a CheckpointError naming the file and what to do,
never a traceback.
"""

from __future__ import annotations

import pickle
import warnings
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Iterable

import torch

from camvis.config import TRAIN_SECTIONS, JobConfig, sections_hash, to_dict, train_hash
from camvis.errors import CamvisError
from camvis.io import write_torch
from camvis.job.optimizer import own_kernel

RESTART_HINT = ("retrain the job from scratch with camvis-launch GRID --restart --only name=JOB "
                "(camvis-train CONFIG --restart), which keeps this file under previous/")


class CheckpointError(CamvisError):
    """A checkpoint that cannot be trusted or read."""


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


# --------------------------------------------------------------------------- writing


def save(path: Path, model: torch.nn.Module, opt, sched, state: TrainState, cfg: JobConfig,
         device: torch.device | None = None) -> None:
    """checkpoint.pt: all a requeued job needs to go on as if never stopped. `device`: the job's own GPU,
    whose RNG state alone is saved (not every visible GPU's: a requeue onto a node that shows fewer GPUs
    must still resume)."""
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


def save_best(path: Path, model: torch.nn.Module, state: TrainState, cfg: JobConfig) -> None:
    """best.pt: the weights of the best epoch so far, what the evaluation and the exports read."""
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


# --------------------------------------------------------------------------- reading


CHECKPOINT_KEYS = ("model", "optimizer", "scheduler", "rng_cpu", "rng_cuda", "state")


def load(path: Path, model: torch.nn.Module, opt, sched, cfg: JobConfig,
         device: torch.device | None = None) -> TrainState:
    """Restore a checkpoint of `cfg`'s training; another training's or a foreign file is a CheckpointError.
    `device`: the job's GPU, which gets the saved CUDA RNG state."""
    payload = read(path, required=CHECKPOINT_KEYS)
    found, wanted = recorded_train_hash(payload), train_hash(cfg)
    if found != wanted:
        raise CheckpointError(f"{path}: trained with another config (train hash {found}, this "
                              f"config's {wanted}); {RESTART_HINT}")
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
        raise CheckpointError(f"{path}: not a checkpoint of this job's model ({_first_line(e)}); "
                              f"{RESTART_HINT}") from e


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


def read(path: str | Path, *, required: Iterable[str] = (), hint: str = RESTART_HINT) -> dict[str, Any]:
    """The dict saved in `path`, loaded with weights_only=True; `required`: keys it must hold."""
    path = Path(path)
    try:
        with warnings.catch_warnings():  # torch warns about pickle protocols on foreign files
            warnings.simplefilter("ignore")
            payload = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        if "global" in str(e).lower():  # an import: the one way a pickle runs code
            raise CheckpointError(f"{path}: refused: it holds objects that could run code "
                                  f"({refusal(e)}), so camvis did not write it; {hint}") from e
        raise CheckpointError(f"{path}: not a readable torch checkpoint ({refusal(e)}); {hint}") from e
    except (RuntimeError, EOFError, OSError, ValueError, KeyError, AttributeError, TypeError) as e:
        raise CheckpointError(f"{path}: not a readable torch checkpoint (truncated or not a torch file: "
                              f"{_first_line(e)}); {hint}") from e
    missing = [k for k in required if not isinstance(payload, dict) or k not in payload]
    if not isinstance(payload, dict) or missing:
        raise CheckpointError(f"{path}: not a camvis checkpoint (no {', '.join(map(repr, missing)) or 'dict'}); "
                              f"{hint}")
    return payload


def recorded_train_hash(payload: dict[str, Any]) -> str | None:
    """The training hash a checkpoint records; older ones only hold their config: hash that."""
    if isinstance(payload.get("train_hash"), str):
        return payload["train_hash"]
    config = payload.get("config")
    return sections_hash(config, TRAIN_SECTIONS) if isinstance(config, dict) else None


def refusal(error: BaseException) -> str:
    """torch's one line that says what was refused (e.g. "unsupported GLOBAL posix.system ...")."""
    for line in str(error).splitlines():
        if "unsupported" in line.lower() or "invalid load key" in line.lower():
            return line.replace("WeightsUnpickler error:", "").strip().rstrip(".")
    return _first_line(error)


def _first_line(error: BaseException) -> str:
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    return lines[0] if lines else type(error).__name__
