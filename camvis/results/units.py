"""Replicates folded into one unit per (group, fold): what the tests and the headline interval count.

Jobs of one group and fold that differ only in their training seed (camvis.results.finished's
`replicate`) are replicates: their point estimates are averaged into one per-fold score (the unit the
corrected t-test and the headline interval see, so k stays the number of folds), their bootstrap
resamples averaged resample by resample (the test-only interval, given those trained models), and
their spread kept as the training-seed variance (ddof 1; NaN for a single run). No torch here.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np

from camvis.metrics import METRICS
from camvis.results.finished import FinishedJob


@dataclass(frozen=True)
class Units:
    keys: list[tuple[str, int]]  # (group, fold), sorted
    jobs: list[list[FinishedJob]]  # each unit's replicates
    points: np.ndarray  # (units, metrics): replicate mean of the point estimates
    boots: np.ndarray  # (units, R, metrics): replicate mean of resample r
    seed_var: np.ndarray  # (units, metrics): variance across replicates, NaN for one run

    def of_group(self, group: str) -> list[int]:
        return [i for i, (g, _) in enumerate(self.keys) if g == group]

    @property
    def groups(self) -> list[str]:
        return sorted({g for g, _ in self.keys})

    @property
    def n_replicates(self) -> np.ndarray:
        return np.array([len(j) for j in self.jobs])


def collapse(jobs: Sequence[FinishedJob], boots: np.ndarray) -> Units:
    """One unit per (group, fold); boots: (jobs, R, metrics) aligned with `jobs`."""
    where: dict[tuple[str, int], list[int]] = {}
    for i, j in enumerate(jobs):
        where.setdefault((j.group, j.fold), []).append(i)
    keys = sorted(where)
    metrics = np.array([[j.metrics[m] for m in METRICS] for j in jobs]).reshape(len(jobs), len(METRICS))
    if all(len(where[k]) == 1 for k in keys):  # no replicates: a gather, no averaging
        order = [where[k][0] for k in keys]
        return Units(keys, [[jobs[i]] for i in order], metrics[order], boots[order],
                     np.full((len(keys), len(METRICS)), np.nan))
    points = np.stack([metrics[where[k]].mean(axis=0) for k in keys])
    means = np.stack([boots[where[k]].mean(axis=0) for k in keys])
    seed_var = np.stack([metrics[where[k]].var(axis=0, ddof=1) if len(where[k]) > 1
                         else np.full(len(METRICS), np.nan) for k in keys])
    return Units(keys, [[jobs[i] for i in where[k]] for k in keys], points, means, seed_var)
