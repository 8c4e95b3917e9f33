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
from camvis.cluster.sbatch import aggregate_parameters, dry_run_scripts, executor_parameters
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
