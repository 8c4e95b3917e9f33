"""Visibility in metres from patch predictions: one logistic fit per image.

Per image, the predicted probability of "visible" is modelled as a function of distance,
p(d) = sigmoid(a - b log10 d), fitted to the patch scores (soft targets) by Newton steps on the
mean cross-entropy. The predicted visibility is the distance where p falls to 0.5:
V = 10 ** (a / b), clipped to the depth range of the image's patches.

A fit is flagged (`VisibilityFit.flag`):
- "ok": the crossing lies inside the depth range and the fit explains the scores
  (`quality`, a pseudo-R², at least POOR_FIT_R2 = 0.5);
- "poor_fit": patches lie on both sides of 0.5 but the fit is poor: its quality is under
  POOR_FIT_R2, or its crossing falls outside the patches' depth range (then V is clipped to it);
- "beyond_max": every patch is predicted visible: V is reported as the farthest patch depth
  (a lower bound of the true estimate);
- "below_min": every patch is predicted non-visible: V is the nearest patch depth (an upper bound);
- "inverted": the fitted probability rises with distance (b <= 0): no estimate, V is NaN.
- "uncertain": a fit that would be "ok", but whose interval (below) spans more than a factor
  UNCERTAIN_FACTOR = 4 (high / low): the image's patches do not pin V down to within about a
  factor 2 either way. So "ok" means a good fit and a narrow interval.
So beyond_max and below_min mean exactly "all patches on one side of 0.5".
A small ridge penalty on the slope keeps it finite when the scores separate perfectly in
distance (the expected case for a good model), so the crossing stays in the gap.

The interval (`low_m`, `high_m`, level CONFIDENCE = 0.9): a percentile bootstrap over the image's
patches, refitting the crossing on each of N_BOOT = 200 resamples (all resamples at once: batched
Newton steps on per-patch counts, no loop over patches). Resamples without a crossing (slope <= 0)
count as unbounded on both sides. It measures how well the patches determine the crossing, given
the model's scores; a model's bias (scores shifted in distance) is not in it, which is why the
aggregate reports the intervals' empirical coverage of the true V on held-out images. beyond_max
gives [farthest patch, inf), below_min (0, nearest patch], inverted (nan, nan).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

import numpy as np

RIDGE = 1e-5  # on the slope b (per log10 metre), relative to the mean cross-entropy
RIDGE_INTERCEPT = 1e-8  # keeps the intercept finite when every score is 0 or 1
MAX_ITER = 50
TOL = 1e-10
N_BOOT = 200  # patch resamples per image for its interval
CONFIDENCE = 0.9  # level of the per-image interval
UNCERTAIN_FACTOR = 4.0  # an interval with high / low above this flags an otherwise ok fit "uncertain"
INTERVAL_COLUMNS = ("visibility_low_m", "visibility_high_m")
"""The interval's columns (interval_columns): in visibility.csv and camvis-predict's rows."""
CSV_COLUMNS = ["image", "view", "predicted_visibility_m", *INTERVAL_COLUMNS,
               "true_visibility_m", "abs_log10_error", "signed_log10_error", "in_interval", "flag",
               "fit_quality", "n_patches"]
"""visibility.csv's columns, one row per held-out image (visibility_table)."""


@dataclass(frozen=True)
class VisibilityFit:
    a: float
    b: float
    visibility_m: float
    flag: str
    depth_min: float
    depth_max: float
    n: int
    quality: float = math.nan  # fit_quality: pseudo-R² of the fit against a constant
    low_m: float = math.nan  # the interval of visibility_m (module doc), metres
    high_m: float = math.nan

    def probability(self, depth: np.ndarray) -> np.ndarray:
        """The fitted p(d) at `depth` metres."""
        return _sigmoid(self.a - self.b * np.log10(depth))


def _sigmoid(z: np.ndarray) -> np.ndarray:
    return 0.5 * (1 + np.tanh(0.5 * z))  # stable for large |z|


