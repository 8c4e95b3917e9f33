"""camvis-aggregate's figures, drawn for a paper: per metric, each group's per-fold scores as a strip of
points, the mean over folds with its headline interval (over folds; the test-images-only interval as a
thin grey line beside it), boxes only from 8 folds up (fewer points make a box a misleading summary),
groups in grid order, and the corrected t-test's significant pairs marked; and the posterior of the
correlated Bayesian t-test per pair and metric, with its region of practical equivalence.

Readable for 8+ groups: the figure grows with the group count, long or many labels are rotated,
the legend sits outside the axes. Colours are colour-blind safe (Okabe & Ito), points outlined.
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import matplotlib
import numpy as np
import pandas as pd
from matplotlib.axes import Axes
from matplotlib.collections import LineCollection, PolyCollection
from matplotlib.figure import Figure
from matplotlib.lines import Line2D

from camvis.plots import PAPER_DPI, save_figure

METRIC_LABELS = {"acc": "macro accuracy", "f1": "macro F1", "loss": "BCE loss"}
# Okabe & Ito's palette (black left for the means) and Tol's wine: 9 folds, camvis2's cross-validation
FOLD_PALETTE = ("#E69F00", "#56B4E9", "#009E73", "#F0E442", "#0072B2", "#D55E00", "#CC79A7", "#999999", "#882255")
BOX_MIN_FOLDS = 8
"""Boxes from this many folds per group up: below it, quartiles of a handful of points mislead."""
ALPHA = 0.05
MAX_BRACKETS = 12
"""Significant pairs marked at most (the smallest p first); the legend says when more were left out."""


def _fold_colors(folds: list[int]) -> dict[int, tuple[float, ...]]:
    if len(folds) <= len(FOLD_PALETTE):
        return {f: matplotlib.colors.to_rgba(FOLD_PALETTE[i]) for i, f in enumerate(folds)}
    cmap = matplotlib.colormaps["tab20"]
    return {f: cmap(i % cmap.N) for i, f in enumerate(folds)}


def _fold_labels(per_fold: pd.DataFrame) -> dict[int, str]:
    """fold -> "fold 3 (cam3_1)" (its first non-empty view), one pass over the table."""
    views = per_fold[["fold", "view"]].dropna().astype({"view": str})
    views = views[views["view"] != ""].drop_duplicates("fold").set_index("fold")["view"]
    return {int(f): f"fold {f} ({views[f]})" if f in views.index else f"fold {f}" for f in per_fold["fold"].unique()}


LEGEND_IN = 2.6  # inches kept right of the axes for the legend
MAX_AXES_IN = 24.0  # a wider figure fits no page, and its PNG takes seconds to encode: groups get narrower


def stars(p: float) -> str:
    return "***" if p < 0.001 else "**" if p < 0.01 else "*" if p < ALPHA else ""


def metric_figure(
    per_fold: pd.DataFrame, summary: pd.DataFrame, metric: str, path: str | Path, experiment: str | None = None,
    *, comparisons: pd.DataFrame | None = None, confidence: float = 0.95, order: Sequence[str] | None = None,
    formats: tuple[str, ...] = ("png",), dpi: int = PAPER_DPI,
) -> list[Path]:  # fmt: skip
    """Draw one metric (draw_metric) and write it in each of `formats` beside `path`, atomically."""
    fig = draw_metric(per_fold, summary, metric, experiment, comparisons=comparisons, confidence=confidence,
                      order=order)
    return save_figure(fig, path, formats, dpi=dpi, bbox_inches=None)


def draw_metric(
    per_fold: pd.DataFrame, summary: pd.DataFrame, metric: str, experiment: str | None = None,
    *, comparisons: pd.DataFrame | None = None, confidence: float = 0.95, order: Sequence[str] | None = None,
) -> Figure:  # fmt: skip
    """The figure of one metric: per group (in `order`, the grid's; else sorted) a strip of per-fold points
    coloured by fold (each with its own bootstrap interval when known), the mean over folds with its
    bootstrap interval in black, boxes from BOX_MIN_FOLDS folds up, brackets with stars over the pairs the
    corrected t-test (Holm-adjusted) finds different."""
    present = set(per_fold["group"])
    groups = [g for g in (order or []) if g in present] + sorted(present - set(order or []))
    folds = sorted(int(f) for f in per_fold["fold"].unique())
    colors = _fold_colors(folds)
    longest = max((len(g) for g in groups), default=0)
    rotate = len(groups) > 4 or longest > 10
    width = min(max(6.0, 0.9 * len(groups) + 2.0), MAX_AXES_IN) + LEGEND_IN
    bottom_in = 0.5 + (0.075 * longest if rotate else 0.0)  # rotated labels need room below
    height = 4.4 + bottom_in
    fig = Figure(figsize=(width, height))
    # fixed margins in inches instead of a layout engine: one draw per figure instead of two
    fig.subplots_adjust(left=0.8 / width, right=1 - LEGEND_IN / width, bottom=bottom_in / height, top=1 - 0.4 / height)
    ax = fig.subplots()
    by_group = dict(iter(per_fold.groupby("group", sort=False)[metric]))
    data = [by_group[g].to_numpy(dtype=float) for g in groups]
    boxes = min((len(d) for d in data), default=0) >= BOX_MIN_FOLDS
    if boxes:
        _draw_boxes(ax, data)
    offsets = dict(zip(folds, np.linspace(-0.2, 0.2, len(folds)) if len(folds) > 1 else [0.0]))
    # each fold's own test-only interval only while the folds have colours of their own: past that, one
    # group's dozens of thin lines read as a smear (and cost seconds to draw at thousands of jobs)
    _draw_folds(ax, per_fold, groups, metric, colors, offsets, fold_intervals=len(folds) <= len(FOLD_PALETTE))
    _draw_means(ax, summary, groups, metric)
    ax.set_xticks(range(len(groups)), groups, rotation=35 if rotate else 0, ha="right" if rotate else "center",
                  rotation_mode="anchor")  # fmt: skip
    ax.set_xlim(-0.6, len(groups) - 0.4)
    ax.set_ylabel(METRIC_LABELS.get(metric, metric))
    label = f"{METRIC_LABELS.get(metric, metric)} per fold"
    ax.set_title(f"{experiment}: {label}" if experiment else label)
    ax.grid(axis="y", alpha=0.4)
    ax.spines[["top", "right"]].set_visible(False)
    significance = _draw_significance(ax, comparisons, groups, metric)
    labels = _fold_labels(per_fold)
    handles = [Line2D([], [], marker="o", ls="", color=colors[f], markeredgecolor="black", markeredgewidth=0.5,
                      label=labels[f]) for f in folds[: len(FOLD_PALETTE)]]
    if len(folds) > len(FOLD_PALETTE):  # one legend line per fold would not fit (and takes seconds to draw)
        handles = [Line2D([], [], marker="o", ls="", color="0.7", markeredgecolor="black", markeredgewidth=0.5,
                          label=f"{len(folds)} folds ({folds[0]}-{folds[-1]}),\none colour per fold")]
    handles.append(Line2D([], [], marker="D", ls="-", color="black",
                          label=f"mean over folds,\n{confidence:.0%} interval over folds"))
    handles.append(Line2D([], [], ls="-", lw=1, color="0.45", label="test images only"))
    if boxes:
        handles.append(Line2D([], [], color="0.6", lw=6, alpha=0.4, label="box: quartiles over folds"))
    # the caption line: no marker, wrapped to the legend's width
    handles.append(Line2D([], [], ls="", label=significance))
    fig.legend(handles=handles, loc="upper left", bbox_to_anchor=(1 - (LEGEND_IN - 0.1) / width, 1 - 0.4 / height),
               frameon=False, fontsize="small")  # fmt: skip
    return fig


def _draw_boxes(ax: Axes, data: list[np.ndarray], width: float = 0.55) -> None:
    """matplotlib's boxplot without fliers (quartiles; whiskers to the farthest point within 1.5 IQR; caps
    half the box wide), drawn as one polygon collection and two line collections: three artists however
    many groups, where boxplot makes six per group."""
    boxes, whiskers, medians = [], [], []
    half, cap = width / 2, width / 4
    for i, d in enumerate(data):
        q1, median, q3 = np.percentile(d, [25, 50, 75])
        low, high = d[d >= q1 - 1.5 * (q3 - q1)].min(), d[d <= q3 + 1.5 * (q3 - q1)].max()
        boxes.append([(i - half, q1), (i + half, q1), (i + half, q3), (i - half, q3)])
        medians.append([(i - half, median), (i + half, median)])
        whiskers += [[(i, low), (i, q1)], [(i, q3), (i, high)], [(i - cap, low), (i + cap, low)],
                     [(i - cap, high), (i + cap, high)]]
    ax.add_collection(PolyCollection(boxes, facecolors="0.93", edgecolors="0.6", zorder=1, label="boxes"))
    ax.add_collection(LineCollection(whiskers, colors="0.6", linewidths=1, zorder=1))
    ax.add_collection(LineCollection(medians, colors="0.35", linewidths=1, zorder=1))


def _draw_folds(
    ax: Axes, per_fold: pd.DataFrame, groups: list[str], metric: str,
    colors: dict[int, tuple[float, ...]], offsets: dict[int, float], fold_intervals: bool = True,
) -> None:  # fmt: skip
    """Every fold's point (and, with fold_intervals, its own test-only CI as a thin line) in two artists:
    one collection each."""
    x = per_fold["group"].map({g: i for i, g in enumerate(groups)}).to_numpy(float)
    x = x + per_fold["fold"].map(offsets).to_numpy(float)
    y = per_fold[metric].to_numpy(float)
    rgba = [colors[int(f)] for f in per_fold["fold"]]
    low, high = f"{metric}_ci_low", f"{metric}_ci_high"
    if fold_intervals and low in per_fold and high in per_fold:
        known = per_fold[[low, high]].notna().all(axis=1).to_numpy()
        ax.vlines(x[known], per_fold[low].to_numpy(float)[known], per_fold[high].to_numpy(float)[known],
                  colors=[c for c, k in zip(rgba, known) if k], linewidths=0.8, alpha=0.7, zorder=2)  # fmt: skip
    ax.scatter(x, y, c=rgba, s=30, edgecolors="black", linewidths=0.5, zorder=3)


def _draw_means(ax: Axes, summary: pd.DataFrame, groups: list[str], metric: str) -> None:
    rows = summary[summary["metric"] == metric].set_index("group").reindex(groups)
    x = np.arange(len(groups)) + 0.34
    mean = rows["mean"].to_numpy(float)
    err = np.vstack([mean - rows["ci_low"].to_numpy(float), rows["ci_high"].to_numpy(float) - mean]).clip(min=0)
    ax.errorbar(x, mean, yerr=err, fmt="D", color="black", markersize=5, capsize=3, zorder=4)
    if "test_ci_low" in rows:  # the test-only interval: thin, grey, just right of the headline
        ax.vlines(x + 0.07, rows["test_ci_low"].to_numpy(float), rows["test_ci_high"].to_numpy(float),
                  colors="0.45", linewidths=1, zorder=4)


def _draw_significance(ax: Axes, comparisons: pd.DataFrame | None, groups: list[str], metric: str) -> str:
    """Brackets with stars over the pairs whose Holm-adjusted corrected t-test p is below ALPHA, stacked above
    the data; returns the legend's line saying what the stars mean (or that no pair differs)."""
    test = "corrected t-test\n(Nadeau-Bengio), Holm-adjusted"  # legend lines fit LEGEND_IN
    if comparisons is None or not len(comparisons):
        return f"no pair tested:\n{test}"
    rows = comparisons[(comparisons["metric"] == metric) & (comparisons["p_holm"] < ALPHA)
                       & comparisons["group_a"].isin(groups) & comparisons["group_b"].isin(groups)]
    rows = rows.sort_values("p_holm", kind="stable")
    if not len(rows):
        return f"no pair differs at p < {ALPHA}:\n{test}"
    shown = rows.head(MAX_BRACKETS)
    low, high = ax.get_ylim()
    step = 0.07 * (high - low)
    where = {g: i for i, g in enumerate(groups)}
    for k, r in enumerate(shown.itertuples(index=False)):
        a, b = sorted((where[r.group_a], where[r.group_b]))
        y = high + step * (k + 0.3)
        ax.plot([a, a, b, b], [y - step * 0.25, y, y, y - step * 0.25], color="0.2", lw=0.8)
        ax.text((a + b) / 2, y, stars(float(r.p_holm)), ha="center", va="bottom", fontsize=9)
    ax.set_ylim(low, high + step * (len(shown) + 0.6))
    more = f"\n({len(rows) - len(shown)} more pairs not marked)" if len(rows) > len(shown) else ""
    return f"* p<.05 ** p<.01 *** p<.001:\n{test}{more}"


