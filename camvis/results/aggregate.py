"""`camvis-aggregate`: every finished job's scores -> per-group summary, paired comparisons, figures.

Statistics (all vectorized over bootstrap resamples):
- per group and metric: the per-fold point estimates (scores.json), their mean, and a percentile
  bootstrap interval of that mean: resample r of the mean = mean over folds of each fold's r-th
  bootstrap value (bootstrap.csv);
- per pair of groups: paired per-fold differences over the folds both finished, a bootstrap
  interval from the paired resamples (same fold = same held-out patches and same bootstrap seed,
  so row r of both jobs resampled the same patches), and the corrected resampled t-test of
  Nadeau & Bengio (2003), Student's t with k-1 degrees of freedom (no scipy: incomplete beta), and
  Holm's adjusted p-value over the pairs of each metric (camvis.results.compare builds this table).
The statistics themselves (Student's t, the corrected t-test, the bootstrap intervals of a mean
over folds and of a paired difference, Holm) live in camvis.results.stats; this module reads the jobs,
builds the other tables and writes the files.

No torch here: this also runs as the dependent aggregate job and on login nodes.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import pandas as pd
from rich.console import Console
from rich.table import Table

from camvis.results import aggregate_visibility, run_facts
from camvis.cluster import jobfiles
from camvis.cluster import monitor
from camvis.results.compare import compare
from camvis.results.finished import FinishedJob, load_finished
from camvis.config import experiment_dir
from camvis.console import default_console, plural
from camvis.errors import CamvisError
from camvis.io import write_csv, write_text
from camvis.metrics import METRICS
from camvis.results.stats import fold_mean_ci

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
    """One row per finished job: group, fold, view, job and the point estimates (+ per-fold CI)."""
    rows = []
    for j in jobs:
        row: dict[str, Any] = {"group": j.group, "fold": j.fold, "view": j.view, "job": j.name, **j.metrics}
        for m, (lo, hi) in j.ci.items():
            row[f"{m}_ci_low"], row[f"{m}_ci_high"] = lo, hi
        rows.append(row)
    return pd.DataFrame(rows).sort_values(["group", "fold"], kind="stable").reset_index(drop=True)


def summarize(jobs: Sequence[FinishedJob], boots: np.ndarray, confidence: float) -> pd.DataFrame:
    """Per group and metric: per-fold point estimates, their mean, sd and a bootstrap CI of the mean,
    and the model-selection rule of its jobs (heldout scores are optimistic: the view chose the epoch) and
    their inputs' normalization statistics (per-fold: training views only; global: held-out view included)."""
    folds = sorted({j.fold for j in jobs})
    rows = []
    for group in sorted({j.group for j in jobs}):
        idx = [i for i, j in enumerate(jobs) if j.group == group]
        low, high = fold_mean_ci(boots[idx], confidence)
        for k, metric in enumerate(METRICS):
            points = {jobs[i].fold: jobs[i].metrics[metric] for i in idx}
            values = np.array(list(points.values()))
            rows.append({
                "group": group, "selection": "/".join(sorted({jobs[i].selection for i in idx})),
                "normalization": "/".join(sorted({jobs[i].normalization for i in idx})),
                "metric": metric, "n_folds": len(values), "mean": values.mean(),
                "ci_low": low[k], "ci_high": high[k], "sd": values.std(ddof=1) if len(values) > 1 else math.nan,
                **{f"fold_{f}": points.get(f, math.nan) for f in folds},
            })  # fmt: skip
    return pd.DataFrame(rows)


def _csv_field(value: object) -> str:
    """One CSV field, quoted when needed, with '%' escaped for the row format below."""
    text = str(value)
    if any(c in text for c in ',"\n'):
        text = '"' + text.replace('"', '""') + '"'
    return text.replace("%", "%%")


