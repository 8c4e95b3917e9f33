"""Metres in camvis-aggregate: the held-out images' visibility errors per group and fold, paired comparisons.

Every finished job's visibility.csv holds one row per held-out image: predicted and true
visibility and e = |log10 V_pred - log10 V_true|. Images without an error (no truth, or an
"inverted" fit without an estimate) are left out and counted. Per group and fold, and per group
over all its folds ("all": the folds' images pooled):
- the median of e, and the share of images within a factor 2 of the truth (e <= log10 2);
- percentile bootstrap intervals over images (`n_boot` resamples; "all" resamples within each
  fold, so every fold keeps its number of images).
Per pair of groups, over the images both predicted (same fold, same image): the difference a - b of
both statistics, a paired bootstrap interval (the same resampled images for a and b) and a
two-sided bootstrap p-value, 2 min(P*(d <= 0), P*(d >= 0)), Holm-adjusted over the pairs of each
statistic (camvis.results.stats.holm_adjust). Poor fits are counted per row (flag poor_fit: pseudo-R² under
camvis.job.visibility.POOR_FIT_R2, see there).

No torch here, like camvis.results.aggregate.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import pandas as pd

from camvis.io import write_csv
from camvis.results.finished import FinishedJob
from camvis.results.stats import holm_adjust


VISIBILITY_CSV = "visibility.csv"
FACTOR_2 = math.log10(2.0)
STATISTICS = ("median_abs_log10_error", "within_factor2")
SUMMARY_COLUMNS = ["group", "fold", "n_images", "n_unscored", "n_flagged", "n_poor_fit",
                   "median_abs_log10_error", "median_ci_low", "median_ci_high",
                   "within_factor2", "within_factor2_ci_low", "within_factor2_ci_high"]
COMPARISON_COLUMNS = ["statistic", "group_a", "group_b", "n_folds", "n_images", "value_a", "value_b", "diff",
                      "ci_low", "ci_high", "p_value", "p_holm"]


def read_images(folder: Path) -> pd.DataFrame | None:
    """A job's visibility.csv (None when it has none: jobs of an older camvis)."""
    path = folder / VISIBILITY_CSV
    if not path.is_file():
        return None
    frame = pd.read_csv(path, dtype={"image": str, "flag": str})
    needed = {"image", "predicted_visibility_m", "true_visibility_m", "abs_log10_error", "flag"}
    if needed - set(frame.columns):
        raise ValueError(f"{path}: missing column(s) {', '.join(sorted(needed - set(frame.columns)))}")
    return frame


def load(jobs: Sequence[FinishedJob], directory: Path) -> dict[tuple[str, int], pd.DataFrame]:
    """(group, fold) -> that job's image rows, for the jobs that have a visibility.csv."""
    tables = {}
    for job in jobs:
        frame = read_images(directory / job.name)
        if frame is not None:
            tables[job.group, job.fold] = frame
    return tables


def _statistics(errors: np.ndarray) -> np.ndarray:
    """(..., n) errors -> (..., 2): median and share within a factor 2, along the last axis."""
    return np.stack([np.median(errors, axis=-1), (errors <= FACTOR_2).mean(axis=-1)], axis=-1)


def _resample(errors: list[np.ndarray], n_boot: int, rng: np.random.Generator) -> np.ndarray:
    """(n_boot, total) pooled resamples, each fold's images drawn within that fold."""
    return np.concatenate([e[rng.integers(0, e.size, (n_boot, e.size))] for e in errors], axis=1)


def _interval(values: np.ndarray, confidence: float) -> tuple[np.ndarray, np.ndarray]:
    tail = 100 * (1 - confidence) / 2
    return np.percentile(values, tail, axis=0), np.percentile(values, 100 - tail, axis=0)


def _scored(frame: pd.DataFrame) -> np.ndarray:
    errors = pd.to_numeric(frame["abs_log10_error"], errors="coerce").to_numpy(np.float64)
    return errors[np.isfinite(errors)]


