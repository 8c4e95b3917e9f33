"""camvis.cluster.sbatch on its own: the submitit parameters of a grid's SLURM settings and the
dry-run scripts, which must be the ones sbatch accepts (the last test asks the local SLURM)."""

from __future__ import annotations

import dataclasses
import os
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from camvis.cluster.grid import load_grid
from camvis.cluster.sbatch import (aggregate_parameters, dry_run_scripts, executor_parameters, split_arrays,
                                   throttles)
from camvis.errors import ConfigError


def grid_of(tmp_path: Path, **slurm):
    raw = {"experiment": "s", "folds": 3, "base": {"data": {"store": str(tmp_path / "none.zarr")}},
           "axes": {"fold": "all"}, "slurm": {"time": 20, "array_parallelism": 2, **slurm}}
    (tmp_path / "g.yaml").write_text(yaml.safe_dump(raw))
    return load_grid(tmp_path / "g.yaml")


def sbatch_lines(text: str) -> set[str]:
    return {line.strip() for line in text.splitlines() if line.startswith("#SBATCH")}


def test_the_array_script_carries_every_setting(tmp_path: Path) -> None:
    grid = grid_of(tmp_path, cpus_per_task=2, mem_gb=3, signal_delay_s=60, additional={"comment": "x"})
    params = executor_parameters(grid, len(grid.jobs))
    assert params["slurm_array_parallelism"] == 2 and params["mem_gb"] == 3.0
    scripts = dry_run_scripts(grid, list(grid.jobs), tmp_path / "jobs" / "s")
    lines = sbatch_lines(scripts["array"])
    assert {"#SBATCH --array=0-2%2", "#SBATCH --time=20", "#SBATCH --cpus-per-task=2",
            "#SBATCH --signal=USR2@60", "#SBATCH --comment=x", "#SBATCH --job-name=camvis-s"} <= lines
    assert any(line.startswith("#SBATCH --mem=3") for line in lines)
    assert str((tmp_path / "jobs" / "s").absolute()) in scripts["array"]


def test_the_aggregate_job_waits_for_the_array_on_one_cpu(tmp_path: Path) -> None:
    grid = grid_of(tmp_path, aggregate_time=7, aggregate_partition="small", partition="big")
    params = aggregate_parameters(grid, "41:40")
    assert params["slurm_additional_parameters"] == {"dependency": "afterany:41:40"}
    lines = sbatch_lines(dry_run_scripts(grid, list(grid.jobs), tmp_path)["aggregate"])
    assert {"#SBATCH --time=7", "#SBATCH --partition=small", "#SBATCH --cpus-per-task=1"} <= lines
    assert not any(line.startswith("#SBATCH --array") for line in lines)


@pytest.mark.parametrize("slurm, kills", [({"nodes": 2}, True), ({"tasks_per_node": 2}, True),
                                          ({"gpus_per_node": 4}, True), ({}, False)])
def test_a_rank_that_fails_ends_the_others_of_a_multi_task_job(tmp_path: Path, slurm: dict, kills: bool) -> None:
    """srun --kill-on-bad-exit: else the other ranks of a rank 0 lost before the rendezvous wait out the time limit."""
    grid = grid_of(tmp_path, **slurm)
    srun = next(line for line in dry_run_scripts(grid, list(grid.jobs), tmp_path)["array"].splitlines()
                if line.startswith("srun "))
    assert ("--kill-on-bad-exit=1" in srun.split()) is kills, srun


@pytest.mark.parametrize("n, max_size, sizes", [(5, 3, [3, 2]), (3, 3, [3]), (1152, 1001, [1001, 151]),
                                                (5000, 1001, [1001] * 4 + [996]), (1, 1001, [1])])
def test_jobs_are_cut_into_arrays_of_at_most_max_array_size(n: int, max_size: int, sizes: list[int]) -> None:
    chunks = split_arrays(n, max_size)
    assert [len(c) for c in chunks] == sizes
    assert [i for c in chunks for i in c] == list(range(n))  # every job once, in grid order


@pytest.mark.parametrize("parallelism, sizes, expected", [
    (24, [1001, 151], [12, 12]),     # divided
    (5, [3, 3], [3, 2]),             # the remainder to the first arrays
    (10, [1001, 2], [8, 2]),         # never more than an array's tasks
    (2, [3, 3, 3], [1, 1, 1]),       # at least one each: then one per array runs
    (4, [7], [4]),
])
def test_the_throttle_is_shared_between_the_arrays(parallelism: int, sizes: list[int], expected: list[int]) -> None:
    assert throttles(parallelism, sizes) == expected


def test_one_dry_run_script_per_array(tmp_path: Path) -> None:
    grid = grid_of(tmp_path, array_parallelism=3)  # 3 folds
    scripts = dry_run_scripts(grid, list(grid.jobs), tmp_path / "jobs" / "s", max_size=2)
    assert list(scripts) == ["array 1 of 2", "array 2 of 2", "aggregate"]
    assert "#SBATCH --array=0-1%2" in sbatch_lines(scripts["array 1 of 2"])
    # one task left: submitit submits it as a plain job (as a one-job launch always was)
    assert not any(line.startswith("#SBATCH --array") for line in sbatch_lines(scripts["array 2 of 2"]))
    assert "#SBATCH --dependency='afterany:<array 1 id>:<array 2 id>'" in sbatch_lines(scripts["aggregate"])
    assert list(dry_run_scripts(grid, list(grid.jobs), tmp_path)) == ["array", "aggregate"]  # the default 1001


def test_a_value_that_would_inject_a_line_is_refused(tmp_path: Path) -> None:
    grid = grid_of(tmp_path)
    forged = dataclasses.replace(grid, slurm=dataclasses.replace(grid.slurm, qos="normal\n#SBATCH --x"))
    with pytest.raises(ConfigError, match=r"qos: whitespace or control characters"):
        executor_parameters(forged, 1)


@pytest.mark.slurm
def test_sbatch_test_only_accepts_the_dry_run_scripts(tmp_path: Path) -> None:
    """The dry run prints submitit's text through its private API (pinned in pyproject): the
    local SLURM must accept it as written (`sbatch --test-only` validates, submits nothing)."""
    if os.environ.get("CAMVIS_SLURM") != "1" and os.environ.get("CI") != "true":
        pytest.skip("needs the local SLURM cluster: CAMVIS_SLURM=1 (bash slurm/cluster.sh start)")
    assert shutil.which("sbatch"), "CAMVIS_SLURM=1 but no sbatch on PATH"
    grid = grid_of(tmp_path, time=5, array_parallelism=1)
    scripts = dry_run_scripts(grid, list(grid.jobs), tmp_path / "jobs" / "s")
    for name, text in scripts.items():
        # the aggregate's dependency names the array only at submission: test the rest
        text = "\n".join(line for line in text.splitlines() if "--dependency=" not in line) + "\n"
        path = tmp_path / f"{name}.sh"
        path.write_text(text)
        proc = subprocess.run(["sbatch", "--test-only", str(path)], capture_output=True, text=True, timeout=60)
        assert proc.returncode == 0, f"{name}: sbatch --test-only refused it: {proc.stderr.strip()}"
