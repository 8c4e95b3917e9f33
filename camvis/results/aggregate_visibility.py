"""Metres in camvis-aggregate: the held-out images' visibility errors per group and fold, paired comparisons.

Every finished job's visibility.csv holds one row per held-out image: predicted and true
visibility, the signed error s = log10 V_pred - log10 V_true and e = |s|, and the image's interval
(camvis.job.visibility). Images without an error (no truth, or an "inverted" fit without an estimate)
are left out and counted. Per group and fold, and per group over all its folds ("all": the folds'
images pooled; a grid point's replicate seeds pooled too):
- the median of e, the share of images within a factor 2 of the truth (e <= log10 2), and the bias:
  the median of s (negative: visibility underestimated; 10 ** -bias is the typical factor low);
- percentile bootstrap intervals of all three over images (`n_boot` resamples; "all" resamples
  within each fold, so every fold keeps its number of images);
- the coverage of the per-image intervals: the share of images whose true V lies inside its interval
  (nominal camvis.job.visibility.CONFIDENCE), over the images that have one: the job's patch bootstrap
  interval (interval_coverage: how well the patches pin the crossing down, not the model's error), and the
  calibrated interval (calibrated_coverage), which adds the model's error: per group and fold k, the
  split-conformal quantile q of |log10 error| over the group's held-out images of its other folds (other
  views: leave-one-view-out, camvis.job.visibility.calibration_quantile), the interval widened to at least
  [V / 10 ** q, V * 10 ** q]. visibility_calibration.json keeps q per group and fold: what a bundle of
  that job carries (camvis.job.predict widens its predictions' intervals with it).
Per pair of groups, over the images both predicted (same fold, same image): the difference a - b of
both statistics, a paired bootstrap interval (the same resampled images for a and b) and a
two-sided bootstrap p-value, 2 min(P*(d <= 0), P*(d >= 0)), Holm-adjusted over the pairs of each
statistic (camvis.results.stats.holm_adjust). Poor fits are counted per row (flag poor_fit: pseudo-R² under
camvis.job.visibility.POOR_FIT_R2, see there).

No torch here, like camvis.results.aggregate.
"""

from __future__ import annotations

import math
import re
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import pandas as pd

from camvis.io import write_csv, write_json
from camvis.bookkeeping.jobfolder import VISIBILITY_CALIBRATION
from camvis.results.finished import FinishedJob
from camvis.bookkeeping.jobfolder import VISIBILITY as VISIBILITY_CSV
from camvis.results.markdown import markdown_table
from camvis.results.stats import holm_adjust


FACTOR_2 = math.log10(2.0)
STATISTICS = ("median_abs_log10_error", "within_factor2")  # compared between groups
SUMMARY_COLUMNS = ["group", "fold", "n_images", "n_unscored", "n_flagged", "n_poor_fit", "n_uncertain",
                   "median_abs_log10_error", "median_ci_low", "median_ci_high",
                   "within_factor2", "within_factor2_ci_low", "within_factor2_ci_high",
                   "median_signed_log10_error", "signed_ci_low", "signed_ci_high",
                   "n_intervals", "interval_coverage", "calibration_log10_factor", "n_calibration",
                   "calibrated_coverage"]
CALIBRATION_JSON = VISIBILITY_CALIBRATION
_REPLICATE = re.compile(r"_rep(\d+)$")
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
    return completed(frame)


def completed(frame: pd.DataFrame, replicate: int = 1) -> pd.DataFrame:
    """Image rows with the columns of today's visibility.csv that a job of an older camvis lacks (the signed
    error from the two visibilities, NaN intervals) and their `replicate`."""
    frame = frame.assign(replicate=replicate)
    if "signed_log10_error" not in frame:  # a job of before the column: from the two visibilities
        with np.errstate(divide="ignore", invalid="ignore"):
            frame["signed_log10_error"] = np.log10(pd.to_numeric(frame["predicted_visibility_m"], errors="coerce")
                                                   / pd.to_numeric(frame["true_visibility_m"], errors="coerce"))
    for column in ("visibility_low_m", "visibility_high_m"):
        frame[column] = pd.to_numeric(frame[column], errors="coerce") if column in frame else math.nan
    return frame