def _objective(c: float, b: float, xc: np.ndarray, s: np.ndarray) -> float:
    z = c - b * xc
    # mean cross-entropy with soft targets s: softplus(z) - s z
    ce = np.logaddexp(0, z) - s * z
    return float(ce.mean() + 0.5 * RIDGE * b * b + 0.5 * RIDGE_INTERCEPT * c * c)


def fit_logistic(log10_depth: np.ndarray, scores: np.ndarray) -> tuple[float, float]:
    """(a, b) of p = sigmoid(a - b log10 d) fitted to `scores` by damped Newton steps."""
    x = np.asarray(log10_depth, dtype=np.float64)
    s = np.clip(np.asarray(scores, dtype=np.float64), 0, 1)
    centre = float(x.mean())
    xc = x - centre  # centred so the intercept and slope decouple
    theta = np.zeros(2)  # (c, b) with z = c - b xc
    design = np.stack([np.ones_like(xc), -xc], axis=1)
    ridge = np.diag([RIDGE_INTERCEPT, RIDGE])
    value = _objective(*theta, xc, s)
    for _ in range(MAX_ITER):
        p = _sigmoid(design @ theta)
        grad = design.T @ (p - s) / x.size + ridge @ theta
        hess = (design * (p * (1 - p))[:, None]).T @ design / x.size + ridge
        step = np.linalg.solve(hess, grad)
        t = 1.0
        while t > 1e-6:  # backtracking: Newton may overshoot on nearly separable data
            trial = theta - t * step
            trial_value = _objective(*trial, xc, s)
            if trial_value <= value:
                break
            t /= 2
        else:
            break
        converged = value - trial_value < TOL
        theta, value = trial, trial_value
        if converged:
            break
    c, b = theta
    return float(c + b * centre), float(b)


def estimate(depth: np.ndarray, scores: np.ndarray, threshold: float = 0.5, n_boot: int = N_BOOT,
             seed: int = 0) -> VisibilityFit:
    """The visibility of one image from its patches' depths (metres) and scores, with its interval
    (`n_boot` patch resamples drawn with `seed`; 0 resamples: no interval, NaN)."""
    depth = np.asarray(depth, dtype=np.float64)
    scores = np.asarray(scores, dtype=np.float64)
    if depth.size == 0:
        raise ValueError("no patches to estimate a visibility from")
    lo, hi = float(depth.min()), float(depth.max())
    a, b = fit_logistic(np.log10(depth), scores)
    quality = fit_quality(VisibilityFit(a, b, math.nan, "", lo, hi, depth.size), depth, scores)
    visible = scores >= threshold
    if visible.all():
        return VisibilityFit(a, b, hi, "beyond_max", lo, hi, depth.size, quality, hi, math.inf)
    if not visible.any():
        return VisibilityFit(a, b, lo, "below_min", lo, hi, depth.size, quality, 0.0, lo)
    if b <= 0:
        return VisibilityFit(a, b, math.nan, "inverted", lo, hi, depth.size, quality)
    low, high = crossing_interval(depth, scores, (a, b), n_boot, seed)
    log_v = a / b
    if not math.log10(lo) < log_v < math.log10(hi):  # scores on both sides, yet no crossing between
        return VisibilityFit(a, b, min(max(10**log_v, lo), hi), "poor_fit", lo, hi, depth.size, quality, low, high)
    flag = flag_quality("ok", quality)
    if flag == "ok" and not high <= UNCERTAIN_FACTOR * low:  # NaN bounds are uncertain too
        flag = "uncertain"
    return VisibilityFit(a, b, 10**log_v, flag, lo, hi, depth.size, quality, low, high)


