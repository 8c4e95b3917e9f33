"""The real replicate check of issue 21: the demo grid trained with N training seeds, where each seed's
mean over folds must lie inside the headline interval.

    .venv/bin/python benchmarks/bench_replicates.py --workdir /tmp/camvis-replicates \\
        --json benchmarks/results/replicates_demo.json          # 24 demo jobs: ~8-20 min on 2 shared cores

It runs `python -m camvis.cli.demo replicates=N`'s steps in --workdir (synthetic data, store, the local
launch of configs/demo.yaml with `replicates=N`, which aggregates at its end), then reads the run's
point_estimates.csv (one row per job) and summary.csv. Per group and metric it reports:
- the N seed means (the mean over folds of seed r's per-fold scores) and their spread (max - min);
- the pooled run's headline interval (summary.csv ci_low/ci_high: replicates averaged per fold) and whether
  every seed mean lies inside it;
- the stricter check a reader of the shipped demo (one seed) makes: per seed, the corrected t interval of
  that seed's own per-fold scores (what its headline interval is at least; ratio 1/(K-1)), and whether
  the other seeds' means lie inside it.
"""

from __future__ import annotations

NEEDS = """needs: the demo's CPU and about 2 GB of disk in --workdir; nothing else (it builds its own data).
"""

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

LEVEL = 0.95


def run_grid(workdir: Path, replicates: int) -> Path:
    """The demo's data, store and local launch with `replicates=N` in workdir; the experiment's outputs."""
    from camvis.cli import demo
    from camvis.cluster.launch import launch
    from camvis.console import default_console

    workdir.mkdir(parents=True, exist_ok=True)
    os.chdir(workdir)  # the demo's paths are relative to the cwd
    console = default_console()
    demo.prepare_data(console)
    result = launch(demo.GRID, [f"replicates={replicates}"], mode="local", console=console)
    if result.failed:
        raise SystemExit(f"bench_replicates: failed jobs: {result.failed}")
    return workdir / "outputs" / result.grid.experiment


def check(out: Path, level: float = LEVEL) -> dict:
    """Per group and metric: the seed means, the pooled headline interval, inside or not (see the module doc)."""
    import numpy as np
    import pandas as pd

    from camvis.metrics import METRICS
    from camvis.results.stats import corrected_t_interval

    per_job = pd.read_csv(out / "point_estimates.csv")
    summary = pd.read_csv(out / "summary.csv").set_index(["group", "metric"])
    groups = {}
    for group, rows in per_job.groupby("group", sort=True):
        folds = sorted(rows["fold"].unique())
        ratio = 1.0 / (len(folds) - 1)
        metrics = {}
        for metric in METRICS:
            table = rows.pivot(index="fold", columns="replicate", values=metric)  # (folds, seeds)
            seed_means = table.mean(axis=0)
            low, high = (float(summary.loc[(group, metric), c]) for c in ("ci_low", "ci_high"))
            t_low, t_high = corrected_t_interval(table.to_numpy(), ratio, level)
            per_seed = {str(r): {"corrected_t_interval": [float(t_low[i]), float(t_high[i])],
                                 "other_seeds_inside": bool(all(t_low[i] <= m <= t_high[i] for m in seed_means))}
                        for i, r in enumerate(table.columns)}
            metrics[metric] = {
                "seed_means": {str(r): float(m) for r, m in seed_means.items()},
                "seed_spread": float(seed_means.max() - seed_means.min()),
                "headline_interval": [low, high],
                "inside": bool(((seed_means >= low) & (seed_means <= high)).all()),
                "per_seed": per_seed,
                "sd_across_folds": float(summary.loc[(group, metric), "sd"]),
                "sd_across_seeds": float(summary.loc[(group, metric), "sd_seed"]),
            }
        groups[group] = {"folds": [int(f) for f in folds], "metrics": metrics}
    return groups


def visibility_coverage(out: Path) -> dict:
    """Per group over every held-out image of every seed (visibility_summary.csv's "all" rows): the share of
    true visibilities inside the per-image intervals, calibrated (what the aggregate and bundles state) and
    patch bootstrap only, at the nominal 90 %."""
    import pandas as pd

    rows = pd.read_csv(out / "visibility_summary.csv", dtype={"fold": str})
    rows = rows[rows["fold"] == "all"].set_index("group")
    return {g: {"images": int(r["n_intervals"]), "calibrated_coverage": float(r["calibrated_coverage"]),
                "patch_only_coverage": float(r["interval_coverage"]),
                "median_signed_log10_error": float(r["median_signed_log10_error"])} for g, r in rows.iterrows()}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(epilog=NEEDS, description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--workdir", type=Path, default=Path("/tmp/camvis-replicates"),
                        help="where the data, store, jobs and outputs go (default %(default)s)")
    parser.add_argument("--replicates", type=int, default=3, help="training seeds per group and fold (default 3)")
    parser.add_argument("--json", type=Path, help="write the result here")
    parser.add_argument("--check-only", action="store_true", help="only read an existing run in --workdir")
    args = parser.parse_args(argv)
    if args.replicates < 2:
        parser.error("--replicates: expected at least 2 seeds to compare")
    json_path = args.json.resolve() if args.json else None
    start = time.perf_counter()
    load = Path("/proc/loadavg").read_text().split()[:3] if Path("/proc/loadavg").exists() else []
    out = (args.workdir / "outputs" / "demo") if args.check_only else run_grid(args.workdir.resolve(), args.replicates)
    groups = check(out)
    inside = all(m["inside"] for g in groups.values() for m in g["metrics"].values())
    visibility = visibility_coverage(out)
    result = {
        "benchmark": "demo grid with replicate training seeds: seed means inside the headline interval",
        "command": f"python benchmarks/bench_replicates.py --replicates {args.replicates} --json "
                   "benchmarks/results/replicates_demo.json",
        "level": LEVEL, "replicates": args.replicates, "all_inside": inside, "groups": groups,
        "visibility_interval_coverage": visibility,
        "seconds": round(time.perf_counter() - start, 1), "loadavg_start": load,
        "loadavg_end": Path("/proc/loadavg").read_text().split()[:3] if load else [],
        "cpu_count": os.cpu_count(), "python": platform.python_version(),
    }  # fmt: skip
    text = json.dumps(result, indent=2) + "\n"
    if json_path:
        json_path.parent.mkdir(parents=True, exist_ok=True)
        json_path.write_text(text)
    for group, g in groups.items():
        for metric, m in g["metrics"].items():
            means = ", ".join(f"{v:.4f}" for v in m["seed_means"].values())
            lo, hi = m["headline_interval"]
            print(f"{group:6} {metric:4} seeds [{means}]  headline [{lo:.4f}, {hi:.4f}]  "
                  f"{'inside' if m['inside'] else 'OUTSIDE'}")
    return 0 if inside else 1


if __name__ == "__main__":
    sys.exit(main())
