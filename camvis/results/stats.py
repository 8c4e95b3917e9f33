"""The pure statistics of camvis-aggregate (numpy and scipy.special only: no pandas, no torch).

Owns:
- Student's t (`t_two_sided_p`, `t_cdf`, `t_quantile`: scipy.special's stdtr/stdtrit, which import in a
  tenth of a second where scipy.stats takes half a second);
- the corrected resampled t-test of Nadeau & Bengio (2003) over per-fold differences
  (`corrected_t_test`) and the interval that goes with it (`corrected_t_interval`): the same
  scale sqrt((1/k + n_test/n_train) var) and k-1 dof, so the interval excludes 0 exactly when p < 1 - level;
- the headline interval of a mean over folds (`headline_interval`): the corrected t interval over the
  folds' scores, widened where needed to the test-images-only bootstrap interval;
- percentile bootstrap intervals over test images only, given the trained models: of a mean over folds
  (`fold_mean_ci`) and of a paired mean difference (`paired_difference_ci`), vectorized over resamples;
- the correlated Bayesian t-test of Corani & Benavoli (2015), as baycomp's CorrelatedTTest
  (`bayes_probabilities`, `posterior_t`): P(a better), P(practically equivalent), P(b better);
- Holm's (1979) step-down adjustment of a family of p-values (`holm_adjust`).

Reading jobs, building tables and writing files stay in camvis.results.aggregate and camvis.results.compare.
"""

from __future__ import annotations

import math

import numpy as np
from scipy import special

from camvis.metrics import percentile_ci

# --------------------------------------------------------------------------- Student's t


def t_two_sided_p(t: float, dof: float) -> float:
    """P(|T| >= |t|) for Student's T with `dof` degrees of freedom."""
    if math.isnan(t) or dof <= 0:
        return math.nan
    return float(2.0 * special.stdtr(dof, -abs(t)))


def t_cdf(t: float, dof: float) -> float:
    """P(T <= t) for Student's T."""
    return float(special.stdtr(dof, t))


def t_quantile(q: float, dof: float) -> float:
    """The q-quantile of Student's T (NaN for dof < 1)."""
    return float(special.stdtrit(dof, q)) if dof >= 1 else math.nan


# --------------------------------------------------------------------------- tests and intervals


def corrected_scale(values: np.ndarray, test_train_ratio: float | np.ndarray) -> np.ndarray:
    """Nadeau & Bengio's standard error of a mean over k folds, sqrt((1/k + n_test/n_train) var), along
    axis 0 (values: (k, ...)); the 1/k of a plain t-test assumes independent folds, while folds whose
    training sets overlap are correlated (rho = n_test / n_total), which n_test/n_train accounts for.
    test_train_ratio: a number, or an array broadcasting against values.shape[1:]."""
    k = len(values)
    if k < 2:
        return np.full(values.shape[1:], np.nan)
    scale = np.sqrt((1.0 / k + test_train_ratio) * np.var(values, axis=0, ddof=1))
    return np.where(np.ptp(values, axis=0) == 0, 0.0, scale)  # equal values: exactly 0 (var may be ~1e-35)


def corrected_t_test(diffs: np.ndarray, test_train_ratio: float) -> tuple[float, float, int]:
    """Nadeau & Bengio (2003): t = mean(d) / sqrt((1/k + n_test/n_train) var(d)), k-1 dof.
    Returns (t, two-sided p, dof); NaN when fewer than 2 folds."""
    t, p, dof = corrected_t(np.asarray(diffs, dtype=np.float64), test_train_ratio)
    return float(t), float(p), dof


def corrected_t(diffs: np.ndarray, test_train_ratio: float | np.ndarray) -> tuple[np.ndarray, np.ndarray, int]:
    """corrected_t_test along axis 0 of diffs (k, ...): (t, two-sided p, dof). No spread: t = +-inf (or 0
    when every difference is 0); NaN below 2 folds."""
    k = len(diffs)
    if k < 2:
        nan = np.full(diffs.shape[1:], np.nan)
        return nan, nan.copy(), max(k - 1, 0)
    mean = diffs.mean(axis=0)
    scale = corrected_scale(diffs, test_train_ratio)
    with np.errstate(divide="ignore", invalid="ignore"):
        t = np.where(scale == 0, np.where(mean == 0, 0.0, np.copysign(np.inf, mean)), mean / scale)
    return t, 2.0 * special.stdtr(k - 1, -np.abs(t)), k - 1


