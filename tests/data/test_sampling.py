"""camvis2's depth-balanced patch sampling: candidates, determinism, flattened depth."""

from __future__ import annotations

import numpy as np

from camvis.data import raw
from camvis.data import sampling


def _scene(height: int = 80, width: int = 120) -> tuple[np.ndarray, np.ndarray]:
    """Depth growing up the image, most pixels near: like a camera looking at the ground."""
    rows = np.linspace(1.0, 0.0, height)[:, None] * np.ones((1, width))
    depth = (10.0 ** (1.0 + 4.0 * rows**4)).astype(np.float32)
    depth[:8] = np.nan                               # sky
    labels = np.where(depth < 3000, raw.LABEL_VISIBLE, raw.LABEL_NONVISIBLE).astype(np.uint8)
    labels[:, 50:60] = raw.LABEL_UNLABELLED          # a band the annotator left out
    labels[np.isnan(depth)] = raw.LABEL_UNLABELLED
    return labels, depth


def test_sample_centres_never_picks_excluded_pixels() -> None:
    labels, depth = _scene()
    labels[20:30, 20:30] = raw.LABEL_VISIBLE
    depth[20:30, 20:30] = np.nan                     # labelled but no terrain: excluded too
    h, w, weights = sampling.sample_centres(labels, depth, 10_000, 16, np.random.default_rng(0))
    assert h.dtype == np.int32 and w.dtype == np.int32
    assert np.all(labels[h, w] < raw.LABEL_UNLABELLED)
    assert np.all(np.isfinite(depth[h, w]))
    assert h.min() >= 8 and h.max() < 80 - 8 and w.min() >= 8 and w.max() < 120 - 8
    # Fewer candidates than asked: every candidate, once.
    expected = (labels < 2) & np.isfinite(depth)
    expected[:8], expected[-8:], expected[:, :8], expected[:, -8:] = False, False, False, False
    assert h.size == expected.sum() == np.unique(h * 120 + w).size
    assert np.all(weights > 0)


def test_sample_centres_draws_n_distinct_deterministically() -> None:
    labels, depth = _scene()
    a = sampling.sample_centres(labels, depth, 100, 16, np.random.default_rng(7))
    b = sampling.sample_centres(labels, depth, 100, 16, np.random.default_rng(7))
    c = sampling.sample_centres(labels, depth, 100, 16, np.random.default_rng(8))
    assert a[0].size == 100 and np.unique(a[0] * 120 + a[1]).size == 100
    assert all(np.array_equal(x, y) for x, y in zip(a, b))
    assert not np.array_equal(a[0] * 120 + a[1], c[0] * 120 + c[1])


def _entropy(log_depth: np.ndarray, edges: np.ndarray) -> float:
    p = np.histogram(log_depth, edges)[0].astype(float)
    p = p[p > 0] / p.sum()
    return float(-(p * np.log(p)).sum())


def test_sample_centres_flattens_the_depth_distribution() -> None:
    labels, depth = _scene(400, 300)
    h, w, weights = sampling.sample_centres(labels, depth, 500, 16, np.random.default_rng(1))
    candidates = (labels < 2) & np.isfinite(depth)
    all_log = np.log10(depth[candidates])
    edges = np.linspace(all_log.min(), all_log.max(), 11)
    before, after = _entropy(all_log, edges), _entropy(np.log10(depth[h, w]), edges)
    assert after > before + 0.3, (before, after)
    # Rare (far) depths get the larger weights.
    assert weights[np.argmax(depth[h, w])] > weights[np.argmin(depth[h, w])]
