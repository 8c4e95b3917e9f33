"""`make demo`: the whole path on the embedded default, on this machine (paths relative to the cwd).

synthesize fog scenes -> check them -> build the Zarr store -> launch configs/demo.yaml
locally (train + evaluate every job) -> aggregate -> export the best cat model as a bundle and
predict its held-out view's images through it (camvis-predict) -> say where everything is.
Re-running is cheap: existing data, store and finished jobs are reused.

`--doc-figures` then regenerates the checkout's docs/figures/ from this run: every job re-evaluated by the
current code (--force), the figures copied (DOC_FIGURES), the run's summary.csv kept as
docs/figures/demo_summary.csv (and its visibility_summary.csv as demo_visibility_summary.csv: the docs' marked
figures in metres), the README's quoted table (between its demo-numbers markers) rewritten
from it, and the hash of the figures' inputs (doc_inputs_hash) recorded in docs/figures/inputs.json: the
demo test fails when that hash no longer matches (a committed figure is stale).
"""

from __future__ import annotations

import hashlib
import json
import sys
import time
from pathlib import Path

from camvis.bookkeeping.jobfolder import CONFUSION_PNG, LEARNING_CURVE
from camvis.cli import ERRORS, fail, new_parser
from camvis.errors import CamvisError

RAW = Path("data/raw/demo")
STORE = Path("data/processed/demo.zarr")
GRID = Path(__file__).resolve().parents[2] / "configs" / "demo.yaml"  # the checkout's grid
SYNTH = {"views": 4, "images_per_view": 6, "size": (192, 288), "seed": 0}
BUNDLE = Path("models/demo_cat")
BUILD = {"factors": (1, 2, 4), "patch_size": 32, "patches_per_image": 400, "seed": 0}
ROOT = GRID.parents[1]
DOCS = ROOT / "docs" / "figures"
DOC_FIGURES = {  # docs/figures/<name> <- outputs/demo/<path>
    "loss.png": "loss.png", "acc.png": "acc.png", "visibility.png": "visibility.png",
    CONFUSION_PNG: f"cat_fold1/{CONFUSION_PNG}", LEARNING_CURVE: f"cat_fold1/{LEARNING_CURVE}",
    "image_map.png": "cat_fold1/figures/1148_1_2018-01-30_1630_map.png",
}
FIGURE_CODE = ("camvis/plots", "camvis/results/aggregate_visibility.py", "camvis/job/visibility.py")
"""What draws the figures or computes what they show, besides the demo's own settings (doc_inputs_hash)."""
README_MARKERS = ("<!-- demo-numbers: written by `python -m camvis.cli.demo --doc-figures` -->",
                  "<!-- /demo-numbers -->")


def doc_inputs_hash() -> str:
    """sha256 of what docs/figures/ is drawn from: configs/demo.yaml, the data and store settings (SYNTH,
    BUILD) and the source of FIGURE_CODE. Not the pixels: a PNG's bytes vary with matplotlib's version."""
    digest = hashlib.sha256(json.dumps({"synth": SYNTH, "build": BUILD}, sort_keys=True).encode())
    files = [GRID] + sorted(f for entry in FIGURE_CODE for f in ([ROOT / entry] if (ROOT / entry).is_file()
                                                                  else (ROOT / entry).rglob("*.py")))
    for path in files:
        digest.update(path.relative_to(ROOT).as_posix().encode() + b"\0" + path.read_bytes())
    return digest.hexdigest()


def readme_table(summary) -> list[str]:
    """The README's quoted demo numbers from a summary.csv frame: per group the mean over folds of each
    metric and the per-fold accuracies (point estimates: reproduced exactly under train.threads)."""
    folds = sorted(c for c in summary.columns if c.startswith("fold_"))
    lines = ["| group | accuracy | macro F1 | BCE loss | accuracy per fold (" + ", ".join(f[5:] for f in folds) + ") |",
             "|---|---|---|---|---|"]
    for group, rows in summary.groupby("group", sort=True):
        by = rows.set_index("metric")
        per_fold = ", ".join(f"{by.loc['acc', f]:.4f}" for f in folds)
        lines.append(f"| {group} | {by.loc['acc', 'mean']:.4f} | {by.loc['f1', 'mean']:.4f} | "
                     f"{by.loc['loss', 'mean']:.4f} | {per_fold} |")
    return lines


def quoted_table(readme: str) -> list[str]:
    """The lines between the README's demo-numbers markers."""
    start, end = readme.index(README_MARKERS[0]), readme.index(README_MARKERS[1])
    return readme[start + len(README_MARKERS[0]):end].strip().splitlines()


