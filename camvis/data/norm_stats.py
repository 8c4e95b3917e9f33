"""Per-level normalization statistics of a store, accumulated one image at a time.

camvis.data.store_build feeds every level it writes (RGB uint8 images, log-depth maps with -1 for no
depth) into NormStats and stores the result as the root attributes norm_mean / norm_std
(one row per factor: R, G, B on 0..255, log10 depth). Exact integer histograms for RGB and
float64 sums for log-depth keep memory constant however many images there are.

`PerViewStats` keeps one NormStats per view, so one pass gives every leave-one-view-out fold's
statistics over its training views (norm_mean_folds / norm_std_folds): histograms and sums combine
by addition, and adding the views' sums in view order gives the all-views sums of a single
accumulator bit for bit.
"""

from __future__ import annotations

import numpy as np


class NormStats:
    """Per-level running sums: exact integer histograms for RGB, float64 sums for log-depth.

    camvis's rule: log-depth statistics over pixels with depth (the -1 sentinel left out),
    population std. Subclasses change the two (camvis.data.camvis2.Camvis2Stats)."""

    skip_sentinel = True

    @staticmethod
    def mean_std(n: int | float, s1: float, s2: float) -> tuple[float, float]:
        return _mean_std(n, s1, s2)

    def __init__(self, factors: tuple[int, ...]) -> None:
        self.factors = factors
        self.rgb = {f: np.zeros((3, 256), np.int64) for f in factors}
        self.depth = {f: [0, 0.0, 0.0] for f in factors}   # n, sum, sum of squares

    def add_rgb(self, f: int, level: np.ndarray) -> None:
        self.add_rgb_histogram(f, rgb_histogram(level))

    def add_rgb_histogram(self, f: int, hist: np.ndarray) -> None:
        """A level's rgb_histogram, made elsewhere (a parallel build's worker): integers, so any order."""
        self.rgb[f] += hist

    def add_depth(self, f: int, level: np.ndarray) -> None:
        valid = (level[level != -1.0] if self.skip_sentinel else level).astype(np.float64).ravel()
        acc = self.depth[f]
        acc[0] += valid.size
        acc[1] += float(valid.sum())
        acc[2] += float(np.square(valid).sum())

    @classmethod
    def combined(cls, parts: "list[NormStats]", factors: tuple[int, ...]) -> "NormStats":
        """The statistics of the union of `parts`' data (sums added in the parts' order)."""
        out = cls(factors)
        for part in parts:
            for f in factors:
                out.rgb[f] += part.rgb[f]
                acc, add = out.depth[f], part.depth[f]
                for k in range(3):
                    acc[k] += add[k]
        return out

    def result(self) -> tuple[np.ndarray, np.ndarray]:
        mean = np.zeros((len(self.factors), 4), np.float64)
        std = np.ones((len(self.factors), 4), np.float64)
        values = np.arange(256, dtype=np.int64)
        for k, f in enumerate(self.factors):
            for c in range(3):
                hist = self.rgb[f][c]
                # Python ints: the squared sums overflow int64 on paper-size data.
                n, s1, s2 = int(hist.sum()), int(hist @ values), int(hist @ values**2)
                mean[k, c], std[k, c] = self.mean_std(n, s1, s2)
            mean[k, 3], std[k, 3] = self.mean_std(*self.depth[f])
        return mean.astype(np.float32), std.astype(np.float32)


class PerViewStats:
    """One `kind` accumulator per view (its index in the store's views); `result` gives the
    statistics over all views and, per view v, over every view but v (fold v's training views)."""

    def __init__(self, kind: type[NormStats], factors: tuple[int, ...], n_views: int) -> None:
        self.kind, self.factors = kind, factors
        self.views = [kind(factors) for _ in range(n_views)]

    def add_rgb(self, v: int, f: int, level: np.ndarray) -> None:
        self.views[v].add_rgb(f, level)

    def add_rgb_histogram(self, v: int, f: int, hist: np.ndarray) -> None:
        self.views[v].add_rgb_histogram(f, hist)

    def add_depth(self, v: int, f: int, level: np.ndarray) -> None:
        self.views[v].add_depth(f, level)

    def result(self) -> tuple[np.ndarray, np.ndarray]:
        """(mean, std) over every view: float32 (n_factors, 4)."""
        return self.kind.combined(self.views, self.factors).result()

    def held_out(self) -> tuple[np.ndarray, np.ndarray]:
        """(mean, std) float32 (n_views, n_factors, 4); row v: over every view but v."""
        parts = [self.kind.combined([s for u, s in enumerate(self.views) if u != v], self.factors).result()
                 for v in range(len(self.views))]
        return np.stack([m for m, _ in parts]), np.stack([s for _, s in parts])


def rgb_histogram(level: np.ndarray) -> np.ndarray:
    """(3, 256) int64 counts of each channel's values of a uint8 (H, W, 3) level."""
    return np.stack([np.bincount(level[..., c].ravel(), minlength=256) for c in range(3)]).astype(np.int64)


def _mean_std(n: int | float, s1: float, s2: float) -> tuple[float, float]:
    """Population mean and std from sums; (0, 1) without data, std 1 for a constant channel."""
    if n == 0:
        return 0.0, 1.0
    mean = s1 / n
    std = float(np.sqrt(max(s2 / n - mean * mean, 0.0)))
    return mean, std if std > 0 else 1.0
