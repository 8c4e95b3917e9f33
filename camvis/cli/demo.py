"""`make demo`: the whole path on the embedded default, on this machine (paths relative to the cwd).

synthesize fog scenes -> check them -> build the Zarr store -> launch configs/demo.yaml
locally (train + evaluate every job) -> aggregate -> export the best cat model as a bundle and
predict its held-out view's images through it (camvis-predict) -> say where everything is.
Re-running is cheap: existing data, store and finished jobs are reused.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

from camvis.cli import ERRORS, fail, new_parser

RAW = Path("data/raw/demo")
STORE = Path("data/processed/demo.zarr")
GRID = Path(__file__).resolve().parents[2] / "configs" / "demo.yaml"  # the checkout's grid
SYNTH = {"views": 4, "images_per_view": 6, "size": (192, 288), "seed": 0}
BUNDLE = Path("models/demo_cat")
BUILD = {"factors": (1, 2, 4), "patch_size": 32, "patches_per_image": 400, "seed": 0}


def prepare_data(console) -> None:
    from camvis.data import raw
    from camvis.data import store
    from camvis.data import store_build
    from camvis.data import synth

    if not (RAW / "visibility.csv").exists():
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
    from camvis.jobdir import SCORES, read_json

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
    args = parser.parse_args(argv)

    from rich.console import Console

    from camvis.cluster.launch import launch

    console = Console()
    start = time.perf_counter()
    try:
        prepare_data(console)
        console.rule("4/5 train and evaluate the demo grid locally, then aggregate")
        result = launch(GRID, args.overrides, mode="local", console=console)
    except ERRORS as e:  # OSError: one line for a path (camvis.io.os_error)
        return fail(e)
    out = Path("outputs") / result.grid.experiment
    try:
        predicted = predict_held_out(console, out)
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