def readme_mismatches(summary_csv: Path, readme_path: Path = ROOT / "README.md") -> list[str]:
    """One line per row where the README's quoted demo table (between README_MARKERS) differs from the
    table `summary_csv` gives at the printed precision (readme_table); [] when they agree."""
    import pandas as pd

    from camvis.errors import ConfigError

    if not summary_csv.is_file():
        raise ConfigError(f"{summary_csv}: no such file; run `make demo` (or python -m camvis.cli.demo) first")
    readme = readme_path.read_text()
    if not all(marker in readme for marker in README_MARKERS):
        raise ConfigError(f"{readme_path}: the demo-numbers markers are missing ({README_MARKERS[0]})")
    quoted, actual = quoted_table(readme), readme_table(pd.read_csv(summary_csv))
    lines = []
    for i in range(max(len(quoted), len(actual))):
        old = quoted[i] if i < len(quoted) else "(no line)"
        new = actual[i] if i < len(actual) else "(no line)"
        if old.strip() != new.strip():
            lines.append(f"README line {i + 1} of the demo table: {old.strip()}  ->  {summary_csv}: {new.strip()}")
    return lines


def write_doc_figures(out: Path, console) -> None:
    """docs/figures/ and the README's table from the finished demo under `out` (outputs/demo)."""
    import pandas as pd

    from camvis.io import write_bytes, write_text

    missing = [str(out / src) for src in (*DOC_FIGURES.values(), "summary.csv", "visibility_summary.csv")
               if not (out / src).is_file()]
    if missing:
        raise CamvisError(f"--doc-figures: the demo did not write {', '.join(missing)}")
    DOCS.mkdir(parents=True, exist_ok=True)
    for name, src in DOC_FIGURES.items():
        write_bytes(DOCS / name, (out / src).read_bytes())
    summary = pd.read_csv(out / "summary.csv")
    write_bytes(DOCS / "demo_summary.csv", (out / "summary.csv").read_bytes())
    write_bytes(DOCS / "demo_visibility_summary.csv", (out / "visibility_summary.csv").read_bytes())
    readme_path = ROOT / "README.md"
    readme = readme_path.read_text()
    start = readme.index(README_MARKERS[0]) + len(README_MARKERS[0])
    end = readme.index(README_MARKERS[1])
    write_text(readme_path, readme[:start] + "\n" + "\n".join(readme_table(summary)) + "\n" + readme[end:])
    write_text(DOCS / "inputs.json", json.dumps({"inputs_sha256": doc_inputs_hash(), "files": sorted(DOC_FIGURES),
                                                 "summary": "demo_summary.csv",
                                                 "visibility_summary": "demo_visibility_summary.csv"}, indent=1) + "\n")
    console.print(f"docs figures:    {DOCS} ({len(DOC_FIGURES)} figures, demo_summary.csv, "
                  f"demo_visibility_summary.csv, inputs.json); "
                  f"README's demo table rewritten")


def prepare_data(console) -> None:
    from camvis.data import raw
    from camvis.data import store
    from camvis.data import store_build
    from camvis.data import synth

    if not (RAW / raw.VISIBILITY_CSV).exists():
        console.rule("1/5 synthesize fog scenes")
        synth.synthesize(RAW, force=True, **SYNTH)
    console.rule("2/5 check the raw data")
    report = raw.check(RAW)
    console.print(f"{len(report.rows)} images in {len(report.views)} views: OK")
    console.rule("3/5 build the patch store")
    built = store_build.build(RAW, STORE, figure_image=None, **BUILD)
    console.print(store.format_summary(built))


def best_job(out: Path, group: str = "cat") -> tuple[Path, dict] | None:
    """The group's finished job with the best held-out accuracy, and its scores."""
    from camvis.bookkeeping.jobfolder import SCORES, read_json

    scored = [(d, read_json(d / SCORES)) for d in sorted(out.glob(f"{group}_fold*"))]
    scored = [(d, s) for d, s in scored if s and (s.get("metrics") or {}).get("acc") is not None]
    return max(scored, key=lambda item: item[1]["metrics"]["acc"], default=None)