def summarize(tables: dict[tuple[str, int], pd.DataFrame], confidence: float, n_boot: int = 1000,
              seed: int = 0) -> pd.DataFrame:
    """Per group and fold, then per group over all folds ("all"): the two statistics with intervals."""
    rows = []
    for group in sorted({g for g, _ in tables}):
        folds = sorted(f for g, f in tables if g == group)
        for fold in [*folds, "all"]:
            frames = [tables[group, f] for f in (folds if fold == "all" else [fold])]
            errors = [_scored(t) for t in frames]
            errors = [e for e in errors if e.size]
            flags = pd.concat([t["flag"] for t in frames]).astype(str)
            n = sum(e.size for e in errors)
            row: dict[str, Any] = {"group": group, "fold": fold, "n_images": n,
                                   "n_unscored": sum(len(t) for t in frames) - n,
                                   "n_flagged": int((flags != "ok").sum()), "n_poor_fit": int((flags == "poor_fit").sum())}
            if n:
                point = _statistics(np.concatenate(errors))
                rng = np.random.default_rng([seed, *map(ord, group), 0 if fold == "all" else int(fold)])
                low, high = _interval(_statistics(_resample(errors, n_boot, rng)), confidence)
            else:
                point = low = high = np.full(2, math.nan)
            row |= {"median_abs_log10_error": point[0], "median_ci_low": low[0], "median_ci_high": high[0],
                    "within_factor2": point[1], "within_factor2_ci_low": low[1], "within_factor2_ci_high": high[1]}
            rows.append(row)
    return pd.DataFrame(rows, columns=SUMMARY_COLUMNS)


def _paired(tables: dict[tuple[str, int], pd.DataFrame], a: str, b: str) -> tuple[list[int], list[np.ndarray]]:
    """Common folds and, per fold, the (n, 2) errors of a and b on the images both scored."""
    folds, pairs = [], []
    for fold in sorted(f for g, f in tables if g == a and (b, f) in tables):
        ea = tables[a, fold][["image", "abs_log10_error"]]
        eb = tables[b, fold][["image", "abs_log10_error"]]
        joined = ea.merge(eb, on="image", suffixes=("_a", "_b"))
        values = joined[["abs_log10_error_a", "abs_log10_error_b"]].apply(pd.to_numeric, errors="coerce").to_numpy()
        values = values[np.isfinite(values).all(axis=1)]
        if len(values):
            folds.append(fold)
            pairs.append(values)
    return folds, pairs


def compare(tables: dict[tuple[str, int], pd.DataFrame], confidence: float, n_boot: int = 1000,
            seed: int = 0) -> pd.DataFrame:
    """Every pair of groups on their common images: a - b of both statistics, paired bootstrap."""
    groups = sorted({g for g, _ in tables})
    rows = []
    for i, a in enumerate(groups):
        for b in groups[i + 1:]:
            folds, pairs = _paired(tables, a, b)
            if not folds:
                continue
            rng = np.random.default_rng([seed, len(a), len(b), *map(ord, a + "\0" + b)])
            picks = [rng.integers(0, len(p), (n_boot, len(p))) for p in pairs]
            # column j (a or b) of the resampled images: (n_boot, images) per fold
            both = [np.concatenate([p[:, j][k] for p, k in zip(pairs, picks)], axis=1) for j in (0, 1)]
            diffs = _statistics(both[0]) - _statistics(both[1])  # (n_boot, 2), paired resample by resample
            value_a = _statistics(np.concatenate([p[:, 0] for p in pairs]))
            value_b = _statistics(np.concatenate([p[:, 1] for p in pairs]))
            low, high = _interval(diffs, confidence)
            for k, statistic in enumerate(STATISTICS):
                p = min(1.0, 2 * min((diffs[:, k] <= 0).mean(), (diffs[:, k] >= 0).mean()))
                rows.append({"statistic": statistic, "group_a": a, "group_b": b, "n_folds": len(folds),
                             "n_images": sum(len(p_) for p_ in pairs), "value_a": value_a[k], "value_b": value_b[k],
                             "diff": value_a[k] - value_b[k], "ci_low": low[k], "ci_high": high[k], "p_value": p})
    table = pd.DataFrame(rows, columns=[c for c in COMPARISON_COLUMNS if c != "p_holm"])
    holm = table.groupby("statistic", sort=False)["p_value"].transform(lambda p: holm_adjust(p.to_numpy()))
    table["p_holm"] = holm.astype(np.float64)
    return table