def camvis2_csv_text(jobs: Sequence[FinishedJob]) -> str:
    """camvis2's per-fold scores CSV (model_name,fold,view,loss,acc,f1,group; 4 decimals): one row per
    bootstrap resample per job, what its visualize_scores.py reads. One format operation per job."""
    parts = [",".join(CAMVIS2_COLUMNS) + "\n"]
    for j in jobs:
        head = ",".join(_csv_field(v) for v in (j.model_name, j.fold, j.view))
        row = f"{head},%.4f,%.4f,%.4f,{_csv_field(j.group)}\n"
        parts.append((row * len(j.boot)) % tuple(j.boot.ravel().tolist()))
    return "".join(parts)


# --------------------------------------------------------------------------- writing


def _fmt(value: Any, digits: int = 4) -> str:
    if isinstance(value, (float, np.floating)):
        return "-" if math.isnan(value) else f"{value:.{digits}g}" if abs(value) >= 1e4 else f"{value:.{digits}f}"
    return str(value)


def markdown_table(df: pd.DataFrame, digits: int = 4) -> str:
    """A GitHub Markdown table (no tabulate dependency)."""
    header = "| " + " | ".join(map(str, df.columns)) + " |"
    rule = "| " + " | ".join("---" for _ in df.columns) + " |"
    body = ["| " + " | ".join(_fmt(v, digits) for v in row) + " |" for row in df.itertuples(index=False)]
    return "\n".join([header, rule, *body])


def summary_wide(summary: pd.DataFrame, confidence: float) -> pd.DataFrame:
    """group x metric as 'mean [low, high]' for printing."""
    out = summary.assign(cell=[f"{m:.4f} [{lo:.4f}, {hi:.4f}]" for m, lo, hi in
                               zip(summary["mean"], summary["ci_low"], summary["ci_high"])])  # fmt: skip
    wide = out.pivot(index="group", columns="metric", values="cell")[list(METRICS)]
    wide.columns = [f"{m} ({confidence:.0%} CI)" for m in METRICS]
    first = summary.groupby("group")[["n_folds", "selection", "normalization"]].first()
    return wide.assign(folds=first["n_folds"], selection=first["selection"],
                       normalization=first["normalization"]).reset_index()


def comparisons_markdown(comparisons: pd.DataFrame, confidence: float) -> str:
    """The comparisons as a compact Markdown table: one row per pair and metric."""
    c = comparisons
    compact = pd.DataFrame({
        "metric": c["metric"], "a - b": c["group_a"] + " - " + c["group_b"], "folds": c["n_folds"],
        "mean a": c["mean_a"], "mean b": c["mean_b"],
        f"difference ({confidence:.0%} CI)": [f"{d:+.4f} [{lo:+.4f}, {hi:+.4f}]"
                                              for d, lo, hi in zip(c["mean_diff"], c["ci_low"], c["ci_high"])],
        "t": c["t"], "p": c["p_value"], "p (Holm)": c["p_holm"],
    })  # fmt: skip
    return markdown_table(compact)


