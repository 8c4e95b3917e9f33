"""camvis-predict: visibility in metres on new webcam images, from a job folder or an exported bundle."""

from __future__ import annotations

import argparse
import sys

from camvis.bounds import SEED_MAX
from camvis.cli import ERRORS, bounded, fail, new_parser
from camvis.errors import CamvisError
from camvis.job.inputs import DEFAULT_MAX_PIXELS

EPILOG = """examples:
  camvis-predict outputs/demo/cat_fold1 data/raw/demo/images/1148_1_2018-01-30_1630.png --depth data/raw/demo/depth_maps/1148_1.npy
  camvis-predict models/demo_cat data/raw/demo/images/1148_2_2018-*.png --raw data/raw/demo --out vis.csv --map maps/
  camvis-predict models/demo_cat --raw data/raw/demo --runtime onnx         # every image of data/raw/demo/images
  camvis-predict models/demo_cat --raw data/raw/demo --local --chunk-size 12    # chunks as local jobs, resumable
  camvis-predict models/demo_cat --raw data/raw/demo --slurm --chunk-size 12 --parallel 2   # a SLURM array
  camvis-predict models/demo_cat --raw data/raw/demo data/raw/demo/images/1148_4_2019-* --stride 16 --map maps/
                                                                            # dense maps

MODEL: a job folder (best.pt + config.yaml; its store gives the normalization statistics) or a
bundle from camvis-export (verified: checksums and schema). Writes one row per image (image, view,
timestamp, visibility_m, flag, fit_quality, n_patches, true_visibility_m, log10_error, model,
runtime, path, sha256) to --out; a rerun skips the images already there (same real path, same
content), and a killed run resumes. --runtime auto: CUDA -> torch bf16; CPU -> the bundle's ONNX
graph through onnxruntime, else torch. A bad image is one `error:` line; the others are predicted;
exit status 2 if any failed (after all others are written), 0 otherwise.
flag: ok, poor_fit (fit_quality < 0.5), beyond_max (V is a lower bound: the farthest patch),
below_min (an upper bound: the nearest patch), inverted (no estimate).
"""


def build_parser() -> argparse.ArgumentParser:
    from camvis.cluster.site_options import site_parser

    p = new_parser("camvis-predict", __doc__, EPILOG, parents=[site_parser()])  # --time: per chunk job, default 60
    p.add_argument("model", help="job folder (best.pt + config.yaml) or bundle folder (camvis-export)")
    p.add_argument("images", nargs="*", help="image files or folders (default with --raw: RAW/images)")
    where = p.add_mutually_exclusive_group()
    where.add_argument("--depth", help="the depth map (.npy, metres, NaN = sky) of every image's view")
    where.add_argument("--raw", help="camvis2's raw folder: each image's depth map is depth_maps/{cam}_{pos}.npy")
    p.add_argument("--out", default="predictions_visibility.csv", help="output file (default: %(default)s)")
    p.add_argument("--format", choices=("csv", "jsonl"), default=None,
                   help="csv or JSON lines (default: from --out's suffix, .jsonl -> jsonl)")
    p.add_argument("--patches", type=bounded(int, 1, 1_000_000), default=500,
                   help="depth-balanced patches per image (default: 500)")
    p.add_argument("--stride", type=bounded(int, 1), help="a regular grid of centres every PX pixels instead (maps)")
    p.add_argument("--seed", type=bounded(int, 0, SEED_MAX), default=0, help="seed of the centres (default: 0)")
    p.add_argument("--map", metavar="DIR", help="write one PNG per image into DIR (new, empty, or made by "
                   "camvis-predict: its maps.json)")
    p.add_argument("--runtime", choices=("auto", "torch", "onnx"), default="auto",
                   help="auto (default: CUDA -> torch bf16; CPU -> the bundle's ONNX graph through onnxruntime "
                        "if it has one, else torch), torch, or onnx (pip install 'camvis[onnx]')")
    p.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto", help="torch device (default: auto)")
    p.add_argument("--batch-size", type=bounded(int, 1, 1_000_000), default=256,
                   help="patches per forward pass, several images' patches together (default: 256)")
    p.add_argument("--max-pixels", type=bounded(int, 1), default=DEFAULT_MAX_PIXELS,
                   help="refuse larger images before decoding them (default: %(default)s)")
    p.add_argument("--force", action="store_true",
                   help="start --out afresh instead of resuming it (only a camvis-predict output is replaced)")
    mode = p.add_mutually_exclusive_group()
    mode.add_argument("--local", action="store_true", help="chunks as local jobs (submitit), --parallel at once")
    mode.add_argument("--slurm", action="store_true", help="chunks as one SLURM job array (waits for it)")
    p.add_argument("--chunk-size", type=bounded(int, 1), default=100, help="images per chunk (default: 100)")
    p.add_argument("--parallel", type=bounded(int, 1, 10_000), default=4, help="chunks running at once (default: 4)")
    p.add_argument("--cpus", type=bounded(int, 1), default=1, help="CPUs per chunk job (default: 1)")
    p.add_argument("--gpus", type=bounded(int, 0, 64), default=0, help="GPUs per chunk job (default: 0)")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_intermixed_args(argv)  # images may follow options too
    try:
        outcome = _run(args)
    except ERRORS as e:  # OSError: one line for a path (camvis.io.os_error)
        return fail(e)
    for line in outcome.problems:
        print(f"error: {line}", file=sys.stderr)
    print(f"wrote {outcome.out}: {outcome.written} new image(s), {outcome.skipped} already there"
          + (f", {len(outcome.problems)} failed" if outcome.problems else ""))
    if args.raw:
        _score(outcome.out, args.raw, args.format)
    return 2 if outcome.problems else 0