def load(jobs: Sequence[FinishedJob], directory: Path) -> dict[tuple[str, int], pd.DataFrame]:
    """(group, fold) -> the image rows of that grid point's jobs, for those with a visibility.csv; the
    replicates of a point ("_rep{r}" names, whose group is the point's) are stacked, with a `replicate`."""
    found: dict[tuple[str, int], list[pd.DataFrame]] = {}
    for job in jobs:
        frame = read_images(directory / job.name)
        if frame is not None:
            match = _REPLICATE.search(job.name)
            group = _REPLICATE.sub("", job.group)  # whether or not the group label keeps the replicate
            found.setdefault((group, job.fold), []).append(frame.assign(replicate=int(match[1]) if match else 1))
    return {key: pd.concat(frames, ignore_index=True) for key, frames in found.items()}


def _statistics(errors: np.ndarray) -> np.ndarray:
    """(..., n) signed errors -> (..., 3): median |error|, share within a factor 2 and median signed
    error, along the last axis."""
    absolute = np.abs(errors)
    return np.stack([np.median(absolute, axis=-1), (absolute <= FACTOR_2).mean(axis=-1),
                     np.median(errors, axis=-1)], axis=-1)


def _resample(errors: list[np.ndarray], n_boot: int, rng: np.random.Generator) -> np.ndarray:
    """(n_boot, total) pooled resamples, each fold's images drawn within that fold."""
    return np.concatenate([e[rng.integers(0, e.size, (n_boot, e.size))] for e in errors], axis=1)


def _interval(values: np.ndarray, confidence: float) -> tuple[np.ndarray, np.ndarray]:
    tail = 100 * (1 - confidence) / 2
    return np.percentile(values, tail, axis=0), np.percentile(values, 100 - tail, axis=0)


def _scored(frame: pd.DataFrame) -> np.ndarray:
    """The signed errors of the images that have one."""
    errors = pd.to_numeric(frame["signed_log10_error"], errors="coerce").to_numpy(np.float64)
    return errors[np.isfinite(errors)]


def _coverage(frames: list[pd.DataFrame], prefix: str = "visibility") -> tuple[float, int]:
    from camvis.job.visibility import coverage  # numpy only; named here: the login side loads no camvis.job

    rows = pd.concat(frames, ignore_index=True)
    return coverage(rows[f"{prefix}_low_m"], rows[f"{prefix}_high_m"],
                    pd.to_numeric(rows["true_visibility_m"], errors="coerce"))


def calibrate(tables: dict[tuple[str, int], pd.DataFrame]) -> dict[tuple[str, int | str], tuple[float, int]]:
    """(group, fold) -> (q, n): the conformal log10 factor of fold k from the |errors| of the group's other
    folds (n images), and (group, "all") from every fold (a model of the group on a new view). Each table
    gains calibrated_low_m / calibrated_high_m: its interval widened by its fold's q."""
    from camvis.job.visibility import calibrated, calibration_quantile  # numpy only, as _coverage

    out: dict[tuple[str, int | str], tuple[float, int]] = {}
    for group in sorted({g for g, _ in tables}):
        folds = sorted(f for g, f in tables if g == group)
        errors = {f: np.abs(_scored(tables[group, f])) for f in folds}
        for fold in [*folds, "all"]:
            pool = np.concatenate([errors[f] for f in folds if f != fold] or [np.zeros(0)])
            out[group, fold] = (calibration_quantile(pool), int(pool.size))
            if fold != "all":
                t = tables[group, fold]
                v = pd.to_numeric(t["predicted_visibility_m"], errors="coerce")
                t["calibrated_low_m"], t["calibrated_high_m"] = calibrated(v, t["visibility_low_m"],
                                                                           t["visibility_high_m"], out[group, fold][0])
    return out


def calibration_json(calibration: dict[tuple[str, int | str], tuple[float, int]]) -> dict[str, Any]:
    """visibility_calibration.json's content (None for an infinite q: too few images)."""
    from camvis.job.visibility import CONFIDENCE

    groups: dict[str, Any] = {}
    for (group, fold), (q, n) in calibration.items():
        groups.setdefault(group, {})[str(fold)] = {"log10_factor": q if math.isfinite(q) else None, "n_images": n}
    return {"confidence": CONFIDENCE, "statistic": "abs_log10_error", "rule": "split conformal, leave one view out: "
            "fold k's q from the group's other folds' held-out images; 'all' from every fold", "groups": groups}


