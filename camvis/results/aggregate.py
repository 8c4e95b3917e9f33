"""`camvis-aggregate`: every finished job's scores -> per-group summary, paired comparisons, figures.

Statistics (docs/statistics.md says what each number answers):
- replicates (jobs of one group and fold differing in their training seed) are averaged into one
  score per fold (camvis.results.units); their spread is the training-seed variance;
- per group and metric: the mean over folds with the headline interval (corrected t over the folds,
  never narrower than the test-only interval; camvis.results.stats.headline_interval) and, labelled, the
  percentile bootstrap interval over test images only (resample r of the mean = mean over folds of each
  fold's r-th bootstrap value: bootstrap.csv); the sd across folds and across training seeds;
- per pair of groups (camvis.results.compare): the corrected t-test with its own interval, Holm, the
  test-only paired bootstrap interval, and the correlated Bayesian t-test with a ROPE.
This module reads the jobs, builds the tables and writes the files.

No torch here: this also runs as the dependent aggregate job and on login nodes.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import pandas as pd
from rich.console import Console
from rich.table import Table

from camvis.results import aggregate_visibility, run_facts
from camvis.results.markdown import markdown_table
from camvis.bookkeeping import experiment_files
from camvis.bookkeeping import status as status_model
from camvis.results.compare import compare, default_test_train_ratio, pair_ratio
from camvis.results.finished import FinishedJob, load_finished
from camvis.config import experiment_dir
from camvis.console import default_console, plural
from camvis.errors import CamvisError
from camvis.forked import Prefork, run_named
from camvis.io import write_bytes, write_csv, write_text
from camvis.metrics import METRIC_HIGH, METRIC_LOW, METRICS
from camvis.results.rope import DEFAULT_ROPE
from camvis.results.stats import fold_mean_ci, headline_interval
from camvis.results.units import Units, collapse

CAMVIS2_COLUMNS = ["model_name", "fold", "view", "loss", "acc", "f1", "group"]


def align_bootstraps(jobs: Sequence[FinishedJob], seed: int | None) -> tuple[np.ndarray, list[str]]:
    """Stack every job's resamples into (n_jobs, R, metrics), R = the smallest count (resample
    r stays resample r, so pairs stay paired). With a seed, each fold's resamples are put in a
    seeded order shared by every group on that fold: pairs are unchanged, and folds whose
    bootstraps drew the same index sequence (same eval seed and size) no longer move together."""
    counts = {len(j.boot) for j in jobs}
    r = min(counts)
    notes = []
    if len(counts) > 1:
        notes.append(f"bootstrap sizes differ ({', '.join(map(str, sorted(counts)))}): using the first {r} resamples")
    boots = np.stack([j.boot[:r] for j in jobs])
    if seed is not None:
        for fold in sorted({j.fold for j in jobs}):
            order = np.random.default_rng([seed, fold]).permutation(r)
            rows = [i for i, j in enumerate(jobs) if j.fold == fold]
            boots[rows] = boots[rows][:, order]
    return boots, notes


def per_fold_frame(jobs: Sequence[FinishedJob]) -> pd.DataFrame:
    """One row per finished job: group, fold, replicate, view, job and the point estimates (+ per-fold
    test-only CI)."""
    rows = []
    for j in jobs:
        row: dict[str, Any] = {"group": j.group, "fold": j.fold, "replicate": j.replicate or "-", "view": j.view,
                               "job": j.name, **j.metrics}
        for m, (lo, hi) in j.ci.items():
            row[f"{m}_ci_low"], row[f"{m}_ci_high"] = lo, hi
        rows.append(row)
    return pd.DataFrame(rows).sort_values(["group", "fold", "replicate"], kind="stable").reset_index(drop=True)


def summarize(units: Units, confidence: float) -> pd.DataFrame:
    """Per group and metric: per-fold scores (replicate means), their mean with the headline interval and
    the test-only interval, the sd across folds and across training seeds, and the model-selection rule of
    its jobs (heldout scores are optimistic: the view chose the epoch) and their inputs' normalization
    statistics (per-fold: training views only; global: held-out view included)."""
    folds = sorted({f for _, f in units.keys})
    default = default_test_train_ratio([j for js in units.jobs for j in js])
    rows = []
    for group in units.groups:
        idx = units.of_group(group)
        jobs = [j for i in idx for j in units.jobs[i]]
        values = units.points[idx]
        low, high = headline_interval(values, units.boots[idx], pair_ratio(jobs, default), confidence)
        low, high = np.clip(low, METRIC_LOW, METRIC_HIGH), np.clip(high, METRIC_LOW, METRIC_HIGH)  # acc <= 1
        test_low, test_high = fold_mean_ci(units.boots[idx], confidence)
        reps = units.n_replicates[idx]
        seed_sd = np.sqrt(np.nanmean(units.seed_var[idx], axis=0)) if (reps > 1).any() else np.full(len(METRICS), np.nan)
        for k, metric in enumerate(METRICS):
            points = {units.keys[i][1]: units.points[i, k] for i in idx}
            rows.append({
                "group": group, "selection": "/".join(sorted({j.selection for j in jobs})),
                "normalization": "/".join(sorted({j.normalization for j in jobs})),
                "metric": metric, "n_folds": len(idx),
                "n_replicates": f"{reps.min()}" if reps.min() == reps.max() else f"{reps.min()}-{reps.max()}",
                "mean": values[:, k].mean(), "ci_low": low[k], "ci_high": high[k],
                "test_ci_low": test_low[k], "test_ci_high": test_high[k],
                "sd": values[:, k].std(ddof=1) if len(idx) > 1 else math.nan, "sd_seed": seed_sd[k],
                **{f"fold_{f}": points.get(f, math.nan) for f in folds},
            })  # fmt: skip
    return pd.DataFrame(rows)


def _csv_field(value: object) -> str:
    """One CSV field, quoted when needed, with '%' escaped for the row format below."""
    text = str(value)
    if any(c in text for c in ',"\n'):
        text = '"' + text.replace('"', '""') + '"'
    return text.replace("%", "%%")


def camvis2_csv_text(jobs: Sequence[FinishedJob], headline: pd.DataFrame | None = None) -> str:
    """camvis2_csv_bytes as text."""
    return bytes(camvis2_csv_bytes(jobs, headline)).decode()


HEADLINE_COLUMNS = [f"group_{m}_{end}" for m in METRICS for end in ("ci_low", "ci_high")]
"""scores_per_fold.csv's columns after camvis2's: the row's group's headline interval (summary.csv's
ci_low/ci_high, the mean over folds), so the file's only interval is the headline one; the rows themselves
stay camvis2's test-only resamples."""


