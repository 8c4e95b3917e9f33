"""Binary classification metrics of a job and their bootstrap, in numpy.

The three scores camvis2 reports for a held-out view:
- loss: mean binary cross-entropy, computed from the logits when they are given (log-sum-exp, no
  clipping: equal to torch's binary_cross_entropy_with_logits to float64 rounding), else from the
  probabilities, unclipped too (a certain wrong prediction costs inf, as it should);
- acc: camvis2's "macro accuracy", taken here as the balanced accuracy, i.e. the mean over the
  two classes of the per-class recall (TP / (TP + FN) for class 1, TN / (TN + FP) for class 0);
- f1: macro F1, the mean of the F1 score of class 1 and of class 0.
A class absent from the truth has no recall and is left out of the mean (the mean is then the
other class's recall); likewise a class with no true and no predicted sample has no F1.
Predictions are `score > THRESHOLD` on the float32 probability: a score of exactly 0.5 counts as
not visible, as in camvis2, whose `torch.round` rounds half to even (0.5 -> 0); the rule is on the
probability, not on `logit > 0`, so that camvis and camvis2 agree where float32's sigmoid rounds a
tiny positive logit to 0.5. Every score is computed from the four
confusion counts, so the single value and each bootstrap resample use the same formulas.
"""

from __future__ import annotations

from typing import Any

import numpy as np

THRESHOLD = 0.5  # visible iff score > THRESHOLD (strictly; see the module docstring)
METRICS = ("loss", "acc", "f1")
METRIC_LOW = np.array([0.0, 0.0, 0.0])
METRIC_HIGH = np.array([np.inf, 1.0, 1.0])
"""Each metric's range, in METRICS' order: an interval is never drawn past what the metric can be."""
# elements of one chunk of the (resamples, N) index matrix: 8M int32 = 32 MB (+ gathers)
CHUNK_ELEMENTS = 8_000_000