def summarize(tables: dict[tuple[str, int], pd.DataFrame], confidence: float, n_boot: int = 1000,
              seed: int = 0, calibration: dict[tuple[str, int | str], tuple[float, int]] | None = None) -> pd.DataFrame:
    """Per group and fold, then per group over all folds ("all"): the two statistics with intervals."""
    calibration = calibrate(tables) if calibration is None else calibration
    rows = []
    for group in sorted({g for g, _ in tables}):
        folds = sorted(f for g, f in tables if g == group)
        for fold in [*folds, "all"]:
            frames = [tables[group, f] for f in (folds if fold == "all" else [fold])]
            errors = [_scored(t) for t in frames]
            errors = [e for e in errors if e.size]
            flags = pd.concat([t["flag"] for t in frames]).astype(str)
            n = sum(e.size for e in errors)
            share, covered = _coverage(frames)
            row: dict[str, Any] = {"group": group, "fold": fold, "n_images": n,
                                   "n_unscored": sum(len(t) for t in frames) - n,
                                   "n_flagged": int((flags != "ok").sum()), "n_poor_fit": int((flags == "poor_fit").sum()),
                                   "n_uncertain": int((flags == "uncertain").sum()),
                                   "n_intervals": covered, "interval_coverage": share,
                                   "calibration_log10_factor": calibration[group, fold][0],
                                   "n_calibration": calibration[group, fold][1],
                                   "calibrated_coverage": _coverage(frames, "calibrated")[0]}
            if n:
                point = _statistics(np.concatenate(errors))
                rng = np.random.default_rng([seed, *map(ord, group), 0 if fold == "all" else int(fold)])
                low, high = _interval(_statistics(_resample(errors, n_boot, rng)), confidence)
            else:
                point = low = high = np.full(3, math.nan)
            row |= {"median_abs_log10_error": point[0], "median_ci_low": low[0], "median_ci_high": high[0],
                    "within_factor2": point[1], "within_factor2_ci_low": low[1], "within_factor2_ci_high": high[1],
                    "median_signed_log10_error": point[2], "signed_ci_low": low[2], "signed_ci_high": high[2]}
            rows.append(row)
    return pd.DataFrame(rows, columns=SUMMARY_COLUMNS)


def _paired(tables: dict[tuple[str, int], pd.DataFrame], a: str, b: str) -> tuple[list[int], list[np.ndarray]]:
    """Common folds and, per fold, the (n, 2) errors of a and b on the images both scored."""
    folds, pairs = [], []
    for fold in sorted(f for g, f in tables if g == a and (b, f) in tables):
        ea = tables[a, fold][["image", "replicate", "abs_log10_error"]]
        eb = tables[b, fold][["image", "replicate", "abs_log10_error"]]
        joined = ea.merge(eb, on=["image", "replicate"], suffixes=("_a", "_b"))  # replicate r of a with r of b
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
            diffs = _statistics(both[0]) - _statistics(both[1])  # (n_boot, 3), paired resample by resample
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


POINT_COLUMNS = ["group", "fold", "image", "predicted_visibility_m", "true_visibility_m", "visibility_low_m",
                 "visibility_high_m", "flag"]


def points(tables: dict[tuple[str, int], pd.DataFrame]) -> pd.DataFrame:
    """Predicted against true visibility of every scored image, with its interval, group and fold (the figure)."""
    frames = [t.assign(group=g, fold=f) for (g, f), t in sorted(tables.items())]
    if not frames:
        return pd.DataFrame(columns=POINT_COLUMNS)
    frame = pd.concat(frames, ignore_index=True)
    keep = np.isfinite(pd.to_numeric(frame["abs_log10_error"], errors="coerce"))
    if "calibrated_low_m" in frame:  # the interval that counts the model's error (calibrate)
        frame["visibility_low_m"], frame["visibility_high_m"] = frame["calibrated_low_m"], frame["calibrated_high_m"]
    return frame.loc[keep, POINT_COLUMNS]


