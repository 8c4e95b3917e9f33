"""The paired comparisons of camvis-aggregate: every pair of groups over their common folds, per metric.

Per pair and metric: the paired per-fold differences (a - b), a bootstrap interval of their mean
from the paired resamples, the corrected resampled t-test of Nadeau & Bengio (2003) and Holm's
adjusted p-value. The statistics live in camvis.results.stats; this module builds the table.

The family Holm corrects over is every pair of one metric in the table (an 8-architecture grid:
28 tests per metric). The pairs of a metric are read together ("which groups differ in acc?"),
while loss, acc and f1 are three questions read separately and strongly correlated, so one family
of all three would only make every test more conservative.

No torch here, like camvis.results.aggregate.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
import pandas as pd

from camvis.metrics import METRICS
from camvis.results.finished import FinishedJob
from camvis.results.stats import corrected_t_test, holm_adjust, paired_difference_ci


COLUMNS = ["metric", "group_a", "group_b", "n_folds", "folds", "mean_a", "mean_b", "mean_diff",
           "ci_low", "ci_high", "t", "dof", "p_value", "p_holm", "test_train_ratio"]  # fmt: skip


def default_test_train_ratio(jobs: Sequence[FinishedJob]) -> float:
    """1/(K-1) for K leave-one-view-out folds; K is at least the number of folds seen and the largest fold."""
    k = max(len({j.fold for j in jobs}), max(j.fold for j in jobs))
    return 1.0 / (k - 1) if k > 1 else 1.0


def _ratio(a: list[FinishedJob], b: list[FinishedJob], default: float) -> float:
    pairs = [(j.n_val, j.n_train) for j in a + b]
    if all(v is not None and t is not None for v, t in pairs):
        return float(np.mean([v / t for v, t in pairs]))  # type: ignore[operator]
    return default


def compare(jobs: Sequence[FinishedJob], boots: np.ndarray, confidence: float) -> pd.DataFrame:
    """Every pair of groups, per metric: paired per-fold difference (a - b) over common folds,
    with raw and Holm-adjusted (per metric) p-values."""
    groups = sorted({j.group for j in jobs})
    index = {(j.group, j.fold): i for i, j in enumerate(jobs)}
    default = default_test_train_ratio(jobs)
    rows = []
    for ai, a in enumerate(groups):
        for b in groups[ai + 1 :]:
            folds = sorted(f for g, f in index if g == a and (b, f) in index)
            if not folds:
                continue
            ia, ib = [index[a, f] for f in folds], [index[b, f] for f in folds]
            ratio = _ratio([jobs[i] for i in ia], [jobs[i] for i in ib], default)
            low, high = paired_difference_ci(boots[ia], boots[ib], confidence)
            for k, metric in enumerate(METRICS):
                pa = np.array([jobs[i].metrics[metric] for i in ia])
                pb = np.array([jobs[i].metrics[metric] for i in ib])
                t, p, dof = corrected_t_test(pa - pb, ratio)
                rows.append({
                    "metric": metric, "group_a": a, "group_b": b, "n_folds": len(folds),
                    "folds": " ".join(map(str, folds)), "mean_a": pa.mean(), "mean_b": pb.mean(),
                    "mean_diff": (pa - pb).mean(), "ci_low": low[k], "ci_high": high[k],
                    "t": t, "dof": dof, "p_value": p, "test_train_ratio": ratio,
                })  # fmt: skip
    table = pd.DataFrame(rows, columns=[c for c in COLUMNS if c != "p_holm"])
    p_holm = table.groupby("metric", sort=False)["p_value"].transform(lambda p: holm_adjust(p.to_numpy()))
    table.insert(COLUMNS.index("p_holm"), "p_holm", p_holm.astype(np.float64))
    return table