def headline_fields(summary: pd.DataFrame) -> dict[str, str]:
    """Per group, the HEADLINE_COLUMNS as CSV text (',low,high' per metric, 4 decimals; empty for NaN)."""
    by = summary.set_index(["group", "metric"])
    return {g: "".join(f",{_csv_number(by.loc[(g, m), end])}" for m in METRICS for end in ("ci_low", "ci_high"))
            for g in summary["group"].unique()}


def _csv_number(value: float) -> str:
    return "" if math.isnan(value) else f"{value:.4f}"


CSV_CHUNK_ROWS = 200_000  # rows laid out at once: bounds the temporaries (about 50 bytes a row)


def camvis2_csv_bytes(jobs: Sequence[FinishedJob], headline: pd.DataFrame | None = None) -> memoryview:
    """camvis2's per-fold scores CSV (model_name,fold,view,loss,acc,f1,group; 4 decimals): one row per
    bootstrap resample per job, what its visualize_scores.py reads; with `headline` (the summary frame)
    the HEADLINE_COLUMNS follow, the same on every row of a group. Laid out in one preallocated buffer
    (no copy of the whole text is ever joined): the numbers as bytes (_fixed_numbers), a chunk of jobs at a
    time, each job's rows one fixed-width block; a job with a value that layout cannot write exactly as
    '%.4f' would is formatted by Python, one format operation per job."""
    extra = headline_fields(headline) if headline is not None else {}
    header = (",".join(CAMVIS2_COLUMNS + (HEADLINE_COLUMNS if extra else [])) + "\n").encode()
    ends = [_row_ends(j, extra.get(j.group, "")) for j in jobs]
    chunks = list(_chunks([len(j.boot) for j in jobs]))
    laid = [_fixed_numbers([j.boot for j in jobs[a:b]]) for a, b in chunks]  # 20 bytes a row: 100 MB for 5M rows
    exact = np.concatenate([ok for _, ok in laid] or [np.zeros(0, bool)])
    texts = {i: _python_rows(jobs[i], h, t) for i, (h, t) in enumerate(ends) if not exact[i]}
    sizes = [len(texts[i]) if i in texts else len(j.boot) * (len(h) + 20 + len(t)) for i, (j, (h, t)) in
             enumerate(zip(jobs, ends))]
    offsets = np.cumsum([len(header), *sizes])
    out = np.empty(int(offsets[-1]), np.uint8)
    out[:len(header)] = np.frombuffer(header, np.uint8)
    for (a, b), (numbers, _) in zip(chunks, laid):
        at = 0
        for i in range(a, b):
            n, (head, tail) = len(jobs[i].boot), ends[i]
            block = out[offsets[i]:offsets[i + 1]]
            if i in texts:
                block[:] = np.frombuffer(texts[i], np.uint8)
            else:
                rows = block.reshape(n, -1)
                rows[:, :len(head)] = np.frombuffer(head, np.uint8)
                rows[:, len(head):len(head) + 20] = numbers[at:at + n]
                rows[:, len(head) + 20:] = np.frombuffer(tail, np.uint8)
            at += n
    return memoryview(out)


