"""The optimizer and its schedule: Adam, ReduceLROnPlateau on the selection metric, when training stops.

`own_kernel` fits a saved optimizer state to this optimizer's kernel (fused, foreach) when a
checkpoint is restored (camvis.job.checkpoint.load).
"""

from __future__ import annotations

from typing import Any

import torch

from camvis.config import JobConfig


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


def training_done(cfg: JobConfig, epoch: int, lr: float) -> bool:
    """Stop at max_epochs or once the plateau schedule has taken the rate down to min_lr; `epoch`: the
    next one to run."""
    return epoch >= cfg.train.max_epochs or lr <= cfg.train.min_lr * (1 + 1e-6)


def own_kernel(saved: dict[str, Any], opt: torch.optim.Optimizer) -> dict[str, Any]:
    """The saved optimizer state with this optimizer's kernel choice (fused, foreach): load_state_dict
    would otherwise restore the saving job's, and a job resumed under another train.fused_adam would
    silently keep it. The moments are the same either way; `step` is moved where the kernel wants it."""
    if not isinstance(saved, dict) or not isinstance(saved.get("param_groups"), list):
        return saved  # not an optimizer state: load_state_dict says so (a CheckpointError)
    groups = [{**group, "fused": mine.get("fused"), "foreach": mine.get("foreach")}
              for group, mine in zip(saved["param_groups"], opt.param_groups)]
    return {**saved, "param_groups": groups + saved["param_groups"][len(groups):]}
