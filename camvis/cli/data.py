"""camvis-data: make, check and package the data (synth, check, build, info, check-store)."""

from __future__ import annotations

import argparse
import re
import sys
from typing import TYPE_CHECKING

from camvis.bounds import SEED_MAX, patch_size_problem
from camvis.cli import ERRORS, bounded, fail, new_parser
from camvis.errors import ConfigError, StoreError
from camvis.host import usable_cpus

if TYPE_CHECKING:
    from camvis.data.store import PatchStore

SYNTH_EXAMPLES = """\
examples:
  camvis-data synth data/raw/fresh                            # 4 views x 6 images, 192 x 288
  camvis-data synth data/raw/wide --views 9 --images-per-view 2 --size 384x576
  camvis-data synth data/raw/jp2 --images-per-view 2 --format jp2   # --size paper: camvis2's 4140 x 6198
  camvis-data synth data/raw/thick --vis-range 50 2000 --seed 3     # thick fog only
"""
CHECK_EXAMPLES = """\
examples:
  camvis-data check data/raw/demo   # every problem listed at once (exit 2), else a table per image
"""
BUILD_EXAMPLES = """\
examples:
  camvis-data build data/raw/demo data/processed/demo.zarr --factors 1 2 4 --patch-size 32 --patches-per-image 400
                                    # make demo's store: built with the same parameters, so reused as is
  camvis-data build data/raw/demo data/processed/paper.zarr     # camvis2's defaults (factors 2..32, patch 128)
  camvis-data build data/raw/demo data/processed/c2.zarr --factors 1 2 4 --patch-size 32 --preprocessing camvis2
                                    # camvis2's pipeline, rule for rule (--seed 42: and its draw)
  camvis-data build data/raw/demo data/processed/paper.zarr --patch-size 64 --force   # replace a store built otherwise
  camvis-data build data/raw/demo data/processed/slurm.zarr --factors 1 2 4 --patch-size 32 --slurm --cpus 2 --mem-gb 2 --time 10 --wait
                                    # as one SLURM job (workers = its CPUs), followed to its end
"""
INFO_EXAMPLES = """\
examples:
  camvis-data info data/processed/demo.zarr
  camvis-data info data/processed/demo.zarr --verify   # and read every block (as check-store)
  camvis-data info data/processed/demo.zarr --plot 1148_1_2018-01-30_1630 --out sampling.png   # one image's sampling
"""
CHECK_STORE_EXAMPLES = """\
examples:
  camvis-data check-store data/processed/demo.zarr   # reads every block; exit 2 on any problem
"""


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        return int(args.func(args))
    except ERRORS as e:  # OSError: one line for a path (camvis.io.os_error)
        return fail(e)


def _parser() -> argparse.ArgumentParser:
    parser = new_parser("camvis-data", "Make, check and package camvis data.",
                          "run `camvis-data COMMAND --help` for each command's options and examples")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    _add_synth(sub)
    _add_check(sub)
    _add_build(sub)
    _add_info(sub)
    _add_check_store(sub)
    return parser


def _sub(sub: argparse._SubParsersAction, name: str, text: str, examples: str,
         parents: list[argparse.ArgumentParser] | None = None) -> argparse.ArgumentParser:
    return sub.add_parser(name, help=text, description=text, epilog=examples, parents=parents or [],
                          formatter_class=argparse.RawDescriptionHelpFormatter)


def _add_synth(sub: argparse._SubParsersAction) -> None:
    p = _sub(sub, "synth", "Write a synthetic fog data set in camvis2's raw layout (images, masks, "
             "depth maps, visibility.csv).", SYNTH_EXAMPLES)
    p.add_argument("out_dir", metavar="OUT_DIR")
    p.add_argument("--views", type=bounded(int, 1, 10_000), default=4, help="number of camera views (folds) (default: 4)")
    p.add_argument("--images-per-view", type=bounded(int, 1, 1_000_000), default=6, help="(default: 6)")
    p.add_argument("--size", type=_size, default=(192, 288),
                   help="HxW in pixels, or 'paper' for 4140x6198 (default: 192x288)")
    p.add_argument("--vis-range", type=bounded(float, 0, exclusive_lo=True), nargs=2, default=(100.0, 50000.0), metavar=("MIN", "MAX"),
                   help="visibility range in metres, drawn log-uniform (default: 100 50000)")
    p.add_argument("--seed", type=bounded(int, 0, SEED_MAX), default=0, help="same seed, same bytes (default: 0)")
    p.add_argument("--format", choices=("png", "jpg", "jp2"), default="png", help="image format (default: png)")
    p.add_argument("--force", action="store_true",
                   help="replace a data set that camvis-data synth made in OUT_DIR (its synth.json); never other data")
    p.set_defaults(func=_synth)


