"""The paired comparisons of camvis-aggregate: every pair of groups over their common folds, per metric.

Per pair and metric, over the per-fold differences d = a - b of the replicate means (camvis.results.units):
- the corrected resampled t-test of Nadeau & Bengio (2003), its standard error se (also the scale of the
  Bayesian posterior), Holm's adjusted p-value, and the interval
  that belongs to that test (ci_low, ci_high: mean(d) +- t_{k-1} sqrt((1/k + n_test/n_train) var(d))),
  which excludes 0 exactly when p < 1 - confidence: the difference and its test never disagree;
- the paired bootstrap interval over test images only, given the trained models (test_ci_low/high),
  kept as a second, labelled interval: it leaves out the variation across folds and training runs;
- the correlated Bayesian t-test (Corani & Benavoli 2015, as baycomp's CorrelatedTTest) with a region
  of practical equivalence per metric (camvis.results.rope): P(a better), P(equivalent), P(b better).

The family Holm corrects over is every pair of one metric in the table (an 8-architecture grid:
28 tests per metric). The pairs of a metric are read together ("which groups differ in acc?"),
while loss, acc and f1 are three questions read separately and strongly correlated, so one family
of all three would only make every test more conservative.

No torch here, like camvis.results.aggregate.
"""

from __future__ import annotations

from typing import Mapping, Sequence

import numpy as np
import pandas as pd

from camvis.metrics import METRICS
from camvis.results.finished import FinishedJob
from camvis.results.rope import DEFAULT_ROPE, HIGHER_IS_BETTER
from camvis.metrics import percentile_ci
from camvis.results.stats import bayes_probabilities, corrected_scale, corrected_t, corrected_t_interval, holm_adjust
from camvis.results.units import Units

COLUMNS = ["metric", "group_a", "group_b", "n_folds", "folds", "mean_a", "mean_b", "mean_diff", "se",
           "ci_low", "ci_high", "test_ci_low", "test_ci_high", "t", "dof", "p_value", "p_holm",
           "test_train_ratio", "rope", "p_a_better", "p_equivalent", "p_b_better"]  # fmt: skip


def default_test_train_ratio(jobs: Sequence[FinishedJob]) -> float:
    """1/(K-1) for K leave-one-view-out folds; K is at least the number of folds seen and the largest fold."""
    k = max(len({j.fold for j in jobs}), max(j.fold for j in jobs))
    return 1.0 / (k - 1) if k > 1 else 1.0


def pair_ratio(jobs: Sequence[FinishedJob], default: float) -> float:
    """The mean n_val/n_train the jobs recorded; `default` when any of them did not record both."""
    pairs = [(j.n_val, j.n_train) for j in jobs]
    if all(v is not None and t is not None for v, t in pairs):
        return float(np.mean([v / t for v, t in pairs]))  # type: ignore[operator]
    return default


def compare(units: Units, confidence: float, rope: Mapping[str, float] = DEFAULT_ROPE) -> pd.DataFrame:
    """Every pair of groups, per metric: paired per-fold difference (a - b) over common folds,
    with raw and Holm-adjusted (per metric) p-values, both intervals and the Bayesian probabilities.
    Pairs over the same folds are computed together, as arrays (P, k, metrics)."""
    groups = units.groups
    index = {key: i for i, key in enumerate(units.keys)}
    folds_of = {g: [f for h, f in units.keys if h == g] for g in groups}
    default = default_test_train_ratio([j for js in units.jobs for j in js])
    by_folds: dict[tuple[int, ...], list[tuple[str, str]]] = {}
    for ai, a in enumerate(groups):
        for b in groups[ai + 1 :]:
            folds = tuple(f for f in folds_of[a] if (b, f) in index)
            if folds:
                by_folds.setdefault(folds, []).append((a, b))
    parts = [_pairs_table(units, index, list(folds), pairs, confidence, rope, default)
             for folds, pairs in by_folds.items()]
    table = pd.concat(parts, ignore_index=True) if parts else pd.DataFrame(columns=[c for c in COLUMNS if c != "p_holm"])
    order = {g: i for i, g in enumerate(groups)}
    table = table.sort_values(["group_a", "group_b", "metric"], key=lambda c: c.map(order) if c.name != "metric"
                              else c.map({m: i for i, m in enumerate(METRICS)}), kind="stable").reset_index(drop=True)
    p_holm = table.groupby("metric", sort=False)["p_value"].transform(lambda p: holm_adjust(p.to_numpy()))
    table.insert(COLUMNS.index("p_holm"), "p_holm", p_holm.astype(np.float64))
    return table


def _pairs_table(units: Units, index: dict[tuple[str, int], int], folds: list[int], pairs: list[tuple[str, str]],
                 confidence: float, rope: Mapping[str, float], default: float) -> pd.DataFrame:
    """The rows of `pairs`, which share the common folds `folds`: statistics along the folds axis."""
    ia = np.array([[index[a, f] for f in folds] for a, _ in pairs])  # (P, k)
    ib = np.array([[index[b, f] for f in folds] for _, b in pairs])
    ratio = np.array([pair_ratio([j for i in (*ra, *rb) for j in units.jobs[i]], default) for ra, rb in zip(ia, ib)])
    pa, pb = units.points[ia], units.points[ib]  # (P, k, metrics)
    diffs = np.moveaxis(pa - pb, 1, 0)  # (k, P, metrics): the stats work along axis 0
    r = ratio[:, None]
    low, high = corrected_t_interval(diffs, r, confidence)
    t, p, dof = corrected_t(diffs, r)
    se = corrected_scale(diffs, r)
    rope_k = np.array([rope[m] for m in METRICS])
    probs = bayes_probabilities(diffs, r, rope_k, np.array([HIGHER_IS_BETTER[m] for m in METRICS]))
    # test images only: resample r of the mean difference = mean over folds of a's minus b's r-th resample;
    # each group's mean over these folds once (not per pair: (P, k, R, metrics) would not fit in memory)
    means = {g: units.boots[[index[g, f] for f in folds]].mean(axis=0) for g in {g for pair in pairs for g in pair}}
    boot_diff = np.stack([means[a] - means[b] for a, b in pairs])  # (P, R, metrics)
    test_low, test_high = percentile_ci(boot_diff, confidence, axis=1)
    n, m = len(pairs), len(METRICS)
    columns = {
        "metric": np.tile(METRICS, n), "group_a": np.repeat([a for a, _ in pairs], m),
        "group_b": np.repeat([b for _, b in pairs], m), "n_folds": len(folds), "folds": " ".join(map(str, folds)),
        "mean_a": pa.mean(axis=1), "mean_b": pb.mean(axis=1), "mean_diff": diffs.mean(axis=0), "se": se,
        "ci_low": low, "ci_high": high, "test_ci_low": test_low, "test_ci_high": test_high, "t": t, "dof": dof,
        "p_value": p, "test_train_ratio": np.repeat(ratio, m), "rope": np.tile(rope_k, n),
        "p_a_better": probs[0], "p_equivalent": probs[1], "p_b_better": probs[2],
    }  # fmt: skip
    return pd.DataFrame({k: (v.ravel() if isinstance(v, np.ndarray) and v.ndim == 2 else v) for k, v in columns.items()},
                        columns=[c for c in COLUMNS if c != "p_holm"])
