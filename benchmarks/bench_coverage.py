"""How often camvis-aggregate's intervals and tests are right, on experiments simulated from a known model.

    .venv/bin/python benchmarks/bench_coverage.py --json benchmarks/results/coverage.json   # ~1 min on 2 cores

Generating model, per experiment, of group g's score on fold (view) f and training run s:

    score = mu_g + u_f + v_gf + c + c_g + w_gfs + e_gf

- u_f ~ N(0, view_sd^2): a view is easy or hard for every group (fold-to-fold spread);
- v_gf ~ N(0, interaction_sd^2): the true per-fold difference between groups varies by view;
- w_gfs ~ N(0, seed_sd^2): training-seed noise, one draw per replicate;
- e_gf ~ N(0, test_sd^2): test-set noise of the held-out images (the same images for every replicate);
  each job's bootstrap resamples are its score plus N(0, test_sd^2), what a bootstrap over images gives;
- c + c_g: the correlation between folds whose training sets overlap (rho = n_test/n_total = 1/K for
  leave-one-view-out), Nadeau & Bengio's model: c ~ N(0, rho/(1-rho) view_sd^2), shared by the groups like
  the views, and c_g ~ N(0, rho/(1-rho) (interaction_sd^2 + seed_sd^2/R + test_sd^2)), so that both a
  group's per-fold scores and two groups' per-fold differences are equicorrelated with rho.

The target of a group's interval is mu_g (the mean over views like these and training runs); of a
difference, mu_a - mu_b. Every statistic is camvis.results.stats' own, vectorized over experiments (the
"metrics" axis of those functions). Reported per scenario: coverage of the headline interval and of the
test-images-only interval; the corrected t-test's false-positive rate at a true difference of 0 for one
pair, and family-wise with Holm over the 6 pairs of 4 equal groups; the Bayesian test's verdicts
(probability >= 0.95) when the true difference lies inside the ROPE.
"""

from __future__ import annotations

NEEDS = """needs: nothing: it simulates its experiments (numpy and camvis.results.stats only).
"""

import argparse
import json
import os
import platform
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from camvis.results.stats import (bayes_probabilities, corrected_t, corrected_t_interval, fold_mean_ci,
                                  headline_interval, holm_adjust)

LEVEL = 0.95
ROPE = 0.01
DECIDE = 0.95  # a Bayesian verdict: one of the three probabilities at least this


@dataclass(frozen=True)
class Scenario:
    name: str
    folds: int
    replicates: int = 1
    view_sd: float = 0.05
    interaction_sd: float = 0.03
    seed_sd: float = 0.01
    test_sd: float = 0.005
    correlated: bool = True  # the training-overlap term c_g


SCENARIOS = (
    Scenario("demo: 4 folds", 4),
    Scenario("demo, 3 replicate seeds", 4, replicates=3),
    Scenario("paper: 9 folds", 9, view_sd=0.03, interaction_sd=0.02, test_sd=0.003),
    Scenario("paper, 3 replicate seeds", 9, replicates=3, view_sd=0.03, interaction_sd=0.02, test_sd=0.003),
    Scenario("folds all equal (test noise only), 4 folds", 4, view_sd=0, interaction_sd=0, seed_sd=0, correlated=False),
    Scenario("paper, small spread: 9 folds", 9, view_sd=0.01, interaction_sd=0.002, seed_sd=0.002, test_sd=0.002),
)


