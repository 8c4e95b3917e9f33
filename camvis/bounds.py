"""One bound check for every number a user gives: command-line options (camvis.cli.bounded) and
environment variables (env_number). A value outside its bounds, or not finite, is refused with one
line naming the option or variable, the value and what was expected."""

from __future__ import annotations

import math
import os
from typing import Mapping

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
