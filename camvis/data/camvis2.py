"""camvis2's preprocessing rules, for stores built with `preprocessing: camvis2`.

camvis's own rules (`exact`, the default) are in store_build and sampling; these reproduce what
camvis2's `data/make_dataset.py` and `model/dataset.py` compute, rule for rule (checked against
fixtures made by camvis2's code, tests/data/camvis2/):

- level size `round(H / f)` (numpy's round: half to even), not H // f;
- RGB: OpenCV's `cv2.resize(..., INTER_LANCZOS4)` (no anti-aliasing; OpenCV itself, because its
  fixed-point Lanczos is what camvis2 computed: the optional extra `camvis[camvis2]`);
- depth: natural log, NaN -> -1 (numpy's nan_to_num), `cv2.resize(..., INTER_NEAREST)`;
- statistics: per level, mean and sample std (n - 1) of RGB / 255 over every image and of the depth
  levels over every view's map, the -1 sentinel included; stored on camvis's 0..255 RGB scale;
- sampling: one numpy RandomState(seed) over the images in name order, weights 1 / count of the
  centre's bin of round(ln d / ln 1e5 * 255) among valid pixels (labelled, depth not NaN, P // 2
  from the border as camvis2 slices it), centres returned in raster order;
- crop centre int(round(h / f)) (half to even): camvis.job.batches.level_centre.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from camvis.data.norm_stats import NormStats
from camvis.errors import CamvisError, StoreError

EXACT, CAMVIS2 = "exact", "camvis2"
MODES = (EXACT, CAMVIS2)


class MissingExtra(CamvisError):
    """camvis2 preprocessing asked for without OpenCV installed."""


def check_mode(mode: str) -> str:
    """`mode` if it is a mode this camvis can build (camvis2: OpenCV installed), else an error."""
    if mode not in MODES:
        raise StoreError(f"preprocessing must be one of {', '.join(MODES)}, got {mode!r}")
    if mode == CAMVIS2:
        _cv2()
    return mode


def level_shape(shape: tuple[int, int] | list[int], f: int, mode: str = EXACT) -> tuple[int, int]:
    """(rows, columns) of level f: H // f (exact) or round(H / f), half to even (camvis2)."""
    h, w = int(shape[0]), int(shape[1])
    if mode == CAMVIS2:
        return int(np.round(h / f)), int(np.round(w / f))
    return h // f, w // f


def _cv2() -> Any:
    try:
        import cv2
    except ImportError as e:
        raise MissingExtra("preprocessing camvis2 needs OpenCV (camvis2's Lanczos-4 resize): "
                           "pip install 'camvis[camvis2]' (opencv-python-headless)") from e
    return cv2


def rgb_level(rgb: np.ndarray, f: int) -> np.ndarray:
    """Level f of an RGB uint8 (H, W, 3) image as camvis2 makes it: uint8 (round(H/f), round(W/f), 3)."""
    cv2 = _cv2()
    h, w = level_shape(rgb.shape, f, CAMVIS2)
    return cv2.resize(np.ascontiguousarray(rgb), (w, h), interpolation=cv2.INTER_LANCZOS4)


def depth_level(depth: np.ndarray, f: int) -> np.ndarray:
    """Level f of a depth map (H, W) in metres: ln depth, NaN -> -1, nearest resize; float32."""
    cv2 = _cv2()
    h, w = level_shape(depth.shape, f, CAMVIS2)
    with np.errstate(invalid="ignore", divide="ignore"):
        log = np.nan_to_num(np.log(depth), nan=-1)
    return cv2.resize(log, (w, h), interpolation=cv2.INTER_NEAREST).astype(np.float32)


def sample_centres(labels: np.ndarray, depth: np.ndarray, n: int, patch_size: int,
                   rng: np.random.RandomState) -> tuple[np.ndarray, np.ndarray]:
    """camvis2's sample_patches: n centres (h, w) int32 in raster order, drawn from `rng`.

    `rng` is one RandomState shared by the images in name order (camvis2 seeds numpy once);
    fewer than n valid pixels is an error, as it is in camvis2.
    """
    valid = np.ones(labels.shape, dtype=bool)
    valid[labels == 2] = False
    valid[np.isnan(depth)] = False
    valid[:patch_size // 2, :] = False  # camvis2's slices, -P//2 included, for odd P too
    valid[-patch_size // 2:, :] = False
    valid[:, :patch_size // 2] = False
    valid[:, -patch_size // 2:] = False
    if int(valid.sum()) < n:
        raise StoreError(f"preprocessing camvis2: {int(valid.sum())} valid patch centres, fewer than "
                         f"patches_per_image={n} (camvis2 draws exactly that many)")
    with np.errstate(invalid="ignore", divide="ignore"):
        adjusted = (np.log(depth) / np.log(100000) * 255).round()
    adjusted[~valid] = adjusted[valid].max() + 1
    adjusted = adjusted.astype("int")
    values, counts = np.unique(adjusted, return_counts=True)
    scarcity = np.zeros(values.max() + 1)
    scarcity[values] = 1 / counts
    weights = scarcity[adjusted]
    weights[~valid] = 0
    weights /= weights.sum()
    chosen = rng.choice(np.arange(adjusted.size), n, replace=False, p=weights.ravel())
    hh, ww = np.divmod(np.sort(chosen), labels.shape[1])
    return hh.astype(np.int32), ww.astype(np.int32)


class Camvis2Stats(NormStats):
    """camvis2's normalization statistics: the -1 no-depth sentinel counts in the log-depth
    statistics, and the std is the sample std (n - 1), as torch's mean / std of the stacked
    levels; RGB on camvis's 0..255 scale."""

    skip_sentinel = False

    @staticmethod
    def mean_std(n: int | float, s1: float, s2: float) -> tuple[float, float]:
        return _sample_mean_std(n, s1, s2)


def _sample_mean_std(n: int | float, s1: float, s2: float) -> tuple[float, float]:
    """Mean and sample std (n - 1) from sums; (0, 1) without data, std 1 for a constant channel."""
    if n < 2:
        return (s1 / n if n else 0.0), 1.0
    mean = s1 / n
    std = float(np.sqrt(max((s2 - n * mean * mean) / (n - 1), 0.0)))
    return mean, std if std > 0 else 1.0