def crossing_interval(depth: np.ndarray, scores: np.ndarray, start: tuple[float, float], n_boot: int = N_BOOT,
                      seed: int = 0, confidence: float = CONFIDENCE) -> tuple[float, float]:
    """Percentile bootstrap interval (metres) of the crossing 10 ** (a / b): `n_boot` resamples of the
    patches, each refitted from `start` (the point fit's (a, b)). Resamples without a crossing (b <= 0)
    count as below the lower and above the upper bound."""
    if n_boot < 1:
        return math.nan, math.nan
    x = np.log10(np.asarray(depth, dtype=np.float64))
    rng = np.random.default_rng(seed)
    n = x.size
    picks = rng.integers(0, n, (n_boot, n)) + n * np.arange(n_boot)[:, None]
    counts = np.bincount(picks.ravel(), minlength=n_boot * n).reshape(n_boot, n).astype(np.float64)
    a, b = fit_logistic_weighted(x, scores, counts, start)
    with np.errstate(divide="ignore", invalid="ignore"):
        log_v = np.where(b > 0, a / b, np.nan)
    tail = (1 - confidence) / 2
    low = np.quantile(np.where(np.isnan(log_v), -np.inf, log_v), tail, method="lower")
    high = np.quantile(np.where(np.isnan(log_v), np.inf, log_v), 1 - tail, method="higher")
    return float(10.0**low), float(10.0**high)


def fit_logistic_weighted(x: np.ndarray, scores: np.ndarray, weights: np.ndarray,
                          start: tuple[float, float]) -> tuple[np.ndarray, np.ndarray]:
    """fit_logistic for many weightings of the same patches at once: `weights` (B, n) patch counts ->
    (a, b), each (B,). Damped Newton steps from `start`, every fit's step halved until its objective
    does not rise (fit_logistic's backtracking, vectorised over the fits)."""
    s = np.clip(np.asarray(scores, dtype=np.float64), 0, 1)
    w = weights / weights.sum(axis=1, keepdims=True)  # (B, n): a weighted mean per fit
    centre = w @ x  # (B,)
    xc = x[None, :] - centre[:, None]
    theta = np.stack([start[0] - start[1] * centre, np.full(len(w), start[1])], axis=1)  # (c, b) per fit

    def objective(th: np.ndarray) -> np.ndarray:
        z = th[:, :1] - th[:, 1:] * xc
        # logaddexp(0, z), 4x faster; |z| capped at 50 (exp(-50) is below float64's eps next to 1) so
        # that exp never returns a subnormal (50x slower on x86): separable scores give |z| in the hundreds
        softplus = np.maximum(z, 0) + np.log1p(np.exp(-np.minimum(np.abs(z), 50.0)))
        ce = (w * (softplus - s * z)).sum(axis=1)
        return ce + 0.5 * RIDGE * th[:, 1] ** 2 + 0.5 * RIDGE_INTERCEPT * th[:, 0] ** 2

    value = objective(theta)
    active = np.ones(len(w), dtype=bool)
    for _ in range(MAX_ITER):
        p = _sigmoid(theta[:, :1] - theta[:, 1:] * xc)
        r, h = w * (p - s), w * p * (1 - p)
        grad = np.stack([r.sum(1) + RIDGE_INTERCEPT * theta[:, 0], -(r * xc).sum(1) + RIDGE * theta[:, 1]], axis=1)
        hcc, hcb, hbb = h.sum(1) + RIDGE_INTERCEPT, -(h * xc).sum(1), (h * xc * xc).sum(1) + RIDGE
        det = hcc * hbb - hcb * hcb
        step = np.stack([hbb * grad[:, 0] - hcb * grad[:, 1], hcc * grad[:, 1] - hcb * grad[:, 0]], axis=1) / det[:, None]
        t = np.where(active, 1.0, 0.0)
        while True:  # backtracking, per fit, down to a step of 1e-6 as fit_logistic's
            trial = theta - t[:, None] * step
            trial_value = objective(trial)
            worse = (trial_value > value) & (t > 1e-6)
            if not worse.any():
                break
            t = np.where(worse, t / 2, t)
        accepted = active & ~(trial_value > value)
        gain = np.where(accepted, value - trial_value, 0.0)
        theta = np.where(accepted[:, None], trial, theta)
        value = np.where(accepted, trial_value, value)
        active = accepted & (gain >= TOL)
        if not active.any():
            break
    c, b = theta[:, 0], theta[:, 1]
    return c + b * centre, b


