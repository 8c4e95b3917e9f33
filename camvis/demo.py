"""`make demo`: the whole path on the embedded default, on this machine (paths relative to the cwd).

synthesize fog scenes -> check them -> build the Zarr store -> launch configs/demo.yaml
locally (train + evaluate every job) -> aggregate -> say where the tables and figures are.
Re-running is cheap: existing data, store and finished jobs are reused.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from camvis.errors import CamvisError

RAW = Path("data/raw/demo")
STORE = Path("data/processed/demo.zarr")
GRID = Path(__file__).resolve().parents[1] / "configs" / "demo.yaml"  # the checkout's grid
SYNTH = {"views": 4, "images_per_view": 6, "size": (192, 288), "seed": 0}
BUILD = {"factors": (1, 2, 4), "patch_size": 32, "patches_per_image": 400, "seed": 0}


def prepare_data(console) -> None:
    from camvis import raw, store, store_build, synth

    if not (RAW / "visibility.csv").exists():
        console.rule("1/4 synthesize fog scenes")
        synth.synthesize(RAW, force=True, **SYNTH)
    console.rule("2/4 check the raw data")
    report = raw.check(RAW)
    console.print(f"{len(report.rows)} images in {len(report.views)} views: OK")
    console.rule("3/4 build the patch store")
    built = store_build.build(RAW, STORE, figure_image=None, **BUILD)
    console.print(store.format_summary(built))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m camvis.demo", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("overrides", nargs="*", metavar="key=value", help="overrides for configs/demo.yaml")
    args = parser.parse_args(argv)

    from rich.console import Console

    from camvis.launch import launch

    console = Console()
    start = time.perf_counter()
    try:
        prepare_data(console)
        console.rule("4/4 train and evaluate the demo grid locally, then aggregate")
        result = launch(GRID, args.overrides, mode="local", console=console)
    except CamvisError as e:
        console.print(f"[red]error:[/] {e}")
        return 2
    out = Path("outputs") / result.grid.experiment
    console.rule(f"done in {time.perf_counter() - start:.0f} s")
    if result.failed:
        console.print(f"[red]failed:[/] {result.failed}")
    console.print(f"summary table:   {out / 'summary.md'}")
    console.print(f"per-fold scores: {out / 'scores_per_fold.csv'}")
    console.print(f"figures:         {out}/*.png, {out}/<job>/figures/")
    console.print(f"TensorBoard:     tensorboard --logdir {out}")
    console.print(f"sampling figure: {STORE}.sampling.png")
    return 1 if result.failed else 0


if __name__ == "__main__":
    sys.exit(main())
