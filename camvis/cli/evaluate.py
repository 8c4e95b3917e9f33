"""camvis-eval: evaluate a trained checkpoint on its held-out view (no training)."""

from __future__ import annotations

import argparse
import sys

from camvis.cli import ERRORS, config_and_overrides, fail, new_parser

EPILOG = """examples:
  camvis-eval configs/job.yaml                 # outputs/<experiment>/<name>/best.pt: the demo's cat_fold1
  camvis-eval configs/job.yaml name=cat_fold3 data.fold=3      # the demo's cat_fold3
  camvis-eval configs/job.yaml eval.bootstrap=2000 --checkpoint outputs/demo/cat_fold1/best.pt --job-dir outputs/rerun
                                               # other settings; the weights of one folder, the outputs in another

--checkpoint also takes a bare state_dict: camvis2's own .pt files, or a bundle's weights.pt.

Writes predictions.csv, confusion.csv/.png, bootstrap.csv, visibility.csv, figures/ and,
last, scores.json into the job directory; an earlier evaluation there of another config moves
to JOB_DIR/previous/<time>_eval-<its config hash>/ first.
"""


def main(argv: list[str] | None = None) -> int:
    parser = new_parser("camvis-eval", __doc__, EPILOG, outputs="root of the job outputs")
    parser.add_argument("config", nargs="?", help="job config YAML (the one the job was trained with)")
    parser.add_argument("overrides", nargs="*", metavar="key=value", help="dotted overrides, e.g. eval.bootstrap=2000")
    parser.add_argument("--job-dir", help="where to read best.pt and write the outputs "
                        "(default: OUTPUTS/<experiment>/<name>)")
    parser.add_argument("--checkpoint", help="weights to evaluate (default: JOB_DIR/best.pt)")
    args = parser.parse_args(argv)
    config, overrides = config_and_overrides(args.config, args.overrides)
    try:
        scores = _run(config, overrides, args)
    except ERRORS as e:  # OSError: one line for a path (camvis.io.os_error)
        return fail(e)
    if scores:
        _report(scores)
    return 0


def _run(config: str | None, overrides: list[str], args: argparse.Namespace) -> dict:
    from pathlib import Path

    from contextlib import ExitStack

    from camvis import locks
    from camvis.job import distributed
    from camvis.job.identity import keep_earlier_evaluation
    from camvis.job.task import main_first
    from camvis.config import job_dir, load_job_config
    from camvis.data.store import open_store
    from camvis.job.batches import BatchSource
    from camvis.job.evaluate import EvalInputs, evaluate_job
    from camvis.bookkeeping.jobfolder import BEST, SCORES

    cfg = load_job_config(config, overrides)
    directory = Path(args.job_dir) if args.job_dir else job_dir(cfg, args.outputs)
    env = distributed.setup(cfg.train.device)
    lock = ExitStack()
    try:
        def prepare() -> None:  # one writer per job folder: a running training or evaluation of it refuses us
            lock.enter_context(locks.job_lock(locks.job_lock_path(directory), cfg.name, "evaluating job"))
            keep_earlier_evaluation(directory, cfg)  # an evaluation of another config goes to previous/

        main_first(env, prepare)
        source = BatchSource(open_store(cfg.data.store), cfg.data.factors, env.device, fold=cfg.data.fold)
        inputs = EvalInputs.load(cfg, args.checkpoint or directory / BEST, source)
        scores = evaluate_job(cfg, directory, inputs)
    finally:
        lock.close()
        distributed.teardown()
    if env.is_main:
        print(f"wrote {directory / SCORES}")
        return scores
    return {}


def _report(scores: dict) -> None:
    parts = []
    for name, value in scores["metrics"].items():
        lo, hi = scores["ci"][name]
        ci = f" [{lo:.4f}, {hi:.4f}]" if lo is not None and hi is not None else ""
        parts.append(f"{name} {value:.4f}{ci}")
    print(f"held-out view {scores['view']} ({scores['n_val']} patches): " + ", ".join(parts))
    vis = scores["visibility"]
    if vis["median_abs_log10_error"] is not None:
        print(f"visibility: median |log10 error| {vis['median_abs_log10_error']:.3f} over {vis['n_scored']} images")


if __name__ == "__main__":
    sys.exit(main())