def estimate_images(image: np.ndarray, depth: np.ndarray, scores: np.ndarray) -> dict[int, VisibilityFit]:
    """One fit per image index present in `image` (images are few: a loop is fine); each image's
    interval resamples with its index as the seed (the same patches give the same interval)."""
    image = np.asarray(image)
    order = np.argsort(image, kind="stable")
    ids, starts = np.unique(image[order], return_index=True)
    groups = np.split(order, starts[1:])
    return {int(i): estimate(depth[g], scores[g], seed=int(i)) for i, g in zip(ids, groups)}


def signed_log10_error(predicted: float, true: float | None) -> float:
    """log10 V_pred - log10 V_true (negative: underestimated); NaN when either is unknown."""
    if true is None or not (predicted > 0 and true > 0):
        return math.nan
    return math.log10(predicted) - math.log10(true)


def abs_log10_error(predicted: float, true: float | None) -> float:
    """|log10 V_pred - log10 V_true|; NaN when either is unknown."""
    return abs(signed_log10_error(predicted, true))


def in_interval(fit: VisibilityFit, true: float | None) -> float:
    """1.0 when the true V lies inside the fit's interval, 0.0 when not, NaN when either is unknown."""
    if true is None or not true > 0 or math.isnan(fit.low_m) or math.isnan(fit.high_m):
        return math.nan
    return float(fit.low_m <= true <= fit.high_m)


def calibration_quantile(abs_errors: np.ndarray, confidence: float = CONFIDENCE) -> float:
    """Split-conformal model-error term: the ceil((n + 1) confidence)-th smallest of n held-out
    |log10 V_pred - log10 V_true| (other images, other views). For a new image exchangeable with those,
    its true V lies within a factor 10 ** q of its prediction with probability >= `confidence`; inf when
    n is too small for that (n < confidence / (1 - confidence): 9 images at 90 %)."""
    e = np.sort(np.asarray(abs_errors, dtype=np.float64)[np.isfinite(abs_errors)])
    k = math.ceil((e.size + 1) * confidence)
    return float(e[k - 1]) if 1 <= k <= e.size else math.inf


