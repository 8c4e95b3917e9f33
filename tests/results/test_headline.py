"""Issue 21's acceptance on fabricated per-fold scores whose answer is known: the headline interval, the
difference interval that never contradicts its test, the Bayesian probabilities (against baycomp and the
closed form), replicates folded per fold, and the ROPE option."""

from __future__ import annotations

import math

import numpy as np
import pytest

from camvis.metrics import METRICS
from camvis.results import stats
from camvis.results.compare import compare
from camvis.results.finished import FinishedJob, replicate_of
from camvis.results.rope import DEFAULT_ROPE, parse_rope
from camvis.results.units import collapse

R = 400


def job(group: str, fold: int, acc: float, noise: np.ndarray, replicate: str = "") -> FinishedJob:
    metrics = {"loss": 1.0 - acc, "acc": acc, "f1": acc - 0.02}
    boot = np.array([metrics[m] for m in METRICS]) + noise
    return FinishedJob(name=f"{group}_fold{fold}{'_' + replicate if replicate else ''}", group=group, fold=fold,
                       view=f"v{fold}", model_name=group, metrics=metrics, ci={}, boot=boot, replicate=replicate)


def units_of(jobs):
    return collapse(jobs, np.stack([j.boot for j in jobs]))


def noise(seed: int, sd: float = 0.01) -> np.ndarray:
    return np.random.default_rng(seed).normal(0.0, sd, (R, len(METRICS)))


def test_folds_all_equal_give_the_test_only_interval() -> None:
    boots = np.stack([0.8 + noise(f) for f in range(4)])
    values = np.full((4, 3), 0.8)
    low, high = stats.headline_interval(values, boots, 1 / 3, 0.95)
    test_low, test_high = stats.fold_mean_ci(boots, 0.95)
    np.testing.assert_array_equal(low, test_low)
    np.testing.assert_array_equal(high, test_high)


def test_folds_spread_apart_give_at_least_the_corrected_t_interval() -> None:
    values = np.array([[0.95], [0.78], [0.90], [0.67]])  # the demo's align folds
    boots = values[:, None, :] + np.stack([noise(f)[:, :1] for f in range(4)])
    low, high = stats.headline_interval(values, boots, 1 / 3, 0.95)
    t_low, t_high = stats.corrected_t_interval(values, 1 / 3, 0.95)
    half = stats.t_quantile(0.975, 3) * math.sqrt((1 / 4 + 1 / 3) * np.var(values, ddof=1))
    assert (t_low[0], t_high[0]) == pytest.approx((values.mean() - half, values.mean() + half))
    assert low[0] <= t_low[0] and high[0] >= t_high[0]
    test_low, test_high = stats.fold_mean_ci(boots, 0.95)
    assert high[0] - low[0] > 5 * (test_high[0] - test_low[0])  # the old interval ignored the folds


@pytest.mark.parametrize("seed", range(40))
def test_a_pair_the_test_calls_not_significant_never_gets_an_interval_excluding_0(seed: int) -> None:
    rng = np.random.default_rng(seed)
    k = int(rng.integers(2, 10))
    shift, spread = rng.normal(0, 0.02), rng.uniform(0.001, 0.05)
    jobs = []
    for fold in range(1, k + 1):
        shared = noise(100 * seed + fold)
        base = 0.8 + rng.normal(0, 0.05)
        jobs += [job("a", fold, base + shift + rng.normal(0, spread), shared), job("b", fold, base, shared)]
    for confidence in (0.9, 0.95, 0.99):
        table = compare(units_of(jobs), confidence)
        excludes = (table.ci_low > 0) | (table.ci_high < 0)
        significant = table.p_value < 1 - confidence
        assert (excludes == significant).all(), table[["metric", "ci_low", "ci_high", "p_value"]]


def test_demo_like_pair_interval_holds_0_beside_p_030() -> None:
    # issue 21: align - cat = -0.1222 beside p = 0.30 had a test-only interval far from 0
    cat, align = [0.95, 0.97, 0.96, 0.93], [0.95, 0.78, 0.90, 0.67]
    jobs = [job(g, f + 1, v[f], noise(f, 0.004)) for g, v in (("align", align), ("cat", cat)) for f in range(4)]
    row = compare(units_of(jobs), 0.95).set_index("metric").loc["acc"]
    assert row.p_value > 0.05 and row.ci_low < 0 < row.ci_high
    assert row.test_ci_high < 0  # the test-only interval, kept and labelled, ignores the folds


