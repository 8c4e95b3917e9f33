"""`camvis-launch GRID --smoke`: the grid shrunk to one tiny job per group, under its own experiment name.

Each group's first job keeps the site's resources (partition, GPUs, setup lines: the path a real run
takes) but trains one epoch on a few patches and bootstraps a little, as experiment `<experiment>_smoke`,
so it never mixes with the real experiment's outputs; the launch then submits the aggregate as usual.
It proves the queue, the store, the job script and the aggregate in minutes before a grid of GPU-hours.
No torch here: login side.
"""

from __future__ import annotations

import dataclasses

from camvis.config import MAX_NAME_LENGTH, config_hash
from camvis.cluster.grid import Grid, JobSpec

SUFFIX = "_smoke"
TRAIN = {"max_epochs": 1, "epoch_patches": 128}
"""One epoch of at most 128 patches: a couple of optimizer steps."""
EVAL = {"bootstrap": 20, "figures": False}
TIME_MIN = 15
"""Time limit of a smoke job (minutes): at most this, at most the grid's."""


def smoke_name(experiment: str) -> str:
    """`<experiment>_smoke`, within the longest name camvis takes."""
    return experiment[:MAX_NAME_LENGTH - len(SUFFIX)] + SUFFIX


def shrink(grid: Grid) -> Grid:
    """The smoke grid of `grid`: the first job of each group, tiny, as experiment `<experiment>_smoke`."""
    name = smoke_name(grid.experiment)
    firsts: dict[str, JobSpec] = {}
    for job in grid.jobs:
        firsts.setdefault(job.group, job)
    jobs = tuple(_tiny(job, name) for job in firsts.values())
    slurm = dataclasses.replace(grid.slurm, time=min(grid.slurm.time, TIME_MIN), max_requeues=0,
                                signal_delay_s=min(grid.slurm.signal_delay_s, 60))
    return dataclasses.replace(grid, experiment=name, jobs=jobs, slurm=slurm,
                               description=f"smoke run of {grid.experiment} ({grid.path})")


def _tiny(job: JobSpec, experiment: str) -> JobSpec:
    c = job.config
    epoch_patches = min(c.train.epoch_patches or TRAIN["epoch_patches"], TRAIN["epoch_patches"])
    train = dataclasses.replace(c.train, max_epochs=TRAIN["max_epochs"], epoch_patches=epoch_patches,
                                batch_size=min(c.train.batch_size, 32))
    ev = dataclasses.replace(c.eval, bootstrap=min(c.eval.bootstrap, EVAL["bootstrap"]), figures=EVAL["figures"])
    config = dataclasses.replace(c, experiment=experiment, train=train, eval=ev)
    return dataclasses.replace(job, config=config, hash=config_hash(config))