MAX_POSTERIOR_PAIRS = 20
"""Pairs drawn in the posterior figure at most (the smallest acc p first); all of them in comparisons.csv."""
POSTERIOR_COLOURS = ("#0072B2", "0.6", "#D55E00")  # a better, equivalent, b better (Okabe & Ito)


def posterior_figure(comparisons: pd.DataFrame, path: str | Path, experiment: str | None = None, *,
                     formats: tuple[str, ...] = ("png",), dpi: int = PAPER_DPI) -> list[Path]:
    """The correlated Bayesian t-test's posterior of a - b, one row per pair and one panel per metric:
    each density scaled to its row, the ROPE shaded, and beside it a bar split into P(a better),
    P(equivalent) and P(b better) (bars, not numbers: a figure's text costs more to draw than its data;
    the numbers are in summary.md and comparisons.csv)."""
    from scipy import special

    from camvis.metrics import METRICS

    order = comparisons[comparisons["metric"] == "acc"].sort_values("p_value", kind="stable", na_position="last")
    pairs = list(zip(order["group_a"], order["group_b"]))[:MAX_POSTERIOR_PAIRS]
    rows = len(pairs)
    longest = max((len(f"{a} - {b}") for a, b in pairs), default=10)
    fig = Figure(figsize=(3 * 3.0 + 0.07 * longest + 0.5, 0.36 * rows + 1.5))
    axes = fig.subplots(1, len(METRICS), sharey=True)
    table = comparisons.set_index(["metric", "group_a", "group_b"])
    for ax, metric in zip(axes, METRICS):
        part = table.loc[metric].reindex(pairs)
        rope = float(part["rope"].iloc[0]) if len(part) else 0.0
        mean, scale, dof = (part["mean_diff"].to_numpy(float), part["se"].to_numpy(float),
                            part["dof"].to_numpy(float))
        q = np.where(dof >= 1, special.stdtrit(np.maximum(dof, 1), 0.995), np.nan)
        spans = np.concatenate([mean - q * scale, mean + q * scale, mean, [-1.5 * rope, 1.5 * rope]])
        spans = spans[np.isfinite(spans)]
        lo, hi = (spans.min(), spans.max()) if spans.max() > spans.min() else (-1.0, 1.0)
        x = np.linspace(lo, hi, 200)
        ax.axvspan(-rope, rope, color="0.9", zorder=0)
        ax.axvline(0, color="0.6", lw=0.6, zorder=1)
        shapes, points, bars, colours = [], [], [], []
        left, width = hi + 0.08 * (hi - lo), 0.4 * (hi - lo)  # the probability bar, right of the densities
        for row in range(rows):
            y0 = rows - 1 - row
            if scale[row] > 0:
                density = _t_density(x, dof[row], mean[row], scale[row])
                shapes.append(np.column_stack([np.r_[x[0], x, x[-1]], y0 + np.r_[0, 0.8 * density / density.max(), 0]]))
            elif np.isfinite(mean[row]) and scale[row] == 0:
                points.append((mean[row], y0))
            probs = part[["p_a_better", "p_equivalent", "p_b_better"]].iloc[row].to_numpy(float)
            start = left
            for p, colour in zip(probs if np.isfinite(probs).all() else [], POSTERIOR_COLOURS):
                bars.append([(start, y0 + 0.15), (start + p * width, y0 + 0.15), (start + p * width, y0 + 0.65),
                             (start, y0 + 0.65)])
                colours.append(colour)
                start += p * width
        ax.add_collection(PolyCollection(shapes, facecolors="#56B4E9", edgecolors="#0072B2", linewidths=0.6,
                                         alpha=0.7, zorder=2))  # one artist for every density: one draw call
        ax.add_collection(PolyCollection(bars, facecolors=colours, edgecolors="none", zorder=2))
        if points:  # no spread: all the mass at the mean
            ax.vlines([p for p, _ in points], [y for _, y in points], [y + 0.8 for _, y in points],
                      color="#0072B2", lw=1.5, zorder=2)
        ax.set_xlim(lo, left + width * 1.02)
        ax.set_xticks(ax.get_xticks()[(ax.get_xticks() >= lo) & (ax.get_xticks() <= hi)])
        better = "lower is better" if metric == "loss" else "higher is better"
        ax.set_title(f"{METRIC_LABELS.get(metric, metric)}: a - b\n(ROPE +-{rope:g}, {better})", fontsize=9)
        ax.spines[["top", "right"]].set_visible(False)
        ax.tick_params(labelsize=7)
    axes[0].set_yticks([rows - 1 - i + 0.35 for i in range(rows)], [f"{a} - {b}" for a, b in pairs], fontsize=8)
    axes[0].set_ylim(-0.2, rows + 0.1)
    more = f" ({len(order) - rows} more pairs in comparisons.csv)" if len(order) > rows else ""
    fig.suptitle(f"{experiment + ': ' if experiment else ''}posterior of the mean difference, correlated Bayesian "
                 f"t-test{more}", fontsize=9)
    labels = ("P(a better)", "P(practically equivalent)", "P(b better)")
    fig.legend(handles=[Line2D([], [], color=c, lw=6, label=t) for c, t in zip(POSTERIOR_COLOURS, labels)],
               loc="lower center", ncol=3, frameon=False, fontsize=8)
    fig.subplots_adjust(left=(0.07 * longest + 0.3) / fig.get_figwidth(), right=0.98, bottom=0.75 / fig.get_figheight(),
                        top=1 - 0.9 / fig.get_figheight(), wspace=0.08)
    return save_figure(fig, path, formats, dpi=dpi, bbox_inches=None)


def _t_density(x: np.ndarray, dof: float, loc: float, scale: float) -> np.ndarray:
    """The location-scale Student t density, up to its constant (each row is scaled to its own height)."""
    z = (x - loc) / scale
    return np.exp(-(dof + 1) / 2 * np.log1p(z * z / dof))