def write(jobs: Sequence[FinishedJob], directory: Path, confidence: float, seed: int | None) -> dict[str, Any] | None:
    """visibility_summary.csv, visibility_comparisons.csv and the calibration under `directory`; None when no
    finished job has a visibility.csv. Its "points" are what visibility.png shows (drawn by the caller, with
    every other figure at once: camvis.plots.prediction.visibility_figure)."""
    tables = load(jobs, directory)
    if not tables:
        return None
    calibration = calibrate(tables)
    summary = summarize(tables, confidence, seed=seed or 0, calibration=calibration)
    comparisons = compare(tables, confidence, seed=seed or 0)
    paths = {"summary": directory / "visibility_summary.csv", "comparisons": directory / "visibility_comparisons.csv",
             "calibration": directory / CALIBRATION_JSON}
    write_json(paths["calibration"], calibration_json(calibration))
    write_csv(summary, paths["summary"])
    write_csv(comparisons, paths["comparisons"])
    return {"summary": summary, "comparisons": comparisons, "paths": paths, "points": points(tables)}


def console_lines(result: dict[str, Any]) -> list[str]:
    """camvis-aggregate's lines per group over all folds: |error|, bias and interval coverage."""
    overall = result["summary"].query("fold == 'all'")
    return [f"visibility {r.group}: median |log10 error| {r.median_abs_log10_error:.3f} "
            f"[{r.median_ci_low:.3f}, {r.median_ci_high:.3f}], {r.within_factor2:.0%} within a factor 2, "
            f"bias {r.median_signed_log10_error:+.3f} [{r.signed_ci_low:+.3f}, {r.signed_ci_high:+.3f}], "
            f"intervals cover {_share(r.calibrated_coverage)} (patches only: {_share(r.interval_coverage)}) of "
            f"{r.n_intervals}, over {r.n_images} images"
            for r in overall.itertuples(index=False)]


def _share(value: float) -> str:
    return "-" if not math.isfinite(value) else f"{value:.0%}"


def markdown(result: dict[str, Any], confidence: float) -> list[str]:
    """The report's section: per group over all folds, then the comparisons."""
    s = result["summary"]
    from camvis.job.visibility import CONFIDENCE, UNCERTAIN_FACTOR  # as _coverage

    overall = s[s["fold"].astype(str) == "all"]
    table = pd.DataFrame({
        "group": overall["group"], "images": overall["n_images"],
        f"median abs log10 error ({confidence:.0%} CI)": [
            f"{m:.3f} [{lo:.3f}, {hi:.3f}]" for m, lo, hi in
            zip(overall["median_abs_log10_error"], overall["median_ci_low"], overall["median_ci_high"])],
        f"within factor 2 ({confidence:.0%} CI)": [
            f"{m:.1%} [{lo:.1%}, {hi:.1%}]" for m, lo, hi in
            zip(overall["within_factor2"], overall["within_factor2_ci_low"], overall["within_factor2_ci_high"])],
        f"bias: median signed log10 error ({confidence:.0%} CI)": [
            f"{m:+.3f} [{lo:+.3f}, {hi:+.3f}]" for m, lo, hi in
            zip(overall["median_signed_log10_error"], overall["signed_ci_low"], overall["signed_ci_high"])],
        f"interval coverage (nominal {CONFIDENCE:.0%})": [
            f"{_share(c)} of {n}" for c, n in zip(overall["calibrated_coverage"], overall["n_intervals"])],
        "patches only": [_share(c) for c in overall["interval_coverage"]],
        "flagged": overall["n_flagged"], "uncertain": overall["n_uncertain"], "poor fits": overall["n_poor_fit"]})
    lines = ["## Visibility in metres (held-out images)", "",
             "Per image e = abs(log10 V_pred - log10 V_true); bias: the median of the signed error (negative: "
             "underestimated, by a factor 10^-bias); intervals: bootstrap over images (within each fold). "
             "Interval coverage: the share of images whose true visibility lies in its own interval: the "
             "bootstrap over the image's patches (refitting the crossing) widened to at least a factor 10^q "
             "either side of the prediction, q the conformal quantile of abs log10 error over the group's "
             "other folds' held-out images (leave one view out; q per fold in visibility_summary.csv and "
             "visibility_calibration.json). Patches only: the bootstrap interval alone, which leaves out the "
             "model's error. Flagged: any flag but ok (poor_fit: pseudo-R2 "
             f"of the fit under 0.5, or its crossing outside the patches' depths; uncertain: a patch interval wider "
             f"than a factor {UNCERTAIN_FACTOR:g}). Per fold in visibility_summary.csv.", "",
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