def _score(out, raw_dir: str, fmt: str | None) -> None:
    """Synthetic data knows the truth (RAW/visibility.csv): print how far off the predictions are."""
    import math

    import numpy as np
    import pandas as pd

    from camvis.data.raw import read_visibility

    try:
        truth = read_visibility(raw_dir)
    except CamvisError:
        return
    if not truth or not out.exists():
        return
    rows = (pd.read_json(out, lines=True, dtype={"image": str}) if (fmt or out.suffix[1:]) == "jsonl"
            else pd.read_csv(out, dtype={"image": str}))
    from camvis.job.visibility import INTERVAL_COLUMNS, coverage

    true = rows["image"].map(truth).to_numpy(np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        signed = np.log10(rows["visibility_m"].to_numpy(np.float64) / true)
    signed = signed[np.isfinite(signed)]
    if signed.size:
        error = np.abs(signed)
        bounds = [pd.to_numeric(rows[c], errors="coerce") if c in rows else np.full(len(rows), np.nan)
                  for c in INTERVAL_COLUMNS]
        share, n = coverage(*bounds, true)
        covered = f"; intervals cover {share:.0%} of {n}" if n else ""
        print(f"against {raw_dir}/visibility.csv: median |log10 error| {np.median(error):.3f} over {error.size} "
              f"images, {np.mean(error <= math.log10(2)):.0%} within a factor 2; bias (median signed log10 "
              f"error) {np.median(signed):+.3f}{covered}")


def _run(args: argparse.Namespace):
    from pathlib import Path

    from camvis.cluster import predict_launch as pl
    from camvis.errors import PredictError
    from camvis.job.predict import list_items

    from camvis.cluster.site_options import site_settings

    site = site_settings(args, time=60) if args.slurm or args.local else None  # the profile, the site flags
    if args.map and Path(args.map).exists() and not Path(args.map).is_dir():
        raise PredictError(f"{args.map}: --map expects a folder for the maps, got a file")
    if args.raw:
        from camvis.data.raw import read_visibility

        read_visibility(args.raw)  # a broken visibility.csv is one line now, not one per chunk
    items, problems = list_items(args.images, args.depth, args.raw)
    out = Path(args.out)
    fmt = args.format or ("jsonl" if out.suffix == ".jsonl" else "csv")
    options = pl.Options(model=str(Path(args.model).resolve()), runtime=args.runtime, device=args.device,
                         patches=args.patches, stride=args.stride, seed=args.seed, batch_size=args.batch_size,
                         map_dir=str(Path(args.map).resolve()) if args.map else None, max_pixels=args.max_pixels,
                         raw_dir=str(Path(args.raw).resolve()) if args.raw else None)
    model = pl.load(options)  # a bad model fails here, before any job
    print(f"runtime: {model.runtime} ({model.runtime_note})", flush=True)
    resources = pl.Resources(parallel=args.parallel, time_min=site.time if site else 60, cpus_per_task=args.cpus,
                             gpus_per_node=args.gpus, mem_gb=site.mem_gb if site else None,
                             partition=site.partition if site else None, account=site.account if site else None,
                             qos=site.qos if site else None, constraint=site.constraint if site else None,
                             additional=dict(site.additional) if site else {}, setup=site.setup if site else ())
    mode = "local" if args.local else "slurm" if args.slurm else "here"
    outcome = pl.run(items, out, options, mode=mode, chunk_size=args.chunk_size, resources=resources, fmt=fmt,
                     model_id=model.model_id, force=args.force)
    outcome.problems = problems + outcome.problems
    return outcome


if __name__ == "__main__":
    sys.exit(main())
