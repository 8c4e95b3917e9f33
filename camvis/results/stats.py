"""The pure statistics of camvis-aggregate (numpy and math only: no pandas, no scipy, no torch).

Owns:
- Student's t without scipy: the regularized incomplete beta function (`betainc`, continued
  fraction by modified Lentz), the two-sided p-value (`t_two_sided_p`) and the CDF (`t_cdf`);
- the corrected resampled t-test of Nadeau & Bengio (2003) over per-fold differences
  (`corrected_t_test`);
- percentile bootstrap intervals of a mean over folds (`fold_mean_ci`) and of a paired mean
  difference (`paired_difference_ci`), vectorized over the resamples: resample r of the mean is
  the mean over folds of each fold's r-th bootstrap value;
- Holm's (1979) step-down adjustment of a family of p-values (`holm_adjust`).

Reading jobs, building tables and writing files stay in camvis.results.aggregate and camvis.results.compare.
"""

from __future__ import annotations

import math

import numpy as np

from camvis.metrics import percentile_ci

# --------------------------------------------------------------------------- Student's t without scipy


def _betacf(a: float, b: float, x: float, max_iter: int = 500, eps: float = 1e-15) -> float:
    """Continued fraction of the incomplete beta function (modified Lentz)."""
    tiny = 1e-300
    c, d = 1.0, 1.0 - (a + b) * x / (a + 1.0)
    d = 1.0 / (d if abs(d) > tiny else tiny)
    h = d
    for m in range(1, max_iter + 1):
        for numerator in (m * (b - m) * x / ((a + 2 * m - 1) * (a + 2 * m)),
                          -(a + m) * (a + b + m) * x / ((a + 2 * m) * (a + 2 * m + 1))):  # fmt: skip
            d = 1.0 + numerator * d
            d = 1.0 / (d if abs(d) > tiny else tiny)
            c = 1.0 + numerator / c
            c = c if abs(c) > tiny else tiny
            h *= d * c
        if abs(d * c - 1.0) < eps:
            break
    return h


def betainc(a: float, b: float, x: float) -> float:
    """Regularized incomplete beta I_x(a, b) for a, b > 0 and 0 <= x <= 1."""
    if x <= 0.0:
        return 0.0
    if x >= 1.0:
        return 1.0
    log_front = math.lgamma(a + b) - math.lgamma(a) - math.lgamma(b) + a * math.log(x) + b * math.log1p(-x)
    if x < (a + 1.0) / (a + b + 2.0):  # the continued fraction converges fast on this side
        return math.exp(log_front) * _betacf(a, b, x) / a
    return 1.0 - math.exp(log_front) * _betacf(b, a, 1.0 - x) / b


def t_two_sided_p(t: float, dof: float) -> float:
    """P(|T| >= |t|) for Student's T with `dof` degrees of freedom."""
    if math.isnan(t) or dof <= 0:
        return math.nan
    if math.isinf(t):
        return 0.0
    return betainc(dof / 2.0, 0.5, dof / (dof + t * t))


def t_cdf(t: float, dof: float) -> float:
    """P(T <= t) for Student's T."""
    half = t_two_sided_p(t, dof) / 2.0
    return 1.0 - half if t > 0 else half


# --------------------------------------------------------------------------- tests and intervals


def corrected_t_test(diffs: np.ndarray, test_train_ratio: float) -> tuple[float, float, int]:
    """Nadeau & Bengio (2003): t = mean(d) / sqrt((1/k + n_test/n_train) var(d)), k-1 dof.
    Returns (t, two-sided p, dof); NaN when fewer than 2 folds."""
    k = len(diffs)
    if k < 2:
        return math.nan, math.nan, max(k - 1, 0)
    mean, var = float(np.mean(diffs)), float(np.var(diffs, ddof=1))
    scale = math.sqrt((1.0 / k + test_train_ratio) * var)
    if np.all(diffs == diffs[0]):  # no spread (float var may still be ~1e-35)
        t = 0.0 if mean == 0.0 else math.copysign(math.inf, mean)
    else:
        t = mean / scale
    return t, t_two_sided_p(t, k - 1), k - 1


def fold_mean_ci(boots: np.ndarray, confidence: float) -> tuple[np.ndarray, np.ndarray]:
    """Percentile bootstrap interval of the mean over folds. boots: (folds, R, metrics), row r of
    every fold being resample r; returns (low, high), one value per metric."""
    return percentile_ci(boots.mean(axis=0), confidence, axis=0)  # (R, metrics): resample r of the mean


def paired_difference_ci(boots_a: np.ndarray, boots_b: np.ndarray, confidence: float) -> tuple[np.ndarray, np.ndarray]:
    """Percentile bootstrap interval of the mean over folds of a - b, paired resample by resample
    (fold i of a with fold i of b; resample r of both drew the same held-out patches)."""
    return fold_mean_ci(boots_a - boots_b, confidence)


# --------------------------------------------------------------------------- multiple comparisons


def holm_adjust(p_values: np.ndarray) -> np.ndarray:
    """Holm (1979) adjusted p-values of one family, in the input order: with p sorted ascending,
    p_adj_(i) = max over j <= i of min(1, (m - j + 1) p_(j)). Rejecting where p_adj <= alpha keeps the
    family-wise error rate at alpha. NaN (no test, e.g. a single fold) stays NaN and is not counted in m."""
    p = np.asarray(p_values, dtype=np.float64)
    if p.ndim != 1:
        raise ValueError(f"holm_adjust: expected a 1-D array of p-values, got shape {p.shape}")
    valid = ~np.isnan(p)
    if ((p[valid] < 0.0) | (p[valid] > 1.0)).any():
        raise ValueError(f"holm_adjust: p-values must be in [0, 1] or NaN, got {p[valid].min()} .. {p[valid].max()}")
    order = np.argsort(p[valid], kind="stable")
    m = len(order)
    steps = np.minimum(1.0, (m - np.arange(m)) * p[valid][order])  # (m - j + 1) p_(j), j 1-based
    adjusted = np.empty(m)
    adjusted[order] = np.maximum.accumulate(steps)  # the running max keeps the adjusted values monotone
    out = np.full(p.shape, np.nan)
    out[valid] = adjusted
    return out
