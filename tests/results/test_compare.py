"""camvis.results.compare on its own: which pairs, over which folds, with which numbers."""

from __future__ import annotations

import math

import numpy as np
import pytest

from camvis.metrics import METRICS
from camvis.results.compare import COLUMNS, compare, default_test_train_ratio
from camvis.results.finished import FinishedJob
from camvis.results.stats import corrected_t_test
from camvis.results.units import collapse


def job(group: str, fold: int, acc: float, n_val: float | None = None, n_train: float | None = None) -> FinishedJob:
    metrics = {"loss": 1.0 - acc, "acc": acc, "f1": acc / 2}
    boot = np.tile([metrics[m] for m in METRICS], (20, 1)).astype(np.float64)
    return FinishedJob(name=f"{group}_fold{fold}", group=group, fold=fold, view=f"v{fold}", model_name=group,
                       metrics=metrics, ci={}, boot=boot, n_val=n_val, n_train=n_train)


def table(jobs):
    return compare(collapse(jobs, np.stack([j.boot for j in jobs])), 0.95)


def test_every_pair_of_groups_once_per_metric_over_common_folds() -> None:
    jobs = [job("a", f, 0.8 + 0.01 * f) for f in (1, 2, 3)] + [job("b", f, 0.7) for f in (1, 2)] + \
        [job("c", 3, 0.5)]
    out = table(jobs)
    assert list(out.columns) == COLUMNS
    pairs = sorted(set(zip(out.group_a, out.group_b)))
    assert pairs == [("a", "b"), ("a", "c")]  # b and c share no fold: no row
    ab = out[(out.group_a == "a") & (out.group_b == "b")].set_index("metric")
    assert list(ab.index) == list(METRICS)
    assert ab.loc["acc", "folds"] == "1 2" and ab.loc["acc", "n_folds"] == 2
    assert ab.loc["acc", "mean_diff"] == pytest.approx(np.mean([0.81 - 0.7, 0.82 - 0.7]))
    # constant resamples: the paired bootstrap interval is the difference itself
    assert ab.loc["acc", "test_ci_low"] == pytest.approx(ab.loc["acc", "mean_diff"])


def test_t_test_uses_the_recorded_test_train_ratio_and_holm_per_metric() -> None:
    jobs = [job("a", f, 0.8 + 0.02 * f, n_val=100, n_train=300) for f in (1, 2, 3)] + \
        [job("b", f, 0.7 + 0.01 * f, n_val=100, n_train=300) for f in (1, 2, 3)]
    out = table(jobs).set_index("metric")
    diffs = np.array([0.02 * f - 0.01 * f + 0.1 for f in (1, 2, 3)])
    t, p, dof = corrected_t_test(diffs, 1 / 3)
    assert out.loc["acc", "test_train_ratio"] == pytest.approx(1 / 3)
    assert (out.loc["acc", "t"], out.loc["acc", "p_value"], out.loc["acc", "dof"]) == pytest.approx((t, p, dof))
    assert out.loc["acc", "p_holm"] == pytest.approx(p)  # one pair: a family of one


def test_without_patch_counts_the_ratio_is_one_over_k_minus_one() -> None:
    jobs = [job("a", f, 0.8) for f in (1, 4)]
    assert default_test_train_ratio(jobs) == pytest.approx(1 / 3)  # the largest fold says K >= 4
    single = table([job("a", 1, 0.8), job("b", 1, 0.6)]).set_index("metric")
    assert math.isnan(single.loc["acc", "p_value"]) and math.isnan(single.loc["acc", "p_holm"])
