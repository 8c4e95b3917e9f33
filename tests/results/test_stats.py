"""camvis.results.stats: Student's t without scipy, the corrected resampled t-test, bootstrap intervals of fold means,
Holm's adjusted p-values."""

from __future__ import annotations

import math

import numpy as np
import pytest

from camvis.results import stats
from camvis.metrics import percentile_ci

# --------------------------------------------------------------------------- Student's t


@pytest.mark.parametrize(("t", "dof", "p"), [(2.262, 9, 0.05), (2.228, 10, 0.05), (12.706, 1, 0.05),
                                              (3.169, 10, 0.01), (1.96, 1e6, 0.05), (2.576, 1e6, 0.01)])  # fmt: skip
def test_t_two_sided_p_matches_table_quantiles(t: float, dof: float, p: float) -> None:
    assert stats.t_two_sided_p(t, dof) == pytest.approx(p, abs=2e-4)
    assert stats.t_cdf(t, dof) == pytest.approx(1 - p / 2, abs=1e-4)
    assert stats.t_cdf(-t, dof) == pytest.approx(p / 2, abs=1e-4)


@pytest.mark.parametrize("t", [0.0, 0.3, 1.0, 2.5, 7.0, 40.0])
def test_t_cdf_matches_closed_forms(t: float) -> None:
    assert stats.t_two_sided_p(t, 1) == pytest.approx(1 - 2 / math.pi * math.atan(t), rel=1e-10, abs=1e-13)  # Cauchy
    assert stats.t_two_sided_p(t, 2) == pytest.approx(1 - t / math.sqrt(2 + t * t), rel=1e-10, abs=1e-13)
    assert stats.t_cdf(-t, 5) + stats.t_cdf(t, 5) == pytest.approx(1.0)


def test_t_infinite_and_nan() -> None:
    assert stats.t_two_sided_p(math.inf, 3) == 0.0 and math.isnan(stats.t_two_sided_p(math.nan, 3))
    assert stats.t_quantile(0.975, 3) == pytest.approx(3.182446305284263)


# --------------------------------------------------------------------------- tests and intervals


def test_corrected_t_test_edge_cases() -> None:
    assert math.isnan(stats.corrected_t_test(np.array([0.1]), 0.1)[0])
    assert stats.corrected_t_test(np.array([0.1, 0.1, 0.1]), 0.1)[:2] == (math.inf, 0.0)
    assert stats.corrected_t_test(np.zeros(4), 0.1)[:2] == (0.0, 1.0)


def test_fold_mean_and_paired_difference_intervals_are_over_resamples_of_the_mean() -> None:
    rng = np.random.default_rng(0)
    a, b = rng.normal(size=(4, 500, 3)), rng.normal(size=(4, 500, 3))  # (folds, resamples, metrics)
    low, high = stats.fold_mean_ci(a, 0.9)
    expected = percentile_ci(a.mean(axis=0), 0.9, axis=0)
    assert low.shape == high.shape == (3,) and (low < high).all()
    np.testing.assert_array_equal(low, expected[0])
    np.testing.assert_array_equal(high, expected[1])
    dlow, dhigh = stats.paired_difference_ci(a, b, 0.9)
    np.testing.assert_array_equal(dlow, percentile_ci((a - b).mean(axis=0), 0.9, axis=0)[0])
    np.testing.assert_array_equal(dhigh, percentile_ci((a - b).mean(axis=0), 0.9, axis=0)[1])
    same = stats.paired_difference_ci(a, a, 0.9)  # identical resamples: a zero-width interval at 0
    assert (same[0] == 0).all() and (same[1] == 0).all()


# --------------------------------------------------------------------------- Holm


def holm_by_definition(p: list[float]) -> list[float]:
    """Brute force from Holm (1979), one value at a time: p_adj of the i-th smallest (1-based) is
    max over j <= i of min(1, (m - j + 1) p_(j)), m counting the non-NaN values."""
    valid = sorted((v, i) for i, v in enumerate(p) if not math.isnan(v))
    m = len(valid)
    out = [math.nan] * len(p)
    for rank, (_, i) in enumerate(valid, start=1):
        out[i] = max(min(1.0, (m - j + 1) * valid[j - 1][0]) for j in range(1, rank + 1))
    return out


@pytest.mark.parametrize(("p", "expected"), [
    ([0.01, 0.04, 0.03, 0.005], [0.03, 0.06, 0.06, 0.02]),  # 4x.005, 3x.01, 2x.03, max(1x.04, .06): input order kept
    ([0.02, 0.5, 0.02], [0.06, 0.5, 0.06]),  # ties: both 3x.02 = .06 (the second's 2x.02 is raised by the max)
    ([math.nan, 0.02, 0.02, 0.5, math.nan], [math.nan, 0.06, 0.06, 0.5, math.nan]),  # NaN stays NaN, m = 3
    ([0.3], [0.3]), ([0.0], [0.0]), ([1.0], [1.0]),  # m = 1: unchanged
    ([0.45, 0.6, 0.7], [1.0, 1.0, 1.0]),  # 3x.45 and 2x.6 capped at 1; .7 raised to 1 by monotonicity
    ([0.4, 0.6, 0.2], [0.8, 0.8, 0.6]),  # .6 (1x.6) raised to .8 (2x.4)
    ([math.nan, math.nan], [math.nan, math.nan]), ([], []),
])  # fmt: skip
def test_holm_adjust_hand_computed(p: list[float], expected: list[float]) -> None:
    got = stats.holm_adjust(np.array(p))
    assert got.dtype == np.float64 and got.shape == (len(p),)
    np.testing.assert_allclose(got, expected, rtol=1e-12, atol=0)  # NaN positions must match too


def test_holm_adjust_matches_the_definition_and_the_step_down_procedure() -> None:
    rng = np.random.default_rng(3)
    for _ in range(300):
        m = int(rng.integers(1, 30))
        p = np.round(rng.uniform(0, 1, m) ** 3, int(rng.integers(2, 6)))  # small values reject; few digits tie
        p[rng.uniform(size=m) < 0.2] = np.nan
        got = stats.holm_adjust(p)
        np.testing.assert_allclose(got, holm_by_definition(p.tolist()), rtol=1e-12, atol=0)
        valid = ~np.isnan(p)
        assert (np.isnan(got) == ~valid).all()
        pv, gv = p[valid], got[valid]
        assert (gv >= pv).all() and (gv <= 1).all()
        assert (gv[:, None] <= gv[None, :])[pv[:, None] <= pv[None, :]].all()  # monotone in p
        # Holm's step-down test: walk up the sorted p, reject while p_(i) <= alpha / (m - i + 1)
        alpha, ordered = 0.05 * math.pi / 3, np.sort(pv)  # never k * a rounded p
        passed = ordered <= alpha / (len(pv) - np.arange(len(pv)))
        n_rejected = len(pv) if passed.all() else int(np.argmin(passed))
        assert int((gv <= alpha).sum()) == n_rejected


def test_holm_adjust_rejects_bad_input() -> None:
    with pytest.raises(ValueError, match="1-D"):
        stats.holm_adjust(np.full((2, 2), 0.1))
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        stats.holm_adjust(np.array([0.1, 1.5]))
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        stats.holm_adjust(np.array([-0.1, math.nan]))


def test_stats_needs_neither_pandas_nor_torch() -> None:
    import subprocess
    import sys

    code = "import sys, camvis.results.stats; print('pandas' in sys.modules, 'torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.split() == ["False", "False"]
