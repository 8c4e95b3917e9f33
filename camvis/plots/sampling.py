"""camvis2's depth-sampling illustration: why and how patch centres are balanced over depth."""

from __future__ import annotations

from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np

from camvis.plots import LABEL_COLOURS, NONVISIBLE_COLOUR, VISIBLE_COLOUR, save_png


def plot_sampling(out_png: str | Path, *, image: np.ndarray, factor: int, counts: np.ndarray,
                  log_edges: np.ndarray, centre_h: np.ndarray, centre_w: np.ndarray,
                  label: np.ndarray, depth: np.ndarray, title: str = "") -> Path:
    """Write the 2x2 figure and return its path.

    Top left: depth histogram of the candidate (labelled) pixels; top right: the sampling
    weight 1 / count per depth bin; bottom left: depth histogram of the sampled centres by
    label; bottom right: the image (at demagnification `factor`) with the centres.
    `counts`/`log_edges` are the candidates' histogram over log10(depth in m).
    """
    edges_m = 10.0 ** np.asarray(log_edges, np.float64)
    fig, axes = plt.subplots(2, 2, figsize=(12, 8.5))
    _candidates(axes[0, 0], counts, edges_m)
    _weights(axes[0, 1], counts, edges_m)
    _sampled(axes[1, 0], depth, label, edges_m)
    _centres(axes[1, 1], image, factor, centre_h, centre_w, label)
    fig.suptitle(f"Depth-balanced patch sampling: {title}" if title else "Depth-balanced sampling")
    fig.tight_layout()
    return save_png(fig, out_png, dpi=100, bbox_inches=None)


def _candidates(ax: plt.Axes, counts: np.ndarray, edges_m: np.ndarray) -> None:
    ax.stairs(counts, edges_m, fill=True, color="0.45")
    ax.set(xscale="log", xlabel="depth (m)", ylabel="pixels",
           title="Depth of labelled pixels (sampling candidates)")


def _weights(ax: plt.Axes, counts: np.ndarray, edges_m: np.ndarray) -> None:
    with np.errstate(divide="ignore"):
        weights = np.where(counts > 0, 1.0 / np.maximum(counts, 1), np.nan)
    ax.stairs(weights, edges_m, color="tab:blue", linewidth=2)
    ax.set(xscale="log", yscale="log", xlabel="depth (m)", ylabel="weight per pixel",
           title="Sampling weight = 1 / pixels in the depth bin")


def _sampled(ax: plt.Axes, depth: np.ndarray, label: np.ndarray, edges_m: np.ndarray) -> None:
    groups = [depth[label == 1], depth[label == 0]]
    ax.hist(groups, bins=edges_m, stacked=True, color=[VISIBLE_COLOUR, NONVISIBLE_COLOUR],
            label=[f"visible ({groups[0].size})", f"non-visible ({groups[1].size})"])
    ax.set(xscale="log", xlabel="depth (m)", ylabel="patch centres",
           title=f"Depth of the {depth.size} sampled centres")
    ax.legend(loc="upper right")


def _centres(ax: plt.Axes, image: np.ndarray, factor: int, centre_h: np.ndarray,
             centre_w: np.ndarray, label: np.ndarray) -> None:
    ax.imshow(image)
    colours = LABEL_COLOURS[(np.asarray(label) == 1).astype(int)]
    ax.scatter(centre_w / factor, centre_h / factor, c=colours, s=6, linewidths=0)
    ax.set_title(f"Sampled centres (image at 1/{factor})")
    ax.set_axis_off()