def _row_ends(job: FinishedJob, extra: str) -> tuple[bytes, bytes]:
    """The bytes before and after a job's three numbers on each of its rows."""
    fields = [_csv_field(v) for v in (job.model_name, job.fold, job.view)]
    return ((",".join(fields) + ",").replace("%%", "%").encode(),
            ("," + _csv_field(job.group) + extra + "\n").replace("%%", "%").encode())


def _python_rows(job: FinishedJob, head: bytes, tail: bytes) -> bytes:
    """A job's rows formatted by Python's '%.4f' (values the byte layout cannot write exactly)."""
    row = head.decode().replace("%", "%%") + "%.4f,%.4f,%.4f" + tail.decode().replace("%", "%%")
    return ((row * len(job.boot)) % tuple(job.boot.ravel().tolist())).encode()


def _chunks(rows: list[int]) -> Any:
    """(start, stop) of consecutive jobs with at most CSV_CHUNK_ROWS rows together (at least one job)."""
    start = 0
    while start < len(rows):
        stop, total = start, 0
        while stop < len(rows) and (total == 0 or total + rows[stop] <= CSV_CHUNK_ROWS):
            total += rows[stop]
            stop += 1
        yield start, stop
        start = stop


@functools.lru_cache(maxsize=1)
def _digits_table() -> np.ndarray:
    """"d.dddd" as bytes for every k in 0..99999 (k / 1e4): (100000, 6) uint8, 600 kB."""
    k = np.arange(100000)
    table = np.empty((100000, 6), np.uint8)
    table[:, 1] = ord(".")
    for d, power in enumerate((10000, 1000, 100, 10, 1)):
        table[:, d + (d > 0)] = k // power % 10 + ord("0")
    return table


