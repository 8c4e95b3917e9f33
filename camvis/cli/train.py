"""camvis-train: train and evaluate one job (one grid point) from a job config."""

from __future__ import annotations

import sys

from camvis.cli import config_and_overrides, fail, new_parser
from camvis.errors import CamvisError

EPILOG = """examples:
  camvis-train configs/job.yaml     # the demo's cat_fold1: after make demo it is finished, so it re-evaluates
  camvis-train configs/job.yaml name=cat_fold1_lr1e-3 train.lr=1e-3   # a variant: outputs/demo/cat_fold1_lr1e-3/
  torchrun --nproc-per-node 2 -m camvis.cli.train configs/job.yaml name=cat_fold1_ddp   # 2 DDP ranks (gloo on CPU)

A rerun resumes outputs/<experiment>/<name>/checkpoint.pt when it was trained with the same
data, model and train sections; otherwise (or with --restart) it trains from scratch and the
earlier outputs move to outputs/<experiment>/<name>/previous/. An eval-only change re-evaluates.
A grid file (with axes:) is launched with camvis-launch, not camvis-train.
"""


def main(argv: list[str] | None = None) -> int:
    parser = new_parser("camvis-train", __doc__, EPILOG, outputs="root of the job outputs")
    parser.add_argument("config", nargs="?", help="job config YAML (sections data, model, train, eval); defaults if omitted")
    parser.add_argument("overrides", nargs="*", metavar="key=value", help="dotted overrides, e.g. train.lr=1e-4")
    parser.add_argument("--restart", action="store_true",
                        help="train from scratch; earlier outputs move to the job's previous/ folder")
    args = parser.parse_args(argv)
    config, overrides = config_and_overrides(args.config, args.overrides)
    try:
        from camvis.config import load_job_config
        from camvis.job.task import run_job
        from camvis.cluster.plan import new_run_id

        cfg = load_job_config(config, overrides)
        scores = run_job(cfg, args.outputs, restart=new_run_id() if args.restart else None)
    except (CamvisError, OSError) as e:  # OSError: a full disk under submitit/TensorBoard
        return fail(e)
    metrics = scores.get("metrics", {})
    print("held-out " + " ".join(f"{k} {v:.4f}" for k, v in metrics.items()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
