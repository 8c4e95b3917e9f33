"""camvis.bookkeeping.manifest on its own: merging launches, keeping skipped jobs' entries, cancellations."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import pytest
import yaml

from camvis.bookkeeping import manifest
from camvis.cluster.grid import load_grid
from camvis.bookkeeping.manifest import LaunchRecord, job_entry, read_manifest, record, record_cancelled
from camvis.errors import ConfigError


@pytest.fixture
def grid(tmp_path: Path):
    raw = {"experiment": "m", "folds": 2, "base": {"data": {"store": str(tmp_path / "none.zarr")}},
           "axes": {"fold": "all"}}
    (tmp_path / "g.yaml").write_text(yaml.safe_dump(raw))
    return load_grid(tmp_path / "g.yaml", ["train.lr=0.01"])


def test_a_launch_merges_its_jobs_and_keeps_the_skipped_ones(grid, tmp_path: Path) -> None:
    exp = tmp_path / "jobs" / "m"
    exp.mkdir(parents=True)
    first, second = grid.jobs
    submitted = SimpleNamespace(job_id="7_0", paths=SimpleNamespace(stdout=Path("o"), stderr=Path("e")))
    launch = LaunchRecord("L1", "slurm", (first, second), (first.name,), {second.name: "finished"},
                          array_id="7", sbatch_calls=1)
    path = record(exp, grid, launch, tmp_path / "out", {first.name: job_entry(first, "slurm", submitted, "7", 0)})
    data = read_manifest(path)
    assert data["experiment"] == "m" and (exp / data["outputs"]).resolve() == (tmp_path / "out").resolve()
    assert data["jobs"][first.name]["job_id"] == "7_0" and data["jobs"][first.name]["hash"] == first.hash
    assert data["jobs"][second.name]["job_id"] is None  # skipped: an entry without ids
    (entry,) = data["launches"]
    assert (entry["id"], entry["array_id"], entry["submitted"], entry["skipped"], entry["overrides"]) == \
        ("L1", "7", [first.name], {second.name: "finished"}, ["train.lr=0.01"])
    # the same launch again (its aggregate job submitted): its record is rewritten, not appended
    record(exp, grid, LaunchRecord("L1", "slurm", (), (first.name,), {}, "7", "8", 2), tmp_path / "out", {},
           update_last=True)
    data = read_manifest(path)
    assert [(x["id"], x["aggregate_id"], x["sbatch_calls"]) for x in data["launches"]] == [("L1", "8", 2)]
    assert data["jobs"][first.name]["job_id"] == "7_0"  # no entries given: the jobs stay
    record(exp, grid, LaunchRecord("L2", "local", (first,), (), {first.name: "finished"}), tmp_path / "out", {})
    assert [x["id"] for x in read_manifest(path)["launches"]] == ["L1", "L2"]
    assert not list(exp.glob("*.tmp*"))  # written atomically


def test_cancellations_are_recorded_only_in_an_existing_manifest(grid, tmp_path: Path) -> None:
    exp = tmp_path / "m"
    exp.mkdir()
    record_cancelled(exp, ["5"], "camvis-status")
    assert not (exp / "manifest.json").exists()
    record(exp, grid, LaunchRecord("L", "slurm", (), (), {}), tmp_path, {})
    record_cancelled(exp, ["5", "6_1"], "camvis-launch", "superseded")
    cancelled = read_manifest(exp / "manifest.json")["cancelled"]
    assert set(cancelled) == {"5", "6_1"}
    assert cancelled["6_1"]["by"] == "camvis-launch" and cancelled["6_1"]["reason"] == "superseded"


def test_reading_names_the_file_of_a_broken_manifest(tmp_path: Path) -> None:
    assert read_manifest(tmp_path / "none.json") == {}
    (tmp_path / "bad.json").write_text("{")
    with pytest.raises(ConfigError, match=r"bad.json: unreadable manifest"):
        read_manifest(tmp_path / "bad.json")
    (tmp_path / "list.json").write_text(json.dumps({"jobs": []}))
    with pytest.raises(ConfigError, match=r"list.json: expected an object with a 'jobs' mapping"):
        read_manifest(tmp_path / "list.json")
    assert manifest.code_version().startswith("0.")