def _fixed_numbers(boots: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """Every job's rows as "d.dddd,d.dddd,d.dddd" bytes (all rows, (N, 20) uint8) and, per job, whether
    they equal '%.4f' exactly: values in [0, 9.99995) and none within 1e-6 of a rounding tie (x.5 after
    scaling by 1e4, where the product's own rounding could decide), else Python formats that job."""
    values = np.concatenate(boots)
    scaled = values * 1e4
    k = np.rint(scaled)
    bad = (values < 0) | (k > 99999) | (np.abs(scaled - np.floor(scaled) - 0.5) < 1e-6)
    starts = np.cumsum([0, *map(len, boots)])[:-1]
    exact = ~np.logical_or.reduceat(bad.any(axis=1), starts)
    k = np.where(bad, 0, k).astype(np.int32)
    table = _digits_table()
    out = np.full((len(values), 20), ord(","), np.uint8)
    for c in range(3):
        out[:, 7 * c : 7 * c + 6] = table[k[:, c]]
    return out, exact


# --------------------------------------------------------------------------- writing


def summary_wide(summary: pd.DataFrame, confidence: float, low: str = "ci_low", high: str = "ci_high") -> pd.DataFrame:
    """group x metric as 'mean [low, high]' for printing (the headline interval unless told otherwise)."""
    out = summary.assign(cell=[f"{m:.4f} [{lo:.4f}, {hi:.4f}]" for m, lo, hi in
                               zip(summary["mean"], summary[low], summary[high])])  # fmt: skip
    wide = out.pivot(index="group", columns="metric", values="cell")[list(METRICS)]
    wide.columns = [f"{m} ({confidence:.0%} CI)" for m in METRICS]
    first = summary.groupby("group")[["n_folds", "n_replicates", "selection", "normalization"]].first()
    return wide.assign(folds=first["n_folds"], replicates=first["n_replicates"], selection=first["selection"],
                       normalization=first["normalization"]).reset_index()


def spread_table(summary: pd.DataFrame) -> pd.DataFrame:
    """Per group and metric: sd across folds beside sd across training seeds (replicates)."""
    return summary[["group", "metric", "n_folds", "n_replicates", "sd", "sd_seed"]].rename(
        columns={"sd": "sd across folds", "sd_seed": "sd across training seeds"})


def comparisons_markdown(comparisons: pd.DataFrame, confidence: float) -> str:
    """The comparisons as a compact Markdown table: one row per pair and metric."""
    c = comparisons
    compact = pd.DataFrame({
        "metric": c["metric"], "a - b": c["group_a"] + " - " + c["group_b"], "folds": c["n_folds"],
        "mean a": c["mean_a"], "mean b": c["mean_b"],
        f"difference ({confidence:.0%} CI)": [f"{d:+.4f} [{lo:+.4f}, {hi:+.4f}]"
                                              for d, lo, hi in zip(c["mean_diff"], c["ci_low"], c["ci_high"])],
        "t": c["t"], "p": c["p_value"], "p (Holm)": c["p_holm"],
        "test images only": [f"[{lo:+.4f}, {hi:+.4f}]" for lo, hi in zip(c["test_ci_low"], c["test_ci_high"])],
    })  # fmt: skip
    return markdown_table(compact)


def bayes_markdown(comparisons: pd.DataFrame) -> str:
    """P(a better), P(equivalent), P(b better) per pair and metric, with the ROPE used."""
    c = comparisons
    return markdown_table(pd.DataFrame({
        "metric": c["metric"], "a - b": c["group_a"] + " - " + c["group_b"], "ROPE": c["rope"],
        "P(a better)": c["p_a_better"], "P(equivalent)": c["p_equivalent"], "P(b better)": c["p_b_better"]}), 3)


SUMMARY_NOTE = (
    "Interval (headline): how far the mean over folds may be from the mean over views like these, counting "
    "the variation across folds (views), across training runs and across test images: a t interval over the "
    "per-fold scores with Nadeau & Bengio's correction for folds that share training data "
    "(sqrt((1/k + n_test/n_train) var), k-1 dof), never narrower than the test-only interval. "
    "Replicates (training seeds) are averaged per fold first. The test-images-only interval (bootstrap over "
    "each fold's held-out patches, given the trained models) is in summary.csv (test_ci_low, test_ci_high) "
    "and below; scores_per_fold.csv keeps camvis2's columns, one row per test-only resample, followed by "
    "its group's headline interval (group_<metric>_ci_low, group_<metric>_ci_high).")
COMPARISON_NOTE = (
    "Difference and interval: over the per-fold differences d (replicate means), mean(d) +- t_(k-1) "
    "sqrt((1/k + n_test/n_train) var(d)): the corrected resampled t-test (Nadeau & Bengio 2003) and its "
    "interval, so the interval excludes 0 exactly when p is below {alpha:g}. p (Holm): Holm-adjusted over "
    "all pairs of the same metric, for judging many pairs at once (family-wise error). Test images only: the "
    "paired bootstrap interval given the trained models (it leaves out folds and training runs). All columns "
    "in comparisons.csv.")
BAYES_NOTE = (
    "Correlated Bayesian t-test (Corani & Benavoli 2015, as baycomp's CorrelatedTTest): the posterior of the "
    "mean difference is Student's t (location mean(d), the corrected scale above, k-1 dof). ROPE: differences "
    "within +-ROPE count as practically equivalent (`--rope`, defaults acc 0.01, f1 0.01, loss 0.01). "
    "P(a better) + P(equivalent) + P(b better) = 1; for loss lower is better.")


def report_markdown(result: "AggregateResult", per_fold: pd.DataFrame) -> str:
    conf = result.confidence
    about = [result.description, ""] if result.description else []
    lines = [f"# {result.experiment}: aggregate", "", *about,
             f"{result.n_finished} of {plural(result.n_expected, 'job')} finished; {result.n_resamples} bootstrap resamples "
             f"per job; {conf:.0%} intervals.", "",
             "loss: binary cross-entropy from the logits, exact (no clipping); a score of exactly 0.5 counts as "
             "not visible, as camvis2's round. scores_per_fold.csv has camvis2's columns, but camvis2's own "
             "reported loss applied BCE-with-logits to the probabilities, so its loss values are not comparable "
             "with these (acc and f1 are).", "",
             "## Summary (mean over folds of the per-fold scores)", "", SUMMARY_NOTE, "",
             markdown_table(summary_wide(result.summary, conf)), "",
             "### Test images only, given the trained models", "",
             markdown_table(summary_wide(result.summary, conf, "test_ci_low", "test_ci_high")), "",
             "### Spread across folds and training seeds", "", markdown_table(spread_table(result.summary)), ""]
    lines += run_facts.markdown(result.run_rows, run_facts.TIME_NOTE)
    for metric in METRICS:
        table = per_fold.pivot_table(index="group", columns="fold", values=metric, aggfunc="mean")
        table.columns = [f"fold {c}" for c in table.columns]
        lines += [f"## Per-fold {metric}", "", markdown_table(table.reset_index()), ""]
    lines += ["## Paired comparisons (a - b over common folds)", "",
              COMPARISON_NOTE.format(alpha=round(1 - conf, 6)), ""]
    if len(result.comparisons):
        lines += [comparisons_markdown(result.comparisons, conf), "", "### Practical equivalence (Bayesian)", "",
                  BAYES_NOTE, "", bayes_markdown(result.comparisons), ""]
    else:
        lines += ["(no two groups share a fold)", ""]
    if result.visibility is not None:
        lines += aggregate_visibility.markdown(result.visibility, conf)
    if result.figures:
        lines += ["## Figures", "", *(f"![{m}]({p.name})" for m, p in result.figures.items()), ""]
    if result.missing:
        lines += ["## Missing or failed jobs", "", *(f"- {n}: {why}" for n, why in result.missing.items()), ""]
    if result.notes:
        lines += ["## Notes", "", *(f"- {n}" for n in result.notes), ""]
    return "\n".join(lines)


# --------------------------------------------------------------------------- the command


@dataclass
class AggregateResult:
    experiment: str
    directory: Path
    summary_csv: Path
    comparisons_csv: Path
    point_estimates_csv: Path
    camvis2_csv: Path
    markdown: Path
    figures: dict[str, Path]
    n_expected: int
    n_finished: int
    n_resamples: int
    confidence: float
    missing: dict[str, str]
    summary: pd.DataFrame = field(repr=False)
    comparisons: pd.DataFrame = field(repr=False)
    notes: list[str] = field(default_factory=list)
    visibility: dict[str, Any] | None = field(default=None, repr=False)  # camvis.results.aggregate_visibility.write
    description: str = ""  # the grid's description (manifest)
    figure_files: list[Path] = field(default_factory=list)  # every format of every metric figure
    run_rows: list[dict[str, str]] = field(default_factory=list, repr=False)  # run_facts.group_rows

    def paths(self) -> dict[str, Path]:
        return {"summary_csv": self.summary_csv, "comparisons_csv": self.comparisons_csv,
                "point_estimates_csv": self.point_estimates_csv, "camvis2_csv": self.camvis2_csv,
                "markdown": self.markdown, **{f"figure_{m}": p for m, p in self.figures.items()}}  # fmt: skip


def aggregate(
    experiment: str,
    outputs: str | Path = "outputs",
    jobs: str | Path = "jobs",
    *,
    confidence: float = 0.95,
    seed: int | None = 0,
    rope: dict[str, float] | None = None,
    figures: bool = True,
    formats: tuple[str, ...] = ("png",),
    console: Console | None = None,
    prefork: Prefork | None = None,
) -> AggregateResult:
    """Aggregate every finished job of `experiment`; write CSV, Markdown and figures under
    outputs/<experiment>/ (atomically); list missing or failed jobs without failing. `prefork`: a
    camvis.forked.Prefork started before the imports, which draws the figures."""
    if not 0.0 < confidence < 1.0:
        raise CamvisError(f"confidence must be in (0, 1), got {confidence}")
    console = console or default_console()
    directory = experiment_dir(experiment, outputs)  # a name, and its folder under outputs/
    status = status_model.collect(experiment, jobs, outputs)
    finished, missing = load_finished(status, outputs, show_progress=console.is_terminal)
    if not finished:
        listed = "; ".join(f"{n}: {w}" for n, w in list(missing.items())[:10])
        raise CamvisError(f"experiment {experiment!r}: no finished job to aggregate ({listed or 'no jobs'})")
    boots, notes = align_bootstraps(finished, seed)
    units = collapse(finished, boots)
    result = AggregateResult(
        experiment=experiment, directory=directory, summary_csv=directory / "summary.csv",
        comparisons_csv=directory / "comparisons.csv", point_estimates_csv=directory / "point_estimates.csv",
        camvis2_csv=directory / "scores_per_fold.csv", markdown=directory / "summary.md", figures={},
        n_expected=len(status.jobs), n_finished=len(finished), n_resamples=boots.shape[1], confidence=confidence,
        missing=missing, summary=summarize(units, confidence),
        comparisons=compare(units, confidence, rope or DEFAULT_ROPE), notes=notes,
    )  # fmt: skip
    manifest = experiment_files.experiment_manifest(jobs, experiment)
    result.description = run_facts.description(manifest)
    result.run_rows = run_facts.group_rows(status, manifest, outputs, {j.name for j in finished})
    per_fold = per_fold_frame(finished)
    write_csv(result.summary, result.summary_csv)
    write_csv(result.comparisons, result.comparisons_csv)
    write_csv(per_fold, result.point_estimates_csv)
    write_bytes(result.camvis2_csv, camvis2_csv_bytes(finished, result.summary))
    order = run_facts.group_order(manifest, [(j.name, j.group) for j in finished])
    result.visibility = aggregate_visibility.write(finished, directory, confidence, seed)
    if figures:
        draw_figures(result, per_fold, order, formats, prefork)
    write_text(result.markdown, report_markdown(result, per_fold))
    print_summary(result, console)
    return result


def draw_figures(result: AggregateResult, per_fold: pd.DataFrame, order: Sequence[str], formats: tuple[str, ...],
                 prefork: Prefork | None = None) -> None:
    """Every figure of the aggregate, side by side in forked processes (drawing is most of the time); in
    `prefork`'s child when given, which imported matplotlib while this process computed."""
    directory, style = result.directory, {"formats": formats}
    calls = {metric: ("camvis.plots.aggregate", "metric_figure",  # beside the tables, as camvis2's <metric>.png
                      (per_fold, result.summary, metric, directory / f"{metric}.png", result.experiment),
                      {"order": order, "comparisons": result.comparisons, "confidence": result.confidence, **style})
             for metric in METRICS}
    if len(result.comparisons) and result.comparisons["se"].notna().any():
        calls["posterior"] = ("camvis.plots.aggregate", "posterior_figure",
                              (result.comparisons, directory / "posterior.png", result.experiment), style)
    if result.visibility is not None:
        calls["visibility"] = ("camvis.plots.prediction", "visibility_figure",
                               (result.visibility["points"], result.visibility["summary"], directory / "visibility.png",
                                result.experiment), {"order": order, **style})
    drawn = run_named(list(calls.values()), [f"figure {name}" for name in calls], prefork)
    for name, written in zip(calls, drawn):
        if name == "visibility":
            result.visibility["paths"]["figure"], result.visibility["paths"]["figure_files"] = written[0], written
        else:
            result.figures[name] = written[0]
        result.figure_files += written


def print_summary(result: AggregateResult, console: Console) -> None:
    table = Table(title=f"{result.experiment}: {result.n_finished}/{result.n_expected} jobs", title_justify="left")
    wide = summary_wide(result.summary, result.confidence)
    for column in wide.columns:
        table.add_column(str(column), justify="left" if column == "group" else "right")
    for row in wide.itertuples(index=False):
        table.add_row(*map(str, row))
    console.print(table)
    if result.visibility is not None:  # metres: per group over all folds
        for line in aggregate_visibility.console_lines(result.visibility):
            console.print(line, markup=False, highlight=False)
    for name, why in result.missing.items():
        console.print(f"[yellow]warning:[/] {name}: {why}")
    for note in result.notes:
        console.print(f"[yellow]note:[/] {note}")
    names = [result.summary_csv, result.comparisons_csv, result.point_estimates_csv, result.camvis2_csv,
             *(result.figure_files or result.figures.values())]  # fmt: skip
    console.print(f"wrote {result.markdown} and, beside it, {', '.join(p.name for p in names)}", soft_wrap=True)

