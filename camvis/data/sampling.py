"""camvis2's depth-balanced choice of patch centres, one full-resolution image at a time.

This module owns which pixels may be patch centres (labelled, finite positive depth, half a
patch from the border), the candidates' log10-depth histogram (N_DEPTH_BINS bins) and the
draw itself: each candidate gets weight 1 / (count of candidates in its log-depth bin), so
every occupied depth bin carries the same mass and far, rare terrain is not swamped by the
many near pixels. camvis.data.store_build calls it while building and records the histogram
(`sampling/*`) for the sampling figure; it knows nothing about stores.
"""

from __future__ import annotations

import numpy as np

from camvis.data import raw
from camvis.errors import RawDataError

N_DEPTH_BINS = 50


def sample_centres(labels: np.ndarray, depth: np.ndarray, n: int, patch_size: int,
                   rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """camvis2's depth-balanced patch centres of one full-resolution image.

    Candidates are labelled pixels (0 or 1) with finite, positive depth whose row lies in
    [P//2, H - P//2) and column in [P//2, W - P//2). Each gets weight 1 / (candidates in its
    log10-depth bin; N_DEPTH_BINS bins over the candidates' range), so every occupied bin
    carries the same mass. n are drawn without replacement (all when there are fewer).
    Returns (h, w) int32 and each chosen centre's weight (float64), in raster order.
    """
    h, w, weights, _, _ = sample_centres_with_histogram(labels, depth, n, patch_size, rng)
    return h, w, weights


def sample_centres_with_histogram(labels: np.ndarray, depth: np.ndarray, n: int,
                                  patch_size: int, rng: np.random.Generator
                                  ) -> tuple[np.ndarray, ...]:
    """sample_centres plus the candidates' histogram (counts, log10 edges) for the figure."""
    flat = np.flatnonzero(_candidate_mask(labels, depth, patch_size))
    log_depth = np.log10(depth.ravel()[flat], dtype=np.float32)
    edges = np.histogram_bin_edges(log_depth, bins=N_DEPTH_BINS)
    # Bin indices from the edges themselves, so counts and weights agree exactly.
    bins = np.clip(np.searchsorted(edges, log_depth, side="right") - 1, 0, N_DEPTH_BINS - 1)
    del log_depth  # paper-size images have ~2e7 candidates: keep few such arrays alive
    counts = np.bincount(bins, minlength=N_DEPTH_BINS)
    if flat.size <= n:
        chosen = np.arange(flat.size)
    else:
        p = 1.0 / counts[bins]
        p /= p.sum()
        chosen = np.sort(rng.choice(flat.size, size=n, replace=False, p=p))
    hh, ww = np.divmod(flat[chosen], labels.shape[1])
    weights = 1.0 / counts[bins[chosen]]
    return hh.astype(np.int32), ww.astype(np.int32), weights, counts, edges


def _candidate_mask(labels: np.ndarray, depth: np.ndarray, patch_size: int) -> np.ndarray:
    if labels.shape != depth.shape:
        raise RawDataError(f"labels {labels.shape} and depth {depth.shape} differ in shape")
    with np.errstate(invalid="ignore"):
        mask = (labels < raw.LABEL_UNLABELLED) & np.isfinite(depth) & (depth > 0)
    half = patch_size // 2
    height, width = labels.shape
    mask[:half] = False
    mask[max(height - half, 0):] = False
    mask[:, :half] = False
    mask[:, max(width - half, 0):] = False
    return mask
