"""camvis.cluster.plan on its own: each status from a real job folder, and what the plan does with it."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from camvis.cluster.grid import load_grid
from camvis.cluster.plan import RETRAINS, outputs_status, plan
from camvis.config import job_dir, train_hash
from camvis.errors import ConfigError


@pytest.fixture
def jobs(tmp_path: Path):
    grid = {"experiment": "p", "folds": 2, "base": {"data": {"store": str(tmp_path / "none.zarr")}},
            "axes": {"fold": "all"}}
    (tmp_path / "g.yaml").write_text(yaml.safe_dump(grid))
    return list(load_grid(tmp_path / "g.yaml").jobs)


def folder(job, outputs: Path) -> Path:
    d = job_dir(job.config, outputs)
    d.mkdir(parents=True, exist_ok=True)
    return d


def test_each_status_from_the_folder_alone(jobs, tmp_path: Path) -> None:
    job, out = jobs[0], tmp_path / "out"
    assert outputs_status(job, out) == ("new", "new")
    d = folder(job, out)
    assert outputs_status(job, out)[0] == "incomplete"
    (d / "checkpoint.pt").write_bytes(b"")
    (d / "progress.json").write_text(json.dumps({"train_hash": train_hash(job.config)}))
    assert outputs_status(job, out) == ("incomplete", "unfinished: resumes from checkpoint.pt")
    (d / "error.txt").write_text("error: boom\n")
    assert outputs_status(job, out)[0] == "failed"
    (d / "scores.json").write_text(json.dumps({"config_hash": job.hash}))
    assert outputs_status(job, out)[0] == "finished"
    (d / "scores.json").write_text(json.dumps({"config_hash": "other", "train_hash": train_hash(job.config)}))
    assert outputs_status(job, out) == ("stale", "config changed since it finished (hash other -> "
                                        f"{job.hash}): re-evaluates best.pt (only eval changed)")
    (d / "scores.json").write_text(json.dumps({"config_hash": "other", "train_hash": "x"}))
    assert outputs_status(job, out)[1].endswith(f"training config changed: {RETRAINS}")
    (d / "scores.json").write_text("{not json")
    assert outputs_status(job, out)[0] == "stale"


def test_plan_skips_finished_and_active_and_obeys_force_and_restart(jobs, tmp_path: Path) -> None:
    out = tmp_path / "out"
    done, other = jobs
    (folder(done, out) / "scores.json").write_text(json.dumps({"config_hash": done.hash}))
    decided = {d.job.name: d for d in plan(jobs, out)}
    assert (decided[done.name].submit, decided[done.name].status) == (False, "finished")
    assert (decided[other.name].submit, decided[other.name].status) == (True, "new")
    forced = {d.job.name: d for d in plan(jobs, out, force=True, active={other.name: "12_1 RUNNING"})}
    assert (forced[done.name].submit, forced[done.name].status) == (True, "forced")
    assert (forced[other.name].submit, forced[other.name].reason) == (False, "still queued/running as 12_1 RUNNING")
    restarted = plan(jobs, out, restart=True)
    assert all(d.submit and d.status == "restart" for d in restarted)
    assert [d.reason for d in restarted] == [f"--restart: {RETRAINS}", "--restart: new"]


def test_plan_reads_each_folder_only_where_one_exists(jobs, tmp_path: Path) -> None:
    """One listing of outputs/<experiment>/ tells the new jobs (no stat per job); a job whose folder
    exists gets outputs_status's reading, whatever the listing's cache saw first."""
    out = tmp_path / "out"
    assert [(d.status, d.reason) for d in plan(jobs, out)] == [("new", "new"), ("new", "new")]
    (out / "p").mkdir(parents=True)
    assert [d.status for d in plan(jobs, out)] == ["new", "new"]
    d = folder(jobs[1], out)
    (d / "error.txt").write_text("error: boom\n")
    assert [d.status for d in plan(jobs, out)] == ["new", "failed"]
    assert [d.status for d in plan(jobs, out)] == [outputs_status(j, out)[0] for j in jobs]


def test_plan_refuses_an_experiment_folder_outside_outputs(jobs, tmp_path: Path) -> None:
    out, elsewhere = tmp_path / "out", tmp_path / "elsewhere"
    out.mkdir()
    elsewhere.mkdir()
    (out / "p").symlink_to(elsewhere)  # outputs/p/ lies outside outputs/: nothing may be written there
    with pytest.raises(ConfigError, match="outside the outputs root"):
        plan(jobs, out)