def _add_check(sub: argparse._SubParsersAction) -> None:
    p = _sub(sub, "check", "Check a raw data dir: masks, depth maps, shapes, overlaps, labels.", CHECK_EXAMPLES)
    p.add_argument("raw_dir", metavar="RAW_DIR")
    p.set_defaults(func=_check)


def _add_build(sub: argparse._SubParsersAction) -> None:
    from camvis.cluster.site_options import site_parser

    p = _sub(sub, "build", "Build the Zarr patch store from a raw data dir (checks it first). With --slurm, the "
             "site options set the build job's resources (its --time: 60 minutes unless given).", BUILD_EXAMPLES,
             [site_parser()])
    p.add_argument("raw_dir", metavar="RAW_DIR")
    p.add_argument("store", metavar="STORE")
    p.add_argument("--factors", type=bounded(int, 1, 4096), nargs="+", default=[2, 4, 8, 16, 32],
                   help="demagnification factors, one pyramid level each (default: 2 4 8 16 32)")
    p.add_argument("--patch-size", type=_patch_size, default=128, help="(default: 128)")
    p.add_argument("--patches-per-image", type=bounded(int, 1), default=500, help="(default: 500)")
    p.add_argument("--seed", type=bounded(int, 0, SEED_MAX), default=0, help="patch sampling seed (default: 0)")
    p.add_argument("--force", action="store_true",
                   help="replace a camvis store built otherwise; never other data, a job folder or the raw folder")
    p.add_argument("--figure", metavar="IMAGE_NAME", help="image of the sampling figure (default: the first)")
    p.add_argument("--workers", type=bounded(int, 1, 4096), default=None,
                   help="processes building images at once, same bytes as 1 (default: the CPUs available)")
    p.add_argument("--compress", action="store_true",
                   help="level arrays with zstd, for archives and transfer (default: uncompressed, which jobs "
                        "memory-map; data.stage makes a mappable copy of either)")
    p.add_argument("--preprocessing", choices=("exact", "camvis2"), default="exact",
                   help="exact: camvis's rules; camvis2: camvis2's level sizes, Lanczos-4 resize (needs "
                        "camvis[camvis2]), ln depth, statistics, sampling and crop centres (default: exact)")
    job = p.add_argument_group("as a SLURM job (--slurm)")
    job.add_argument("--slurm", action="store_true", help="submit the build as one SLURM job and return")
    job.add_argument("--wait", action="store_true", help="with --slurm: wait for the job, exit 2 if it fails")
    job.add_argument("--cpus", type=int, metavar="N", help="CPUs of the job, its workers (default: --workers, else 4)")
    job.add_argument("--jobs-dir", help="the job's log goes to JOBS_DIR/store-builds/<id>/ (default: "
                                        "$CAMVIS_JOBS_DIR, else camvis.yaml's jobs_dir, else jobs)")
    p.set_defaults(func=_build)


def _add_info(sub: argparse._SubParsersAction) -> None:
    p = _sub(sub, "info", "Summarize a patch store; optionally plot one image's patch sampling.", INFO_EXAMPLES)
    p.add_argument("store", metavar="STORE")
    p.add_argument("--plot", metavar="IMAGE_NAME", help="draw camvis2's sampling figure for this image")
    p.add_argument("--out", metavar="PNG", help="where --plot writes (default: STORE.sampling.png)")
    p.add_argument("--verify", action="store_true", help="also read every block and check it (as check-store)")
    p.set_defaults(func=_info)


def _add_check_store(sub: argparse._SubParsersAction) -> None:
    p = _sub(sub, "check-store", "Verify a patch store: its schema, and every block of every array against "
             "the checksums recorded at build time.", CHECK_STORE_EXAMPLES)
    p.add_argument("store", metavar="STORE")
    p.set_defaults(func=_check_store)


def _patch_size(text: str) -> int:
    """--patch-size: one the model can train on (camvis.bounds.patch_size_problem), refused before any write."""
    value = bounded(int)(text)
    problem = patch_size_problem(value)
    if problem is not None:
        raise argparse.ArgumentTypeError(problem)
    return int(value)


def _size(text: str) -> tuple[int, int]:
    if text == "paper":
        from camvis.data.synth import PAPER_SIZE

        return PAPER_SIZE
    m = re.fullmatch(r"(\d+)x(\d+)", text)
    if not m:
        raise argparse.ArgumentTypeError(f"expected HxW (e.g. 192x288) or 'paper', got {text!r}")
    return int(m[1]), int(m[2])


def _synth(args: argparse.Namespace) -> int:
    from camvis.data.raw import VISIBILITY_CSV
    from camvis.data.synth import synthesize

    out = synthesize(args.out_dir, views=args.views, images_per_view=args.images_per_view, size=args.size,
                     vis_range=tuple(args.vis_range), seed=args.seed, image_format=args.format,
                     progress=sys.stderr.isatty(), force=args.force)
    print(f"wrote {args.views} views x {args.images_per_view} images of {args.size[0]} x {args.size[1]} "
          f"to {out} (true visibilities in {out / VISIBILITY_CSV})")
    return 0


