"""The map of one predicted image (camvis-predict --map), and predicted against true visibility over
many (camvis-aggregate's visibility figure)."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Sequence

import matplotlib.pyplot as plt
import numpy as np

from camvis.plots import PAPER_DPI, save_figure, save_png

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


FLAG_MARKERS = {"ok": ("o", "full"), "uncertain": ("o", "none"), "flagged": ("X", "full")}
"""How a point is drawn by its flag: ok filled, uncertain hollow, any other flag (poor_fit, beyond_max,
below_min) a cross."""


def visibility_figure(points: Any, summary: Any, path: str | Path, experiment: str | None = None, *,
                      order: Sequence[str] | None = None, formats: tuple[str, ...] = ("png",),
                      dpi: int = PAPER_DPI) -> list[Path]:
    """draw_visibility's figure, written in each of `formats` beside `path` (PNG at `dpi`), atomically."""
    fig = draw_visibility(points, summary, experiment, order=order)
    return save_figure(fig, path, formats, dpi=dpi, bbox_inches=None)


def draw_visibility(points: Any, summary: Any, experiment: str | None = None, *,
                    order: Sequence[str] | None = None) -> Any:
    """Predicted against true visibility, one log-log panel per group (in `order`, the grid's, as the
    metric figures; then the rest sorted), coloured by fold: each image's interval as a vertical bar
    (an unbounded end to the panel's edge), its marker by flag (FLAG_MARKERS), the 1:1 line and the
    factor-2 band; each panel titled with its bias (summary's "all" row)."""
    from matplotlib.figure import Figure
    from matplotlib.lines import Line2D

    from camvis.plots.aggregate import LEGEND_IN, _fold_colors

    present = set(points["group"])
    groups = [g for g in (order or []) if g in present] + sorted(present - set(order or [])) or [""]
    folds = sorted(int(f) for f in points["fold"].unique())
    colors = _fold_colors(folds)
    cols = min(len(groups), 4)
    rows = -(-len(groups) // cols)
    fig = Figure(figsize=(3.4 * cols + LEGEND_IN, 3.6 * rows))
    values = points[["predicted_visibility_m", "true_visibility_m"]].to_numpy(dtype=float)
    values = values[values > 0]
    lo, hi = (values.min() / 2, values.max() * 2) if values.size else (1.0, 1e5)
    line = np.array([lo, hi])
    bias = {r.group: r.median_signed_log10_error for r in summary.itertuples(index=False) if str(r.fold) == "all"}
    for k, group in enumerate(groups):
        ax = fig.add_subplot(rows, cols, k + 1)
        ax.fill_between(line, line / 2, line * 2, color="0.9")
        ax.plot(line, line, color="0.3", lw=1)
        mine = points[points["group"] == group]
        for fold in folds:
            part = mine[mine["fold"] == fold]
            _draw_points(ax, part, colors[fold], lo, hi)
        title = str(group) + (f"\nbias {bias[group]:+.2f} (x{10 ** bias[group]:.2g})"
                              if math.isfinite(bias.get(group, math.nan)) else "")
        ax.set(xscale="log", yscale="log", xlim=(lo, hi), ylim=(lo, hi), aspect="equal")
        ax.set_title(title, fontsize=9)
        ax.set_xlabel("true visibility (m)")
        if k % cols == 0:
            ax.set_ylabel("predicted visibility (m)")
    handles = [Line2D([], [], color="0.3", lw=1, label="1:1"), Line2D([], [], color="0.8", lw=6, label="factor 2"),
               Line2D([], [], color="0.5", lw=1, label="per-image interval"),
               *(Line2D([], [], marker=m, fillstyle=f, ls="", color="0.2", label=flag)
                 for flag, (m, f) in FLAG_MARKERS.items()),
               *(Line2D([], [], marker="o", ls="", color=colors[f], label=f"fold {f}") for f in folds)]
    fig.legend(handles=handles, loc="center right", frameon=False, fontsize=8)
    fig.suptitle(f"{experiment}: predicted vs true visibility" if experiment else "predicted vs true visibility")
    fig.subplots_adjust(right=1 - LEGEND_IN / fig.get_figwidth(), wspace=0.3, hspace=0.45)
    return fig


def _draw_points(ax: Any, part: Any, color: Any, lo: float, hi: float) -> None:
    """One fold's images: interval bars, then markers by flag."""
    true = part["true_visibility_m"].to_numpy(dtype=float)
    low = np.clip(part["visibility_low_m"].to_numpy(dtype=float), lo, hi)
    high = np.clip(part["visibility_high_m"].to_numpy(dtype=float), lo, hi)
    bars = np.isfinite(low) & np.isfinite(high)
    ax.vlines(true[bars], low[bars], high[bars], color=color, lw=0.8, alpha=0.7)
    kind = np.where(part["flag"] == "ok", "ok", np.where(part["flag"] == "uncertain", "uncertain", "flagged"))
    for flag, (marker, fill) in FLAG_MARKERS.items():
        chosen = kind == flag
        if chosen.any():
            ax.scatter(true[chosen], part["predicted_visibility_m"].to_numpy(dtype=float)[chosen], s=18,
                       marker=marker, facecolors=color if fill == "full" else "none", edgecolors=color,
                       linewidths=0.9)