def _check(scores: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    scores = np.asarray(scores, dtype=np.float64).ravel()
    labels = np.asarray(labels).ravel()
    if scores.shape != labels.shape:
        raise ValueError(f"scores and labels differ in length: {scores.shape[0]} vs {labels.shape[0]}")
    if scores.size == 0:
        raise ValueError("no predictions to score (empty arrays)")
    return scores, labels.astype(bool)


def per_sample_bce(scores: np.ndarray, labels: np.ndarray, *, logits: bool = False) -> np.ndarray:
    """Per-sample BCE (float64) from probabilities or, with logits=True, from logits; never clipped."""
    x, y = _check(scores, labels)
    if logits:  # log-sum-exp: log(1 + e^x) - x y = max(x, 0) + log1p(e^-|x|) - x y, finite for any x
        return np.maximum(x, 0) - x * y + np.log1p(np.exp(-np.abs(x)))
    with np.errstate(divide="ignore"):  # p = 0 or 1 on the wrong side: inf, the true value
        return -np.where(y, np.log(x), np.log1p(-x))


def bce_loss(scores: np.ndarray, labels: np.ndarray, *, logits: bool = False) -> float:
    """Mean binary cross-entropy; see per_sample_bce."""
    return float(per_sample_bce(scores, labels, logits=logits).mean())


def _losses(scores: np.ndarray, labels: np.ndarray, logits: np.ndarray | None) -> np.ndarray:
    """Per-sample BCE from the logits when given (exact), else from the probabilities."""
    if logits is None:
        return per_sample_bce(scores, labels)
    if np.shape(logits) != np.shape(scores):
        raise ValueError(f"logits and scores differ in shape: {np.shape(logits)} vs {np.shape(scores)}")
    return per_sample_bce(logits, labels, logits=True)


def confusion(scores: np.ndarray, labels: np.ndarray, threshold: float = THRESHOLD) -> np.ndarray:
    """2x2 int64 confusion matrix: rows the truth (0, 1), columns the prediction (score > threshold)."""
    p, y = _check(scores, labels)
    code = 2 * y.astype(np.int64) + (p > threshold)
    return np.bincount(code, minlength=4).reshape(2, 2)


def _from_counts(tn: np.ndarray, fp: np.ndarray, fn: np.ndarray, tp: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(balanced accuracy, macro F1) from confusion counts, elementwise over resamples."""
    tn, fp, fn, tp = (np.asarray(c, dtype=np.float64) for c in (tn, fp, fn, tp))
    with np.errstate(divide="ignore", invalid="ignore"):
        recall = np.stack([tn / (tn + fp), tp / (tp + fn)])  # class 0, class 1; NaN when absent
        f1 = np.stack([2 * tn / (2 * tn + fn + fp), 2 * tp / (2 * tp + fp + fn)])
    return _nanmean2(recall), _nanmean2(f1)


def accuracy_from_counts(tn: float, fp: float, fn: float, tp: float) -> float:
    """camvis2's macro accuracy from confusion counts (training's running counts, say)."""
    return float(_from_counts(tn, fp, fn, tp)[0])


def _nanmean2(values: np.ndarray) -> np.ndarray:
    """Mean over axis 0 ignoring NaN (both NaN cannot happen with at least one sample)."""
    ok = ~np.isnan(values)
    return np.where(ok, values, 0).sum(axis=0) / ok.sum(axis=0)


def balanced_accuracy(scores: np.ndarray, labels: np.ndarray) -> float:
    """camvis2's macro accuracy: mean of the per-class recall of the two classes."""
    (tn, fp), (fn, tp) = confusion(scores, labels)
    return float(_from_counts(tn, fp, fn, tp)[0])


def macro_f1(scores: np.ndarray, labels: np.ndarray) -> float:
    """Mean of the F1 of class 1 and the F1 of class 0."""
    (tn, fp), (fn, tp) = confusion(scores, labels)
    return float(_from_counts(tn, fp, fn, tp)[1])


def scores(scores: np.ndarray, labels: np.ndarray, *, logits: np.ndarray | None = None) -> dict[str, float]:
    """{"loss", "acc", "f1"} of probabilities `scores` against 0/1 `labels`; the loss from `logits` if given."""
    (tn, fp), (fn, tp) = confusion(scores, labels)
    acc, f1 = _from_counts(tn, fp, fn, tp)
    return {"loss": float(_losses(scores, labels, logits).mean()), "acc": float(acc), "f1": float(f1)}


def bootstrap(
    scores: np.ndarray, labels: np.ndarray, n: int = 1000, seed: int = 0, *, logits: np.ndarray | None = None,
    chunk_elements: int = CHUNK_ELEMENTS,
) -> dict[str, np.ndarray]:
    """Every one of `n` seeded resamples (with replacement, size N) scored: {"loss", "acc", "f1"} -> (n,).

    The loss comes from `logits` when given, as in `scores`.
    The (n, N) index matrix is drawn in row chunks of at most `chunk_elements` entries to bound
    memory; the generator's stream is consumed row after row, so the result does not depend on the
    chunk size. Counts per resample are sums of boolean arrays along axis 1.
    """
    p, y = _check(scores, labels)
    losses = _losses(p, y, None if logits is None else np.asarray(logits).ravel())
    code = (2 * y.astype(np.uint8) + (p > THRESHOLD)).astype(np.uint8)  # 0 tn, 1 fp, 2 fn, 3 tp
    size = p.size
    rng = np.random.default_rng(seed)
    dtype = np.int32 if size < 2**31 else np.int64
    rows = max(1, chunk_elements // size)
    out = {name: np.empty(n, dtype=np.float64) for name in METRICS}
    for start in range(0, n, rows):
        stop = min(n, start + rows)
        idx = rng.integers(0, size, size=(stop - start, size), dtype=dtype)
        drawn = code[idx]
        tn, fp, fn, tp = ((drawn == k).sum(axis=1) for k in range(4))
        out["acc"][start:stop], out["f1"][start:stop] = _from_counts(tn, fp, fn, tp)
        out["loss"][start:stop] = losses[idx].mean(axis=1)
    return out


def percentile_ci(values: np.ndarray, confidence: float = 0.95, axis: int | None = None) -> tuple[Any, Any]:
    """Equal-tailed percentile interval of bootstrap values.

    axis None: over every value, as two floats; (nan, nan) when there are none.
    axis k: along axis k (e.g. 0 for (resamples, metrics)), as two float64 arrays without that
    axis; NaN where there are no values along it.
    """
    if not 0 < confidence < 1:
        raise ValueError(f"confidence must be in (0, 1), got {confidence}")
    values = np.asarray(values, dtype=np.float64)
    tail = (1 - confidence) / 2 * 100
    if axis is None:
        if values.size == 0:
            return float("nan"), float("nan")
        lo, hi = np.percentile(values, [tail, 100 - tail])
        return float(lo), float(hi)
    if values.shape[axis] == 0:
        empty = np.full(np.delete(values.shape, axis), np.nan)
        return empty, empty.copy()
    lo, hi = np.percentile(values, [tail, 100 - tail], axis=axis)
    return lo, hi