def calibrated(predicted: np.ndarray, low: np.ndarray, high: np.ndarray,
               q: float | np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The per-image interval that counts the model's error: the hull of the patch bootstrap interval
    [low, high] and [V / 10 ** q, V * 10 ** q] (calibration_quantile). No estimate (NaN V): (NaN, NaN);
    a one-sided interval (beyond_max, below_min) keeps its open side."""
    v, lo, hi = (np.asarray(x, dtype=np.float64) for x in (predicted, low, high))
    factor = np.power(10.0, np.asarray(q, dtype=np.float64))
    with np.errstate(invalid="ignore", divide="ignore"):
        new_lo = np.where(np.isnan(v) | np.isnan(lo), np.nan, np.fmin(lo, v / factor))
        new_hi = np.where(np.isnan(v) | np.isnan(hi), np.nan, np.fmax(hi, v * factor))
    return new_lo, new_hi


def interval_columns(fit: VisibilityFit | None) -> dict[str, float]:
    """The interval's columns of a prediction row (camvis-predict's rows, visibility.csv)."""
    return dict(zip(INTERVAL_COLUMNS, (math.nan, math.nan) if fit is None else (fit.low_m, fit.high_m)))


def coverage(low: np.ndarray, high: np.ndarray, true: np.ndarray) -> tuple[float, int]:
    """The share of true visibilities inside their intervals, and over how many images (those with
    a truth and an interval)."""
    low, high, true = (np.asarray(v, dtype=np.float64) for v in (low, high, true))
    known = np.isfinite(true) & (true > 0) & ~np.isnan(low) & ~np.isnan(high)
    n = int(known.sum())
    inside = (low[known] <= true[known]) & (true[known] <= high[known])
    return (float(inside.mean()) if n else math.nan), n


def visibility_table(
    fits: Mapping[int, VisibilityFit],
    image_names: tuple[str, ...] | list[str],
    image_views: Mapping[int, str],
    true_visibility: Mapping[str, float] | None,
) -> list[dict[str, Any]]:
    """Rows of visibility.csv (CSV_COLUMNS; NaN where unknown)."""
    rows = []
    for i, fit in sorted(fits.items()):
        name = image_names[i]
        true = (true_visibility or {}).get(name)
        rows.append({
            "image": name,
            "view": image_views[i],
            "predicted_visibility_m": fit.visibility_m,
            **interval_columns(fit),
            "true_visibility_m": math.nan if true is None else float(true),
            "abs_log10_error": abs_log10_error(fit.visibility_m, true),
            "signed_log10_error": signed_log10_error(fit.visibility_m, true),
            "in_interval": in_interval(fit, true),
            "flag": fit.flag,
            "fit_quality": fit.quality,
            "n_patches": fit.n,
        })
    return rows


def image_summary(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """scores.json's "visibility": median |log10 error| and median signed log10 error (the bias) over
    images with a truth and an estimate; the share of true V inside the per-image intervals."""
    errors = np.array([r["abs_log10_error"] for r in rows], dtype=np.float64)
    signed = np.array([r.get("signed_log10_error", math.nan) for r in rows], dtype=np.float64)
    inside = np.array([r.get("in_interval", math.nan) for r in rows], dtype=np.float64)
    errors, signed, inside = errors[np.isfinite(errors)], signed[np.isfinite(signed)], inside[np.isfinite(inside)]
    return {
        "median_abs_log10_error": float(np.median(errors)) if errors.size else None,
        "median_signed_log10_error": float(np.median(signed)) if signed.size else None,
        "interval_coverage": float(inside.mean()) if inside.size else None,
        "n_uncertain": sum(r["flag"] == "uncertain" for r in rows),
        "n_images": len(rows),
        "n_scored": int(errors.size),
        "flagged": sum(r["flag"] != "ok" for r in rows),
    }


def true_visibility(images: tuple[str, ...] | list[str], attrs: Mapping[str, Any]) -> dict[str, float] | None:
    """True V (metres) per image stem: the store's `visibility_m` attribute (aligned with its
    images, recorded at build time), else the raw dir's visibility.csv named in the provenance;
    None when neither is available."""
    recorded = attrs.get("visibility_m")
    if recorded is not None and any(v is not None for v in recorded):
        return {name: float(v) for name, v in zip(images, recorded) if v is not None}
    raw_dir = (attrs.get("provenance") or {}).get("raw_dir")
    if not raw_dir or not Path(raw_dir).is_dir():
        return None
    from camvis.data.raw import read_visibility  # only when needed: raw reading is upstream

    return read_visibility(raw_dir)


# A fit whose quality (pseudo-R², below) is under this explains less than half of the scores'
# deviance from a constant: its crossing is not trusted, and an "ok" fit is flagged "poor_fit".
POOR_FIT_R2 = 0.5


def fit_quality(fit: VisibilityFit, depth: np.ndarray, scores: np.ndarray) -> float:
    """Pseudo-R² of the fit: 1 - D_fit / D_null, deviances (mean cross-entropy in excess of the
    scores' own entropy) of p(d) and of a constant p = mean score. 1: the logistic explains the
    scores; 0: no better than a constant; NaN when the scores are constant (nothing to explain)."""
    s = np.clip(np.asarray(scores, dtype=np.float64), 0, 1)
    p_fit = np.clip(fit.probability(np.asarray(depth, dtype=np.float64)), 1e-12, 1 - 1e-12)
    p_null = np.clip(s.mean(), 1e-12, 1 - 1e-12)
    floor = _cross_entropy(s, np.clip(s, 1e-12, 1 - 1e-12))
    d_null = _cross_entropy(s, p_null) - floor
    if d_null <= 1e-12:
        return math.nan
    return float(1 - (_cross_entropy(s, p_fit) - floor) / d_null)


def _cross_entropy(s: np.ndarray, p: np.ndarray | float) -> float:
    return float(np.mean(-(s * np.log(p) + (1 - s) * np.log1p(-p))))


def flag_quality(flag: str, quality: float) -> str:
    """An "ok" fit of quality under POOR_FIT_R2 becomes "poor_fit"; other flags stand."""
    return "poor_fit" if flag == "ok" and quality < POOR_FIT_R2 else flag