def simulate(s: Scenario, groups: int, mu: np.ndarray, n: int, resamples: int,
             rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """(per-fold replicate-mean scores (groups, K, n), bootstrap resamples (groups, K, resamples, n))."""
    k = s.folds
    rho = 1.0 / k
    view = rng.normal(0, s.view_sd, (1, k, n)) if s.view_sd else np.zeros((1, k, n))
    inter = rng.normal(0, s.interaction_sd, (groups, k, n)) if s.interaction_sd else 0.0
    seeds = rng.normal(0, s.seed_sd, (groups, k, s.replicates, n)).mean(axis=2) if s.seed_sd else 0.0
    test = rng.normal(0, s.test_sd, (groups, k, n))
    spread = s.interaction_sd**2 + s.seed_sd**2 / s.replicates + s.test_sd**2
    factor = rho / (1 - rho) if s.correlated else 0.0
    shared = rng.normal(0, np.sqrt(factor * spread), (groups, 1, n)) + rng.normal(0, np.sqrt(factor) * s.view_sd, (1, 1, n))
    scores = mu[:, None, None] + view + inter + seeds + test + shared
    boots = scores[:, :, None, :] + rng.normal(0, s.test_sd, (groups, k, resamples, n))
    return scores, boots


def covers(low: np.ndarray, high: np.ndarray, truth: float) -> float:
    return float(np.mean((low <= truth) & (truth <= high)))


def run(s: Scenario, n: int, resamples: int, seed: int) -> dict:
    rng = np.random.default_rng(seed)
    ratio = 1.0 / (s.folds - 1)  # n_test / n_train of leave-one-view-out
    out: dict = {"scenario": asdict(s)}
    # one group's mean: headline vs test-only coverage of mu = 0.85
    scores, boots = simulate(s, 1, np.array([0.85]), n, resamples, rng)
    low, high = headline_interval(scores[0], boots[0], ratio, LEVEL)
    tlow, thigh = fold_mean_ci(boots[0], LEVEL)
    out["group_mean"] = {"headline_coverage": covers(low, high, 0.85), "test_only_coverage": covers(tlow, thigh, 0.85),
                         "headline_median_width": float(np.median(high - low)),
                         "test_only_median_width": float(np.median(thigh - tlow))}
    # a pair with true difference 0 (4 equal groups for Holm), and one with a difference of 0.5 x ROPE
    scores, boots = simulate(s, 4, np.full(4, 0.85), n, resamples, rng)
    pairs = [(a, b) for a in range(4) for b in range(a + 1, 4)]
    p = np.stack([corrected_t(scores[a] - scores[b], ratio)[1] for a, b in pairs])  # (6, n)
    holm = np.apply_along_axis(holm_adjust, 0, p)
    dlow, dhigh = corrected_t_interval(scores[0] - scores[1], ratio, LEVEL)
    near, _ = simulate(s, 2, np.array([0.85 + ROPE / 2, 0.85]), n, 2, rng)
    verdicts = {}
    for name, diffs in (("true difference 0", scores[0] - scores[1]), ("true difference 0.5 x ROPE", near[0] - near[1])):
        probs = bayes_probabilities(diffs, ratio, np.array(ROPE), np.array(True))  # (3, n)
        verdicts[name] = {"declares_equivalent": float(np.mean(probs[1] >= DECIDE)),
                          "declares_a_winner": float(np.mean((probs[0] >= DECIDE) | (probs[2] >= DECIDE))),
                          "median_p_equivalent": float(np.median(probs[1]))}
    out["difference"] = {"interval_coverage_at_0": covers(dlow, dhigh, 0.0),
                         "false_positive_rate_one_pair": float(np.mean(p[0] < 1 - LEVEL)),
                         "familywise_false_positive_rate_holm_6_pairs": float(np.mean((holm < 1 - LEVEL).any(axis=0))),
                         "familywise_false_positive_rate_unadjusted_6_pairs": float(np.mean((p < 1 - LEVEL).any(axis=0)))}
    out["bayes_rope"] = {"rope": ROPE, "decide_at": DECIDE, **verdicts}
    return out


def main() -> int:
    p = argparse.ArgumentParser(epilog=NEEDS, description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--experiments", type=int, default=4000, help="simulated experiments per scenario")
    p.add_argument("--resamples", type=int, default=200, help="bootstrap resamples per simulated job")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", type=Path)
    args = p.parse_args()
    start = time.perf_counter()
    results = [run(s, args.experiments, args.resamples, args.seed + i) for i, s in enumerate(SCENARIOS)]
    report = {"benchmark": "coverage of camvis-aggregate's intervals and tests on simulated experiments",
              "command": "python benchmarks/bench_coverage.py " + " ".join(sys.argv[1:]), "level": LEVEL,
              "experiments_per_scenario": args.experiments, "resamples": args.resamples, "seed": args.seed,
              "targets": {"headline_coverage": [0.93, 0.97], "false_positive_rate": 0.05},
              "scenarios": results, "seconds": round(time.perf_counter() - start, 1),
              "machine": f"{platform.machine()}, {os.cpu_count()} cpus, Python {platform.python_version()}",
              "load_avg": [round(x, 2) for x in os.getloadavg()]}  # fmt: skip
    if args.json:
        args.json.write_text(json.dumps(report, indent=2) + "\n")
    print(f"{'scenario':44s} {'headline':>8s} {'test-only':>9s} {'FPR 1 pair':>10s} {'FWER Holm':>9s} "
          f"{'equiv@0':>8s} {'equiv@rope/2':>12s}")
    for r in results:
        g, d, b = r["group_mean"], r["difference"], r["bayes_rope"]
        print(f"{r['scenario']['name']:44s} {g['headline_coverage']:8.3f} {g['test_only_coverage']:9.3f} "
              f"{d['false_positive_rate_one_pair']:10.3f} {d['familywise_false_positive_rate_holm_6_pairs']:9.3f} "
              f"{b['true difference 0']['declares_equivalent']:8.3f} "
              f"{b['true difference 0.5 x ROPE']['declares_equivalent']:12.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