def report_markdown(result: "AggregateResult", per_fold: pd.DataFrame) -> str:
    conf = result.confidence
    about = [result.description, ""] if result.description else []
    lines = [f"# {result.experiment}: aggregate", "", *about,
             f"{result.n_finished} of {plural(result.n_expected, 'job')} finished; {result.n_resamples} bootstrap resamples "
             f"per job; {conf:.0%} percentile bootstrap intervals.", "",
             "loss: binary cross-entropy from the logits, exact (no clipping); a score of exactly 0.5 counts as "
             "not visible, as camvis2's round. scores_per_fold.csv has camvis2's columns, but camvis2's own "
             "reported loss applied BCE-with-logits to the probabilities, so its loss values are not comparable "
             "with these (acc and f1 are).", "",
             "## Summary (mean over folds of the per-fold scores)", "",
             markdown_table(summary_wide(result.summary, conf)), ""]  # fmt: skip
    lines += run_facts.markdown(result.run_rows, run_facts.TIME_NOTE)
    for metric in METRICS:
        table = per_fold.pivot(index="group", columns="fold", values=metric)
        table.columns = [f"fold {c}" for c in table.columns]
        lines += [f"## Per-fold {metric}", "", markdown_table(table.reset_index()), ""]
    lines += ["## Paired comparisons (a - b over common folds)", "",
              "Interval: paired bootstrap of the mean difference (test-set resampling only, given the trained "
              "models). t and p: corrected resampled t-test (Nadeau & Bengio 2003) over the per-fold "
              "differences d, t = mean(d) / sqrt((1/k + n_test/n_train) var(d)), k-1 dof: it also counts "
              "fold-to-fold variation. p (Holm): Holm-adjusted over all pairs of the same metric, for "
              "judging many pairs at once (family-wise error). All columns in comparisons.csv.", ""]  # fmt: skip
    lines += [comparisons_markdown(result.comparisons, conf) if len(result.comparisons)
              else "(no two groups share a fold)", ""]  # fmt: skip
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
    figures: bool = True,
    formats: tuple[str, ...] = ("png",),
    console: Console | None = None,
) -> AggregateResult:
    """Aggregate every finished job of `experiment`; write CSV, Markdown and figures under
    outputs/<experiment>/ (atomically); list missing or failed jobs without failing."""
    if not 0.0 < confidence < 1.0:
        raise CamvisError(f"confidence must be in (0, 1), got {confidence}")
    console = console or default_console()
    directory = experiment_dir(experiment, outputs)  # a name, and its folder under outputs/
    status = monitor.collect(experiment, jobs, outputs)
    finished, missing = load_finished(status, outputs, show_progress=console.is_terminal)
    if not finished:
        listed = "; ".join(f"{n}: {w}" for n, w in list(missing.items())[:10])
        raise CamvisError(f"experiment {experiment!r}: no finished job to aggregate ({listed or 'no jobs'})")
    boots, notes = align_bootstraps(finished, seed)
    result = AggregateResult(
        experiment=experiment, directory=directory, summary_csv=directory / "summary.csv",
        comparisons_csv=directory / "comparisons.csv", point_estimates_csv=directory / "point_estimates.csv",
        camvis2_csv=directory / "scores_per_fold.csv", markdown=directory / "summary.md", figures={},
        n_expected=len(status.jobs), n_finished=len(finished), n_resamples=boots.shape[1], confidence=confidence,
        missing=missing, summary=summarize(finished, boots, confidence),
        comparisons=compare(finished, boots, confidence), notes=notes,
    )  # fmt: skip
    manifest = jobfiles.experiment_manifest(jobs, experiment)
    result.description = run_facts.description(manifest)
    result.run_rows = run_facts.group_rows(status, manifest, outputs, {j.name for j in finished})
    per_fold = per_fold_frame(finished)
    write_csv(result.summary, result.summary_csv)
    write_csv(result.comparisons, result.comparisons_csv)
    write_csv(per_fold, result.point_estimates_csv)
    write_text(result.camvis2_csv, camvis2_csv_text(finished))
    order = run_facts.group_order(manifest, [(j.name, j.group) for j in finished])
    result.visibility = aggregate_visibility.write(finished, directory, confidence, seed, figures, experiment,
                                                   formats, order)
    if result.visibility is not None:
        result.figure_files += result.visibility["paths"].get("figure_files", [])
    if figures:
        from camvis.plots.aggregate import metric_figure  # matplotlib only when drawing

        for metric in METRICS:
            path = directory / f"{metric}.png"  # beside the tables, as camvis2's <name>/<metric>.png
            written = metric_figure(per_fold, result.summary, metric, path, experiment, order=order,
                                    comparisons=result.comparisons, confidence=confidence, formats=formats)
            result.figures[metric] = written[0]
            result.figure_files += written
    write_text(result.markdown, report_markdown(result, per_fold))
    print_summary(result, console)
    return result


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

