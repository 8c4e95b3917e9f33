"""camvis-launch: expand a grid, skip finished jobs, submit the rest (SLURM array + aggregate job)."""

from __future__ import annotations

import argparse
import sys

from camvis.cli import fail, new_parser
from camvis.cluster.site_options import launch_overrides, site_parser
from camvis.errors import CamvisError

EPILOG = """examples:
  camvis-launch configs/demo.yaml                  one SLURM array (throttled) + a dependent aggregate job
  camvis-launch configs/demo.yaml --dry-run        job table and the sbatch scripts; submits nothing
  camvis-launch configs/demo.yaml train.lr=1e-4 slurm.time=240 slurm.partition=gpu
                                                   overrides: base config keys, slurm.* for resources
  camvis-launch configs/demo.yaml --only group=cat --only fold=1,3
  camvis-launch configs/demo.yaml --dry-run "slurm.setup+=[module load cuda, source .venv/bin/activate]"
                                                   shell lines the job scripts run before the job, after
                                                   the profile's and the grid's (key=[...] replaces a list)
  camvis-launch configs/demo.yaml --smoke          one tiny job per group (<experiment>_smoke) on the real
                                                   queue with the site's resources, then its aggregate
  camvis-launch configs/demo.yaml --restart --only group=align   retrain the align jobs from scratch
  camvis-launch configs/demo.yaml --local          the same jobs on this machine (array_parallelism at once)
  camvis-launch configs/demo.yaml --debug          first job to run, in this process (pdb on errors)

Finished jobs (outputs/<exp>/<job>/scores.json with the same config hash) are skipped; jobs
still queued or running from an earlier launch are never submitted twice, whatever the flags.
A job resumes only a checkpoint of its own training config (data, model, train): after a
change there it trains from scratch and the earlier outputs move to
outputs/<exp>/<job>/previous/<time>_train-<old train hash>/; after an eval-only change it
re-evaluates best.pt without training (the earlier evaluation moves to previous/ too).
  --force    resubmit finished jobs: they re-evaluate best.pt, no training
  --restart  resubmit every selected job to retrain from scratch (earlier outputs kept under
             previous/); a --restart job that SLURM requeues resumes its own fresh training
A site profile (--profile FILE, $CAMVIS_PROFILE or camvis.yaml's profile: a YAML file with a `slurm:`
section, e.g. slurm/profiles/example-site.yaml) supplies defaults such as partition, account and setup
lines; the grid's slurm section wins over it, the site flags (--partition, --setup, ...) over both, and
key=value overrides over everything. Lists: slurm.setup=[...] replaces (the profile's lines too),
slurm.setup+=[...] appends; slurm.additional+={k: v} adds sbatch options.
"""


def build_parser() -> argparse.ArgumentParser:
    p = new_parser("camvis-launch", __doc__, EPILOG, outputs="where jobs write",
                     jobs_dir="where manifests and SLURM logs go", parents=[site_parser()])
    p.add_argument("grid", help="grid YAML, e.g. configs/demo.yaml")
    p.add_argument("overrides", nargs="*", metavar="key=value",
                   help="override a base config key (train.lr=1e-4) or a SLURM setting (slurm.time=60)")
    mode = p.add_mutually_exclusive_group()
    mode.add_argument("--local", action="store_true", help="run on this machine through submitit's local executor")
    mode.add_argument("--debug", action="store_true", help="run the first job to run in this process (pdb-able)")
    p.add_argument("--dry-run", action="store_true", help="print the job table and sbatch scripts; submit nothing")
    p.add_argument("--only", action="append", default=[], metavar="KEY=VALUE",
                   help="select jobs by name, group, fold, view or axis key (repeatable; fold=1,3 means either)")
    again = p.add_mutually_exclusive_group()
    again.add_argument("--force", action="store_true",
                       help="resubmit finished jobs too: they re-evaluate best.pt (no training)")
    again.add_argument("--restart", action="store_true",
                       help="retrain the selected jobs from scratch; earlier outputs move to <job>/previous/")
    p.add_argument("--smoke", action="store_true",
                   help="one tiny job per group (1 epoch on a few patches, a small bootstrap) as experiment "
                        "<experiment>_smoke, with the site's resources, then its aggregate")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_intermixed_args(argv)  # options and key=value in any order
    from camvis.cluster import launch
    from camvis.console import default_console

    console = default_console()
    mode = "local" if args.local else "debug" if args.debug else "slurm"
    try:
        result = launch.launch(args.grid, [*launch_overrides(args), *args.overrides], mode=mode,
                               dry_run=args.dry_run, only=args.only, force=args.force, restart=args.restart,
                               outputs=args.outputs, jobs_dir=args.jobs_dir, profile=args.profile,
                               console=console, smoke=args.smoke)
    except (CamvisError, OSError) as e:  # OSError: a full disk under submitit/TensorBoard
        return fail(e)
    launch.print_report(result, console)
    return 2 if result.problems else 1 if result.failed else 0  # problems: a dry run's preflight found some


if __name__ == "__main__":
    sys.exit(main())