def predict_held_out(console, out: Path) -> Path | None:
    """Export the best cat job as a bundle and predict its held-out view's images through it,
    printing predicted against true visibility."""
    import importlib.util
    import math
    import statistics

    import pandas as pd
    from rich.table import Table

    from camvis.job import export
    from camvis.job import predict
    from camvis.cluster import predict_launch
    from camvis.data import raw

    console.rule("5/5 export the best cat model, predict its held-out view through the bundle")
    best = best_job(out)
    if best is None:
        console.print("no finished cat job: nothing to export")
        return None
    job, scores = best
    onnx = importlib.util.find_spec("onnxruntime") is not None  # the optional extra camvis[onnx]
    export.export(job, BUNDLE, onnx=onnx)
    view = scores["view"]
    items, _ = predict.list_items([str(p) for p in sorted((RAW / "images").glob(f"{view}_*"))], None, str(RAW))
    target = out / f"predicted_{view}.csv"
    options = predict_launch.Options(model=str(BUNDLE.resolve()), runtime="onnx" if onnx else "torch", device="cpu")
    outcome = predict_launch.run(items, target, options, force=True)
    if outcome.problems:
        console.print(*(f"[red]error:[/] {line}" for line in outcome.problems), sep="\n")
    rows = pd.read_csv(target, dtype={"image": str})
    truth = raw.read_visibility(RAW) or {}
    table = Table(title=f"{job.name} (bundle {BUNDLE}, {options.runtime}): held-out view {view}", title_justify="left")
    for column in ("image", "true V m", "pred. V m", "|log10 err|", "flag", "R²"):
        table.add_column(column, justify="left" if column in ("image", "flag") else "right", no_wrap=True)
    errors = []
    for r in rows.itertuples(index=False):
        true = truth.get(r.image, math.nan)
        error = abs(math.log10(r.visibility_m / true)) if r.visibility_m > 0 and true > 0 else math.nan
        errors.append(error)
        table.add_row(r.image, f"{true:,.0f}", f"{r.visibility_m:,.0f}", f"{error:.3f}", r.flag,
                      f"{r.fit_quality:.2f}")
    console.print(table)
    finite = [e for e in errors if math.isfinite(e)]
    if finite:
        console.print(f"median |log10 error| {statistics.median(finite):.3f} over {len(finite)} images "
                      f"(within a factor 2: {sum(e <= math.log10(2) for e in finite)} of {len(finite)})")
    return target


def main(argv: list[str] | None = None) -> int:
    parser = new_parser("python -m camvis.cli.demo", __doc__)
    parser.add_argument("overrides", nargs="*", metavar="key=value", help="overrides for configs/demo.yaml")
    parser.add_argument("--doc-figures", action="store_true",
                        help="then re-evaluate every job and regenerate the checkout's docs/figures/ and the "
                             "README's demo table from this run (no overrides allowed)")
    parser.add_argument("--check-readme", action="store_true",
                        help="only compare the README's demo table with outputs/demo/summary.csv at the printed "
                             "precision (run nothing): exit 1 with one line per mismatch, 0 when they agree")
    args = parser.parse_args(argv)
    if args.check_readme:
        if args.overrides or args.doc_figures:
            return fail(CamvisError("--check-readme checks the demo as shipped: give no overrides, no --doc-figures"))
        try:
            mismatches = readme_mismatches(Path("outputs") / "demo" / "summary.csv")
        except ERRORS as e:
            return fail(e)
        print("\n".join(mismatches) if mismatches else "README's demo table matches outputs/demo/summary.csv")
        return 1 if mismatches else 0
    if args.doc_figures and args.overrides:
        return fail(CamvisError("--doc-figures documents the demo as shipped: give no key=value overrides"))

    from camvis.cluster.launch import launch
    from camvis.console import default_console

    console = default_console()  # piped or redirected (make demo > log): 160 columns, not 80
    start = time.perf_counter()
    try:
        prepare_data(console)
        console.rule("4/5 train and evaluate the demo grid locally, then aggregate")
        result = launch(GRID, args.overrides, mode="local", console=console, force=args.doc_figures)
    except ERRORS as e:  # OSError: one line for a path (camvis.io.os_error)
        return fail(e)
    out = Path("outputs") / result.grid.experiment
    try:
        predicted = predict_held_out(console, out)
        if args.doc_figures and not result.failed:
            write_doc_figures(out, console)
    except ERRORS as e:  # OSError: one line for a path (camvis.io.os_error)
        return fail(e)
    console.rule(f"done in {time.perf_counter() - start:.0f} s")
    if result.failed:
        console.print(f"[red]failed:[/] {result.failed}")
    console.print(f"summary table:   {out / 'summary.md'}")
    console.print(f"per-fold scores: {out / 'scores_per_fold.csv'}")
    console.print(f"figures:         {out}/*.png, {out}/<job>/figures/")
    console.print(f"TensorBoard:     tensorboard --logdir {out}")
    console.print(f"sampling figure: {STORE}.sampling.png")
    if predicted is not None:
        console.print(f"model bundle:    {BUNDLE}  (predictions: {predicted})")
    return 1 if result.failed else 0


if __name__ == "__main__":
    sys.exit(main())
