"""Figures of a job's evaluation: confusion matrix, per-image maps, prediction vs distance."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import matplotlib.pyplot as plt
import numpy as np

from matplotlib.lines import Line2D

from camvis.plots import CB_LABEL_COLOURS, CB_NONVISIBLE, CB_SCORE_CMAP, CB_VISIBLE, LABEL_COLOURS, save_png

CLASS_NAMES = ("non-visible", "visible")


def plot_confusion(matrix: np.ndarray, path: str | Path, title: str = "") -> Path:
    """Counts and row-normalized rates (recall per true class) of a 2x2 confusion matrix."""
    matrix = np.asarray(matrix)
    rates = matrix / np.maximum(matrix.sum(axis=1, keepdims=True), 1)
    fig, ax = plt.subplots(figsize=(4.4, 3.8))
    ax.imshow(rates, cmap="Blues", vmin=0, vmax=1)
    for (i, j), count in np.ndenumerate(matrix):
        colour = "white" if rates[i, j] > 0.5 else "black"
        ax.text(j, i, f"{count}\n{rates[i, j]:.1%}", ha="center", va="center", color=colour)
    ax.set_xticks([0, 1], CLASS_NAMES)
    ax.set_yticks([0, 1], CLASS_NAMES)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(title, fontsize=9)
    return save_png(fig, path)


def plot_image_map(
    image: np.ndarray,
    rows: np.ndarray,
    cols: np.ndarray,
    labels: np.ndarray,
    scores: np.ndarray,
    path: str | Path,
    title: str = "",
) -> Path:
    """Truth (left) and predicted probability of "visible" (right) at the patch centres over the image
    (draw_image_map), written atomically."""
    return save_png(draw_image_map(image, rows, cols, labels, scores, title), path)


def draw_image_map(image: np.ndarray, rows: np.ndarray, cols: np.ndarray, labels: np.ndarray,
                   scores: np.ndarray, title: str = "") -> Any:
    """The map's figure: colour-blind-safe colours (Okabe & Ito's blue/vermillion for the truth, cividis
    for p(visible)), markers outlined in black to stand out on any terrain, a labelled colour bar.
    `image` is (h, w, 3) uint8; `rows`/`cols` are centres already scaled to it."""
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2), constrained_layout=True)
    for ax in axes:
        ax.imshow(image)
        ax.set_axis_off()
    marker = {"s": 14, "edgecolors": "black", "linewidths": 0.4}
    axes[0].scatter(cols, rows, c=CB_LABEL_COLOURS[np.asarray(labels, dtype=int)], **marker)
    axes[0].set_title("truth", fontsize=9)
    axes[0].legend(handles=[Line2D([], [], marker="o", ls="", color=c, markeredgecolor="black", label=name)
                            for c, name in ((CB_VISIBLE, "visible"), (CB_NONVISIBLE, "non-visible"))],
                   loc="lower left", fontsize=8, framealpha=0.85)  # fmt: skip
    points = axes[1].scatter(cols, rows, c=scores, cmap=CB_SCORE_CMAP, vmin=0, vmax=1, **marker)
    axes[1].set_title("prediction", fontsize=9)
    bar = fig.colorbar(points, ax=axes[1], fraction=0.03)
    bar.set_label("predicted p(visible)")
    fig.suptitle(title, fontsize=10)
    return fig


def plot_distance(
    depth: np.ndarray,
    scores: np.ndarray,
    labels: np.ndarray,
    path: str | Path,
    *,
    fit_a: float | None = None,
    fit_b: float | None = None,
    predicted_m: float | None = None,
    true_m: float | None = None,
    title: str = "",
) -> Path:
    """Scores vs distance (log axis) coloured by truth, the fitted logistic, true and predicted V."""
    depth = np.asarray(depth, dtype=np.float64)
    fig, ax = plt.subplots(figsize=(6.4, 4.0))
    ax.scatter(depth, scores, c=LABEL_COLOURS[np.asarray(labels, dtype=int)], s=8, alpha=0.6, edgecolors="none")
    if fit_a is not None and fit_b is not None and depth.size:
        grid = np.logspace(np.log10(depth.min()), np.log10(depth.max()), 200)
        curve = 0.5 * (1 + np.tanh(0.5 * (fit_a - fit_b * np.log10(grid))))
        ax.plot(grid, curve, color="black", lw=1.5, label="logistic fit")
    if true_m is not None and np.isfinite(true_m):
        ax.axvline(true_m, color="tab:blue", lw=1.5, label=f"true V {true_m:,.0f} m")
    if predicted_m is not None and np.isfinite(predicted_m):
        ax.axvline(predicted_m, color="tab:red", lw=1.2, ls="--", label=f"predicted V {predicted_m:,.0f} m")
    ax.axhline(0.5, color="grey", lw=0.6, ls=":")
    ax.set_xscale("log")
    ax.set_ylim(-0.03, 1.03)
    ax.set_xlabel("distance (m)")
    ax.set_ylabel("p(visible)")
    ax.set_title(title, fontsize=9)
    if ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize=8, loc="best")
    return save_png(fig, path)


def plot_learning_curve(history: list[dict[str, float]], path: str | Path, title: str = "",
                        validation: str = "inner validation", best_epoch: int | None = None) -> Path:
    """Training against validation loss and accuracy per epoch (1-based), from the training's history
    records (train_loss, train_acc, val_loss, val_acc); `best_epoch` (1-based) marked: the weights kept."""
    epochs = np.arange(1, len(history) + 1)
    fig, axes = plt.subplots(1, 2, figsize=(8.4, 3.4), constrained_layout=True)
    for ax, (key, label) in zip(axes, (("loss", "BCE loss"), ("acc", "macro accuracy"))):
        for prefix, name, style in (("train", "training", "-"), ("val", validation, "--")):
            values = [float(h.get(f"{prefix}_{key}", np.nan)) for h in history]
            ax.plot(epochs, values, style, marker="o", ms=3, label=name)
        if best_epoch is not None:
            ax.axvline(best_epoch, color="0.5", lw=0.8, ls=":", label=f"kept: epoch {best_epoch}")
        ax.set(xlabel="epoch", ylabel=label)
        ax.xaxis.get_major_locator().set_params(integer=True)
    axes[0].legend(fontsize=8, frameon=False)
    fig.suptitle(title, fontsize=9)
    return save_png(fig, path, dpi=150)
