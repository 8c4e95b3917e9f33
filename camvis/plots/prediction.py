"""The map of one predicted image (camvis-predict --map)."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import matplotlib.pyplot as plt
import numpy as np

from camvis.plots import save_png

MAX_SIDE = 1200  # pixels of the drawn image: paper-size frames are shown downsampled


def plot_prediction_map(result: Any, rgb: np.ndarray, depth: np.ndarray, path: str | Path) -> Path:
    """The image, p(visible) at the patch centres with a colour bar, and the predicted
    visibility as the contour of the depth map at that distance; the title says what and whose."""
    step = max(1, math.ceil(max(rgb.shape[:2]) / MAX_SIDE))
    fig, ax = plt.subplots(figsize=(9, 9 * rgb.shape[0] / rgb.shape[1] + 0.8), constrained_layout=True)
    ax.imshow(rgb[::step, ::step])
    ax.set_axis_off()
    table = result.patches
    points = ax.scatter(table["center_w"] / step, table["center_h"] / step, c=table["p_visible"], cmap="PiYG",
                        vmin=0, vmax=1, s=12, edgecolors="white", linewidths=0.3)
    fig.colorbar(points, ax=ax, fraction=0.03, label="p(visible)")
    v = result.visibility_m
    if v > 0 and math.isfinite(v):
        small = depth[::step, ::step]
        with np.errstate(invalid="ignore"):
            if np.nanmin(small) < v < np.nanmax(small):
                ax.contour(np.where(np.isfinite(small), small, np.nan), levels=[v], colors="yellow",
                           linewidths=1.2)
    shown = f"{v:,.0f} m" if math.isfinite(v) else "no estimate"
    ax.set_title(f"{result.image}  |  model {result.model}\nvisibility {shown} ({result.flag}, "
                 f"fit R² {result.fit_quality:.2f}, {result.n_patches} patches); yellow: depth = visibility",
                 fontsize=9)
    return save_png(fig, path)