def _check(args: argparse.Namespace) -> int:
    from camvis.console import default_console
    from camvis.data.raw import check

    report = check(args.raw_dir, progress=sys.stderr.isatty())
    console = default_console()
    console.print(report.table())
    for warning in report.warnings:
        console.print(f"warning: {warning}", markup=False, highlight=False)
    console.print(f"ok: {len(report.rows)} images, {len(report.views)} views", highlight=False)
    return 0


def _build(args: argparse.Namespace) -> int:
    if args.slurm:
        return _build_on_slurm(args)
    if args.wait:
        raise ConfigError("--wait goes with --slurm")
    from camvis.data import store
    from camvis.data import store_build

    built = store_build.build(args.raw_dir, args.store, factors=tuple(args.factors), patch_size=args.patch_size,
                              patches_per_image=args.patches_per_image, seed=args.seed, force=args.force,
                              progress=sys.stderr.isatty(), figure_image=args.figure,
                              workers=args.workers if args.workers is not None else usable_cpus(),
                              preprocessing=args.preprocessing, compress=args.compress)
    print(store.format_summary(built))
    figure = built.path.with_name(built.path.name + ".sampling.png") if built.path else None
    if figure is not None and figure.exists():
        print(f"sampling figure: {figure}")
    return 0


def _build_on_slurm(args: argparse.Namespace) -> int:
    """One SLURM job builds the store (camvis.cluster.store_job); its id and log are printed at once."""
    from pathlib import Path

    from camvis.cluster import store_job
    from camvis.cluster.launch import check_slurm
    from camvis.cluster.site_options import site_settings

    if args.force or args.figure or args.compress:
        raise ConfigError("--force, --figure and --compress are not taken by --slurm: build in place, or remove "
                          "the store first")
    build = store_job.cli_build(args.raw_dir, args.store, factors=args.factors, patch_size=args.patch_size,
                                patches_per_image=args.patches_per_image, seed=args.seed,
                                preprocessing=args.preprocessing, workers=args.workers, time=args.time,
                                cpus=args.cpus, mem_gb=args.mem_gb, site=site_settings(args))
    check_slurm()
    from camvis.cluster.sbatch import job_folder

    job = store_job.submit_build(build, job_folder(Path(args.jobs_dir) / "store-builds"),
                                 f"camvis-store-{Path(args.store).name}")
    print(f"submitted store build job {job.job_id} ({build.slurm.cpus_per_task} CPUs = workers): {args.store}")
    print(f"log: {job.stdout}   (errors: {job.stderr})")
    if not args.wait:
        print(f"next: squeue -j {job.job_id}   |   tail -f {job.stdout}")
        return 0
    print(store_job.wait(job))
    return 0


def _info(args: argparse.Namespace) -> int:
    from camvis.data import store

    if args.out and not args.plot:
        raise ConfigError("--out needs --plot IMAGE_NAME")
    opened = store.open_store(args.store)
    print(store.format_summary(opened))
    if args.verify:
        _verify(opened)
    if args.plot:
        print(f"wrote {store.sampling_figure(opened, args.plot, args.out)}")
    return 0


def _check_store(args: argparse.Namespace) -> int:
    from camvis.data import store

    _verify(store.open_store(args.store))  # open checks the schema, attributes and patch table
    return 0


def _verify(opened: PatchStore) -> None:
    """Reads every block of `opened`, prints a line per array; a StoreError on any problem."""
    from camvis.data import store_verify
    from camvis.progress import progress_bar

    total = sum(len(e["crc32"]) for e in opened.attrs["checksums"].values())
    with progress_bar("verifying blocks", total, enabled=sys.stderr.isatty(), transient=True) as advance:
        checks = store_verify.verify_blocks(opened.path, opened.attrs, advance)
    print(f"store {opened.path}: schema, attribute digest and patch table ok")
    width = max(len(c.name) for c in checks)
    for c in checks:
        print(f"  {c.name:<{width}}  {c.blocks:>5} blocks  {'ok' if not c.problems else 'FAILED'}")
    problems = [p for c in checks for p in c.problems]
    for problem in problems:
        print(f"problem: {problem.removesuffix('; ' + store_verify.REBUILD)}")
    blocks = sum(c.blocks for c in checks)
    if problems:
        raise StoreError(f"store {opened.path}: {len(problems)} of {blocks} blocks fail verification "
                         f"(listed above); {store_verify.REBUILD}")
    mib = sum(c.nbytes for c in checks) / 2**20
    print(f"ok: {len(checks)} arrays, {blocks} blocks, {mib:.1f} MiB decoded, every checksum matches")


if __name__ == "__main__":
    raise SystemExit(main())
