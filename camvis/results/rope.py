"""The region of practical equivalence (ROPE) of camvis-aggregate's Bayesian comparison, per metric.

A difference a - b within +-rope is "practically equivalent": too small to matter. The defaults are
one point of accuracy or F1 (0.01) and 0.01 of BCE loss; `camvis-aggregate --rope acc=0.02,f1=0.02`
sets them per metric. State the ROPE before looking at the results: a ROPE chosen afterwards can
make any pair equivalent. Pure Python (the CLI parses it before importing numpy).
"""

from __future__ import annotations

import math

from camvis.config import unknown_key_message
from camvis.metrics import METRICS

DEFAULT_ROPE = {"loss": 0.01, "acc": 0.01, "f1": 0.01}
HIGHER_IS_BETTER = {"loss": False, "acc": True, "f1": True}
MAX_ROPE = 1.0  # acc and f1 lie in [0, 1]: a wider ROPE makes every pair equivalent


def parse_rope(text: str) -> dict[str, float]:
    """`acc=0.02,f1=0.02` -> DEFAULT_ROPE with those metrics replaced; ValueError naming the bad part."""
    rope = dict(DEFAULT_ROPE)
    for part in (p.strip() for p in text.split(",")):
        if not part:
            continue
        metric, eq, value = (s.strip() for s in part.partition("="))
        if not eq:
            raise ValueError(f"{part!r}: expected metric=value, e.g. acc=0.01")
        if metric not in METRICS:
            raise ValueError(unknown_key_message(metric, list(METRICS), prefix="rope."))
        rope[metric] = check_rope(metric, value)
    return rope


def check_rope(metric: str, value: object) -> float:
    """A ROPE half-width: a finite number in [0, MAX_ROPE]; ValueError naming the metric otherwise."""
    try:
        number = float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        raise ValueError(f"rope.{metric}: expected a number in [0, {MAX_ROPE:g}], got {value!r}") from None
    if not (math.isfinite(number) and 0.0 <= number <= MAX_ROPE):
        raise ValueError(f"rope.{metric}: expected a number in [0, {MAX_ROPE:g}], got {value!r}")
    return number