def points(tables: dict[tuple[str, int], pd.DataFrame]) -> pd.DataFrame:
    """Predicted against true visibility of every scored image, with its group and fold (the figure)."""
    frames = [t.assign(group=g, fold=f) for (g, f), t in sorted(tables.items())]
    if not frames:
        return pd.DataFrame(columns=["group", "fold", "image", "predicted_visibility_m", "true_visibility_m", "flag"])
    frame = pd.concat(frames, ignore_index=True)
    keep = np.isfinite(pd.to_numeric(frame["abs_log10_error"], errors="coerce"))
    return frame.loc[keep, ["group", "fold", "image", "predicted_visibility_m", "true_visibility_m", "flag"]]


def write(jobs: Sequence[FinishedJob], directory: Path, confidence: float, seed: int | None,
          figures: bool, experiment: str) -> dict[str, Any] | None:
    """visibility_summary.csv, visibility_comparisons.csv and visibility.png under `directory`;
    None when no finished job has a visibility.csv."""
    tables = load(jobs, directory)
    if not tables:
        return None
    summary = summarize(tables, confidence, seed=seed or 0)
    comparisons = compare(tables, confidence, seed=seed or 0)
    paths = {"summary": directory / "visibility_summary.csv", "comparisons": directory / "visibility_comparisons.csv"}
    write_csv(summary, paths["summary"])
    write_csv(comparisons, paths["comparisons"])
    if figures:
        from camvis.plots.aggregate import visibility_figure

        paths["figure"] = visibility_figure(points(tables), directory / "visibility.png", experiment)
    return {"summary": summary, "comparisons": comparisons, "paths": paths}


def markdown(result: dict[str, Any], confidence: float) -> list[str]:
    """The report's section: per group over all folds, then the comparisons."""
    from camvis.results.aggregate import markdown_table

    s = result["summary"]
    overall = s[s["fold"].astype(str) == "all"]
    table = pd.DataFrame({
        "group": overall["group"], "images": overall["n_images"],
        f"median abs log10 error ({confidence:.0%} CI)": [
            f"{m:.3f} [{lo:.3f}, {hi:.3f}]" for m, lo, hi in
            zip(overall["median_abs_log10_error"], overall["median_ci_low"], overall["median_ci_high"])],
        f"within factor 2 ({confidence:.0%} CI)": [
            f"{m:.1%} [{lo:.1%}, {hi:.1%}]" for m, lo, hi in
            zip(overall["within_factor2"], overall["within_factor2_ci_low"], overall["within_factor2_ci_high"])],
        "flagged": overall["n_flagged"], "poor fits": overall["n_poor_fit"]})
    lines = ["## Visibility in metres (held-out images)", "",
             "Per image e = abs(log10 V_pred - log10 V_true); intervals: bootstrap over images (within "
             "each fold). Flagged: any flag but ok (poor_fit: pseudo-R2 of the fit under 0.5, or its "
             "crossing outside the patches' depths). Per fold in visibility_summary.csv.", "",
             markdown_table(table), ""]
    c = result["comparisons"]
    if len(c):
        compact = pd.DataFrame({
            "statistic": c["statistic"], "a - b": c["group_a"] + " - " + c["group_b"], "images": c["n_images"],
            f"difference ({confidence:.0%} CI)": [f"{d:+.3f} [{lo:+.3f}, {hi:+.3f}]"
                                                  for d, lo, hi in zip(c["diff"], c["ci_low"], c["ci_high"])],
            "p": c["p_value"], "p (Holm)": c["p_holm"]})
        lines += ["Paired over the images both groups predicted (visibility_comparisons.csv):", "",
                  markdown_table(compact), ""]
    if "figure" in result["paths"]:
        lines += [f"![visibility]({result['paths']['figure'].name})", ""]
    return lines