def corrected_t_interval(values: np.ndarray, test_train_ratio: float, confidence: float) -> tuple[np.ndarray, np.ndarray]:
    """mean +- t_{k-1, (1+level)/2} x corrected_scale, along axis 0 (NaN below 2 folds). For paired
    differences it excludes 0 exactly when corrected_t_test's p < 1 - confidence (same scale, same dof)."""
    k = len(values)
    mean = values.mean(axis=0) if k else np.full(values.shape[1:], np.nan)
    if k < 2:
        nan = np.full(values.shape[1:], np.nan)
        return nan, nan.copy()
    half = t_quantile((1.0 + confidence) / 2.0, k - 1) * corrected_scale(values, test_train_ratio)
    return mean - half, mean + half


def headline_interval(values: np.ndarray, boots: np.ndarray, test_train_ratio: float,
                      confidence: float) -> tuple[np.ndarray, np.ndarray]:
    """The headline interval of a mean over folds, per metric: the corrected t interval over the folds'
    scores (values: (k, metrics); it counts the variation across folds and training runs, and the test
    noise inside each fold's score), widened where it is narrower to the test-only bootstrap interval
    (boots: (k, R, metrics)): few folds can agree by chance, while no fewer folds make the test images
    less noisy. Folds all equal: the test-only interval; one fold: the test-only interval (no spread to see)."""
    t_low, t_high = corrected_t_interval(values, test_train_ratio, confidence)
    b_low, b_high = fold_mean_ci(boots, confidence)
    return np.fmin(t_low, b_low), np.fmax(t_high, b_high)


def fold_mean_ci(boots: np.ndarray, confidence: float) -> tuple[np.ndarray, np.ndarray]:
    """Percentile bootstrap interval of the mean over folds. boots: (folds, R, metrics), row r of
    every fold being resample r; returns (low, high), one value per metric."""
    return percentile_ci(boots.mean(axis=0), confidence, axis=0)  # (R, metrics): resample r of the mean


def paired_difference_ci(boots_a: np.ndarray, boots_b: np.ndarray, confidence: float) -> tuple[np.ndarray, np.ndarray]:
    """Percentile bootstrap interval of the mean over folds of a - b, paired resample by resample
    (fold i of a with fold i of b; resample r of both drew the same held-out patches)."""
    return fold_mean_ci(boots_a - boots_b, confidence)


# --------------------------------------------------------------------------- Bayesian comparison


def posterior_t(diffs: np.ndarray, test_train_ratio: float) -> tuple[np.ndarray, np.ndarray, int]:
    """The correlated Bayesian t-test's posterior of the mean difference (Corani & Benavoli 2015; baycomp's
    CorrelatedTTest): Student's t with location mean(d), scale corrected_scale(d) and k-1 dof, along axis 0.
    baycomp's rho = 1/n_folds is test_train_ratio = rho / (1 - rho) here (1/(K-1) for leave-one-out folds)."""
    return diffs.mean(axis=0), corrected_scale(diffs, test_train_ratio), len(diffs) - 1


def bayes_probabilities(diffs: np.ndarray, test_train_ratio: float, rope: np.ndarray,
                        higher_is_better: np.ndarray) -> np.ndarray:
    """(P(a better), P(practically equivalent), P(b better)) per metric from per-fold differences a - b
    (diffs: (k, metrics)), a difference within +-rope counting as equivalent; rows (3, metrics).
    Zero spread: all the mass at the mean (baycomp's rule); below 2 folds: NaN."""
    mean, scale, dof = posterior_t(diffs, test_train_ratio)
    rope = np.broadcast_to(np.asarray(rope, dtype=np.float64), mean.shape)
    if dof < 1:
        return np.full((3, *mean.shape), np.nan)
    with np.errstate(divide="ignore", invalid="ignore"):
        below = special.stdtr(dof, (-rope - mean) / scale)  # P(d < -rope)
        above = special.stdtr(dof, (mean - rope) / scale)  # P(d > rope)
    point = scale == 0
    below = np.where(point, (mean < -rope).astype(float), below)
    above = np.where(point, (mean > rope).astype(float), above)
    equivalent = np.clip(1.0 - below - above, 0.0, 1.0)
    better_a = np.where(higher_is_better, above, below)
    better_b = np.where(higher_is_better, below, above)
    return np.stack([better_a, equivalent, better_b])


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