def test_bayesian_probabilities_match_baycomp() -> None:
    baycomp = pytest.importorskip("baycomp")
    rng = np.random.default_rng(3)
    for k in (3, 4, 9):
        a, b = 0.8 + rng.normal(0, 0.03, k), 0.79 + rng.normal(0, 0.03, k)
        for rope in (0.0, 0.01, 0.05):
            ours = stats.bayes_probabilities((a - b)[:, None], 1 / (k - 1), np.array([rope]), np.array([True]))[:, 0]
            # baycomp's diff is y - x, left = P(diff < -rope): x better when higher is better
            theirs = baycomp.CorrelatedTTest.probs(a, b, rope=rope) if rope else None
            if theirs is not None:
                np.testing.assert_allclose(ours, theirs, rtol=1e-10, atol=1e-12)
            else:
                left, right = baycomp.CorrelatedTTest.probs(a, b, rope=0)
                np.testing.assert_allclose(ours, [left, 0.0, right], rtol=1e-10, atol=1e-12)


def test_bayesian_probabilities_closed_form() -> None:
    # 3 folds -> 2 dof, whose CDF is closed: F(t) = 1/2 + t / (2 sqrt(2 + t^2))
    d = np.array([0.02, 0.05, 0.04])
    scale = math.sqrt((1 / 3 + 0.5) * np.var(d, ddof=1))
    F = lambda t: 0.5 + t / (2 * math.sqrt(2 + t * t))  # noqa: E731
    rope = 0.01
    expect_a = 1 - F((rope - d.mean()) / scale)
    expect_b = F((-rope - d.mean()) / scale)
    got = stats.bayes_probabilities(d[:, None], 0.5, np.array([rope]), np.array([True]))[:, 0]
    assert got == pytest.approx([expect_a, 1 - expect_a - expect_b, expect_b], rel=1e-12)
    lower = stats.bayes_probabilities(d[:, None], 0.5, np.array([rope]), np.array([False]))[:, 0]
    assert lower == pytest.approx(got[::-1])  # loss: lower is better, a's larger loss makes b better
    same = stats.bayes_probabilities(np.full((4, 1), 0.004), 1 / 3, np.array([0.01]), np.array([True]))[:, 0]
    assert list(same) == [0.0, 1.0, 0.0]  # no spread, inside the ROPE: all the mass at the mean


def test_replicates_are_averaged_per_fold_and_their_spread_reported() -> None:
    jobs = []
    for fold, level in ((1, 0.80), (2, 0.90), (3, 0.85)):
        for r, jitter in ((1, -0.01), (2, 0.0), (3, 0.01)):
            jobs.append(job("cat", fold, level + jitter, noise(fold), replicate=f"rep{r}"))
            jobs.append(job("align", fold, level - 0.05 + 2 * jitter, noise(fold), replicate=f"rep{r}"))
    units = units_of(jobs)
    assert len(units.keys) == 6 and (units.n_replicates == 3).all()
    cat = units.of_group("cat")
    np.testing.assert_allclose(units.points[cat, 1], [0.80, 0.90, 0.85])
    np.testing.assert_allclose(units.seed_var[cat, 1], 0.0001)  # var of (-0.01, 0, 0.01), ddof 1
    table = compare(units, 0.95).set_index("metric")
    assert table.loc["acc", "n_folds"] == 3  # k counts folds, not runs
    assert table.loc["acc", "mean_diff"] == pytest.approx(-0.05)


@pytest.mark.parametrize("name, scores, expected", [
    ("cat_fold2_rep3", {}, ("cat", "rep3")),
    ("cat_fold2_lr0.1_seed43", {}, ("cat_lr0.1", "seed43")),
    ("cat_fold2_lr0.1", {"replicate": 2}, ("cat_lr0.1", "rep2")),
    ("cat_fold2", {"replicate": 1}, ("cat", "")),
    ("cat_fold2_train-seed7_rep2", {}, ("cat", "train-seed7_rep2")),
])  # fmt: skip
def test_replicate_names(name: str, scores: dict, expected: tuple[str, str]) -> None:
    group = name.split("_fold")[0] + "".join("_" + p for p in name.split("_")[2:])
    assert replicate_of(name, group, scores) == expected


def test_rope_option_parses_and_names_bad_input() -> None:
    assert parse_rope("acc=0.02") == {**DEFAULT_ROPE, "acc": 0.02}
    assert parse_rope("") == DEFAULT_ROPE
    with pytest.raises(ValueError, match="did you mean rope.acc"):
        parse_rope("accc=0.02")
    for bad in ("acc=-1", "acc=nan", "acc=inf", "acc=x", "acc", "f1=2"):
        with pytest.raises(ValueError, match="acc|f1|metric=value"):
            parse_rope(bad)
