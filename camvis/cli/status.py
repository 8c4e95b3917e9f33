"""camvis-status: the state of an experiment's jobs (SLURM + progress.json), once or live."""

from __future__ import annotations

import argparse
import sys

from camvis.bookkeeping import experiment_files
from camvis.cluster import monitor
from camvis.cli import ERRORS, bounded, fail, new_parser
from camvis.config import check_name

_WHOLE_EXPERIMENT = "\0all"

EPILOG = """examples:
  camvis-status                          one row per experiment under jobs/
  camvis-status demo                     table by grid point: state, node, epoch, best, samples/s, ETA, efficiency
  camvis-status demo --watch 30          refresh every 30 s until every job has ended (Ctrl-C stops);
                                         piped or redirected: one timestamped snapshot after another
  camvis-status demo --watch --interval 60 --count 3 > status.log   three snapshots a minute apart
  camvis-status demo --logs cat_fold3    stdout/stderr tails (name or SLURM id like 123_4)
  camvis-status demo --logs cat_fold3 --follow   follow its stdout, across requeues, until it ends
  camvis-status demo --cancel cat_fold3  scancel one job (name or SLURM id like 123_4)
  camvis-status demo --cancel            scancel the whole experiment (arrays, aggregate and store build jobs)
"""


def build_parser() -> argparse.ArgumentParser:
    p = new_parser("camvis-status", __doc__, EPILOG, outputs="where the jobs write",
                     jobs_dir="where the manifests live")
    p.add_argument("experiment", nargs="?", help="experiment name (default: a summary of every experiment)")
    actions = p.add_mutually_exclusive_group()
    seconds = bounded(float, 0, 86_400, exclusive_lo=True)  # finite, positive, at most a day
    actions.add_argument("--watch", nargs="?", type=seconds, const=10.0, metavar="SECONDS",
                         help="refresh live every SECONDS (default 10) until every job has ended")  # fmt: skip
    actions.add_argument("--logs", metavar="JOB", help="print the stdout/stderr tails of JOB (name or SLURM id)")
    actions.add_argument("--cancel", nargs="?", const=_WHOLE_EXPERIMENT, metavar="JOB",
                         help="scancel JOB, or without JOB the whole experiment (no confirmation)")  # fmt: skip
    p.add_argument("--lines", type=bounded(int, 1, 100_000), default=40,
                   help="lines per log tail for --logs (default 40)")
    p.add_argument("--follow", action="store_true", help="with --logs: follow the job's stdout until it ends")
    p.add_argument("--interval", type=seconds, metavar="SECONDS",
                   help="seconds between refreshes of --watch (as its value) and polls of --follow (default 2)")
    p.add_argument("--count", type=bounded(int, 1), metavar="N", help="stop --watch or --follow after N snapshots or polls")
    return p


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if (args.logs or args.cancel) and not args.experiment:
        parser.error("--logs and --cancel need an EXPERIMENT")
    if args.follow and not args.logs:
        parser.error("--follow goes with --logs JOB")
    watch = args.interval if args.watch is not None and args.interval is not None else args.watch
    console = monitor.default_console()
    try:
        if args.experiment is not None:
            check_name("experiment", args.experiment)
        if args.logs and args.follow:
            monitor.follow_log(args.experiment, args.logs, args.jobs_dir, args.outputs,
                               every=args.interval or 2.0, count=args.count)
        elif args.logs:
            logs = experiment_files.job_logs(args.experiment, args.logs, args.jobs_dir, args.outputs, args.lines)
            monitor.print_logs(logs, console)
        elif args.cancel:
            job = None if args.cancel == _WHOLE_EXPERIMENT else args.cancel
            for line in monitor.cancel_experiment(args.experiment, job, args.jobs_dir, args.outputs):
                console.print(line)
        else:
            monitor.show(args.experiment, args.jobs_dir, args.outputs, console=console, watch=watch,
                         count=args.count)
    except ERRORS as e:  # OSError: one line for a path (camvis.io.os_error)
        return fail(e)
    return 0


if __name__ == "__main__":
    sys.exit(main())
