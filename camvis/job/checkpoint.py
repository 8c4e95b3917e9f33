"""Reading camvis's .pt files safely: torch.load(weights_only=True) only, one-line errors.

A checkpoint is a zip of tensors and plain containers (weights, optimizer and scheduler state,
RNG states, the config); nothing in it may run code. A file that would (a planted pickle), a
truncated one or one that is not a camvis checkpoint is a CheckpointError naming the file and
what to do, never a traceback.
"""

from __future__ import annotations

import pickle
import warnings
from pathlib import Path
from typing import Any, Iterable

import torch

from camvis.config import TRAIN_SECTIONS, sections_hash
from camvis.errors import CamvisError

RESTART_HINT = ("retrain the job from scratch with camvis-launch GRID --restart --only name=JOB "
                "(camvis-train CONFIG --restart), which keeps this file under previous/")


class CheckpointError(CamvisError):
    """A checkpoint that cannot be trusted or read."""


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
                                  f"({_refusal(e)}), so camvis did not write it; {hint}") from e
        raise CheckpointError(f"{path}: not a readable torch checkpoint ({_refusal(e)}); {hint}") from e
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


def _refusal(error: BaseException) -> str:
    """torch's one line that says what was refused (e.g. "unsupported GLOBAL posix.system ...")."""
    for line in str(error).splitlines():
        if "unsupported" in line.lower() or "invalid load key" in line.lower():
            return line.replace("WeightsUnpickler error:", "").strip().rstrip(".")
    return _first_line(error)


def _first_line(error: BaseException) -> str:
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    return lines[0] if lines else type(error).__name__
