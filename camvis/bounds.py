"""One bound check for every number a user gives: command-line options (camvis.cli.bounded) and
environment variables (env_number). A value outside its bounds, or not finite, is refused with one
line naming the option or variable, the value and what was expected."""

from __future__ import annotations

import math
import os
from typing import Any, Mapping

from camvis.errors import ConfigError

SEED_MAX = 2**32 - 1
"""numpy's largest seed: every seed option is bounded to [0, SEED_MAX]."""


def expected(kind: type, lo: float | None = None, hi: float | None = None) -> str:
    """'an integer >= 1', 'a finite number in [0, 1]', ..."""
    what = "an integer" if kind is int else "a finite number"
    if lo is not None and hi is not None:
        return f"{what} in [{lo}, {hi}]"
    if lo is not None:
        return f"{what} >= {lo}"
    return f"{what} <= {hi}" if hi is not None else what


def number(text: str, kind: type, lo: float | None = None, hi: float | None = None,
           exclusive_lo: bool = False) -> int | float:
    """`text` as `kind` (int or float) within [lo, hi] (`exclusive_lo`: above lo); ValueError naming the
    bounds otherwise. Floats must be finite: nan and inf are refused."""
    want = expected(kind, lo, hi).replace(">=", ">") if exclusive_lo else expected(kind, lo, hi)
    try:
        value = kind(text.strip()) if isinstance(text, str) else kind(text)
    except (TypeError, ValueError):
        raise ValueError(f"expected {want}, got {text!r}") from None
    if isinstance(value, float) and not math.isfinite(value):
        raise ValueError(f"expected {want}, got {text!r}")
    below = lo is not None and (value <= lo if exclusive_lo else value < lo)
    if below or (hi is not None and value > hi):
        raise ValueError(f"expected {want}, got {text!r}")
    return value


def env_number(name: str, kind: type, lo: float | None = None, hi: float | None = None,
               environ: Mapping[str, str] = os.environ) -> int | float | None:
    """Environment variable `name` as a bounded number; None when unset or empty; ConfigError naming it."""
    text = environ.get(name, "")
    if not text.strip():
        return None
    try:
        return number(text, kind, lo, hi)
    except ValueError as e:
        raise ConfigError(f"environment variable {name}: {e}") from None


def num_threads(environ: Mapping[str, str] = os.environ) -> int | None:
    """CAMVIS_NUM_THREADS: intra-op threads per job, an integer in [1, 4096]; None when unset."""
    value = env_number("CAMVIS_NUM_THREADS", int, 1, 4096, environ)
    return None if value is None else int(value)


def patch_size_problem(value: object) -> str | None:
    """Why `value` cannot be a patch size, None if it can: the model halves a P x P patch down to 1 x 1
    (log2(P) blocks), so P must be a power of 2 >= 4 (camvis.model.num_blocks_for)."""
    if isinstance(value, bool) or not isinstance(value, int) or value < 4 or value & (value - 1):
        return (f"patch_size must be a power of 2 >= 4 (e.g. 16, 32, 128: the model halves a patch down to "
                f"1 x 1), got {value!r}")
    return None


# --------------------------------------------------------------------------- sizes before allocating


def model_parameters(num_levels: int, size_hidden: int, patch_size: int, share_weights: bool, use_mlp: bool,
                     align_features: bool, num_channels: int = 4) -> int:
    """camvis.model.MultiMagnificationNet's trainable parameters, from the architecture alone (no torch;
    tests/job/test_memory.py checks it against count_parameters for every variant)."""
    h, blocks = size_hidden, max(patch_size.bit_length() - 1, 1)

    def block(cin: int) -> int:  # conv 3 x 3 + bias, BatchNorm weight + bias
        return 9 * cin * h + 3 * h

    size_in = num_channels + h if align_features else num_channels
    encoder = block(size_in) + (blocks - 1) * block(h)
    if share_weights:
        encoders = encoder
    elif align_features:
        encoders = (num_levels - 1) * block(size_in) + encoder
    else:
        encoders = num_levels * encoder
    head_in = h if align_features else num_levels * h
    head = head_in * h + h + 2 * h + h + 1 if use_mlp else head_in + 1
    return encoders + head


def model_need(cfg: Any, patch_size: int, on_gpu: bool, patches: int | None = None) -> tuple[int, int, int]:
    """(bytes, parameters, activation bytes) training `cfg`'s model needs at least: 4 float32 copies of the
    parameters (weights, gradients, Adam's two moments) + the activations a batch keeps for the backward pass,
    at least the conv and BatchNorm outputs of every block of every level (bf16 on CUDA, float32 on the CPU).
    `patches`: the store's patch count, which caps a batch (None: train.batch_size as it is)."""
    m, levels, p = cfg.model, len(cfg.data.factors), patch_size
    batch = cfg.train.batch_size if patches is None else min(cfg.train.batch_size, max(patches, 1))
    params = model_parameters(levels, m.size_hidden, p, m.share_weights, m.use_mlp, m.align_features)
    sides = [p >> k for k in range(max(p.bit_length() - 1, 1))]
    per_level = 2 * m.size_hidden * sum(s * s for s in sides)
    if m.align_features:  # one block per level but the last, whose encoder runs whole
        per_level_total = (levels - 1) * 2 * m.size_hidden * p * p + per_level
    else:
        per_level_total = levels * per_level
    activations = batch * (per_level_total + levels * 4 * p * p) * (2 if on_gpu else 4)
    return 16 * params + activations, params, activations


def node_memory() -> int | None:
    """Bytes of physical memory of this machine, None where unknown."""
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        return None
