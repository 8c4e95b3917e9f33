"""camvis-aggregate: every finished job's bootstrapped scores -> summary tables, comparisons, figures."""

from __future__ import annotations

import argparse
import contextlib
import sys

from camvis.bounds import SEED_MAX
from camvis.cli import ERRORS, bounded, fail, new_parser
from camvis.figure_formats import parse_formats

EPILOG = """examples:
  camvis-aggregate demo                    writes outputs/demo/summary.md, *.csv, *.png
  camvis-aggregate demo --confidence 0.9   90% intervals
  camvis-aggregate demo --rope acc=0.02    a pair within 2 points of accuracy counts as equivalent
  camvis-aggregate demo --format png,pdf   each figure as a 200-dpi PNG and a vector PDF

writes under outputs/<experiment>/: summary.md (all tables), summary.csv (per group: per-fold scores, mean,
headline interval over folds, test-images-only interval, sd across folds and training seeds), comparisons.csv
(paired per-fold differences, corrected resampled t-test with its interval, Holm-adjusted p, test-only interval,
P(a better) / P(equivalent) / P(b better) of the correlated Bayesian t-test), posterior.png (its posteriors),
point_estimates.csv (one row per job), scores_per_fold.csv (camvis2's columns: one row per bootstrap
resample, then the group's headline interval), visibility_calibration.json (per group and fold: the model-error
factor of the per-image visibility intervals, carried into bundles), loss.png, acc.png, f1.png (per-fold points, mean and CI, significant pairs starred). Missing or failed jobs are listed, not fatal.
"""


def build_parser() -> argparse.ArgumentParser:
    p = new_parser("camvis-aggregate", __doc__, EPILOG, outputs="where the jobs wrote",
                     jobs_dir="where the manifests live")
    p.add_argument("experiment", help="experiment name (outputs/<experiment>/, jobs/<experiment>/manifest.json)")
    p.add_argument("--confidence", type=bounded(float, 0, 1, exclusive_lo=True), default=0.95,
                   help="level of the intervals and tests (default 0.95)")
    p.add_argument("--rope", type=_rope, default=None, metavar="acc=0.01,f1=0.01,loss=0.01",
                   help="region of practical equivalence per metric for the Bayesian comparison: a difference "
                        "within +-rope counts as equivalent (default 0.01 for each; state it before looking)")
    p.add_argument("--seed", type=bounded(int, 0, SEED_MAX), default=0,
                   help="seeds each fold's order of resamples, decoupling folds; pairs are unaffected (default 0)")
    p.add_argument("--no-figures", action="store_true", help="skip the figures")
    p.add_argument("--format", default="png", type=_formats, metavar="png,pdf,svg",
                   help="figure formats, comma-separated (default png; PNGs at 200 dpi, PDF and SVG vector)")
    return p


def _formats(text: str) -> tuple[str, ...]:
    try:
        return parse_formats(text)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from e


def _rope(text: str) -> dict[str, float]:
    from camvis.results.rope import parse_rope

    try:
        return parse_rope(text)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from e


FIGURE_MODULES = ("camvis.plots.aggregate", "camvis.plots.prediction")  # what camvis.results.aggregate draws with


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from camvis.forked import Prefork

    # forked before the heavy imports below: the child imports matplotlib while this process imports pandas
    # and computes, then draws the figures (a cold aggregate's wall time, less a third)
    with Prefork(FIGURE_MODULES) if not args.no_figures else contextlib.nullcontext() as prefork:
        from camvis.results.aggregate import aggregate  # after parsing: --help stays fast

        try:
            aggregate(args.experiment, args.outputs, args.jobs_dir, confidence=args.confidence, seed=args.seed,
                      rope=args.rope, figures=not args.no_figures, formats=args.format, prefork=prefork)
        except ERRORS as e:  # OSError: one line for a path (camvis.io.os_error)
            return fail(e)
    return 0


if __name__ == "__main__":
    sys.exit(main())
