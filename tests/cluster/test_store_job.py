"""A grid's `store:` section without a cluster: its parsing, the launch's build plan and deferred
preflight, the dry run's build script and dependency, a broken raw dir refused before anything is
submitted, and camvis-data build --slurm's checks. The real build jobs: tests/integration/test_store_job_slurm.py."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import yaml

from camvis.cli import data as data_cli
from camvis.bookkeeping import store_builds
from camvis.cluster import store_job
from camvis.cluster.grid import load_grid
from camvis.cluster.launch import launch
from camvis.bookkeeping.manifest import read_manifest, record_store_build
from camvis.cluster.store_settings import with_dependency
from camvis.errors import ConfigError, SubmissionError


def grid_file(tmp_path: Path, raw: Path, store: dict[str, Any] | None = None, **top: Any) -> Path:
    """A 3-fold grid on a store not built yet, with a `store:` section building it from `raw`."""
    grid = {"experiment": "sj", "folds": 3,
            "base": {"data": {"store": str(tmp_path / "built.zarr"), "factors": [2, 4]},
                     "model": {"size_hidden": 4}, "train": {"device": "cpu"}},
            "axes": {"fold": "all"},
            "store": {"raw": str(raw), "patch_size": 16, "patches_per_image": 32, **(store or {})},
            "slurm": {"time": 10, "partition": "debug", "setup": ["module load x"],
                      "additional": {"gres": "gpu:1"}},
            **top}
    path = tmp_path / "grid.yaml"
    path.write_text(yaml.safe_dump(grid))
    return path


def test_store_section_defaults_follow_the_jobs_and_the_grid(tmp_path: Path, synth_raw: Path) -> None:
    grid = load_grid(grid_file(tmp_path, synth_raw, {"workers": 3}))
    build = grid.store
    assert build is not None and build.store == str(tmp_path / "built.zarr") and build.raw == str(synth_raw)
    assert build.params == {"factors": [2, 4], "patch_size": 16, "patches_per_image": 32, "seed": 0,
                            "preprocessing": "exact"}
    s = build.slurm  # workers -> CPUs; partition and setup from the grid, not its additional (GPUs)
    assert (s.cpus_per_task, s.partition, s.setup, s.additional, s.time) == (3, "debug", ("module load x",), {}, 60)


def test_store_section_keys_and_overrides(tmp_path: Path, synth_raw: Path) -> None:
    path = grid_file(tmp_path, synth_raw, {"factors": [2, 4, 8], "slurm": {"time": 5, "cpus_per_task": 2,
                                                                           "mem_gb": 3, "partition": "big"}})
    build = load_grid(path, ["store.seed=7", "store.slurm.mem_gb=4"]).store
    assert build.params["factors"] == [2, 4, 8] and build.params["seed"] == 7
    assert (build.slurm.time, build.slurm.cpus_per_task, build.slurm.mem_gb, build.slurm.partition) == (5, 2, 4.0, "big")


@pytest.mark.parametrize("store, expected", [
    ({"raw": ""}, "store.raw: missing"),
    ({"wokers": 2}, "store.wokers"),
    ({"workers": 0}, "store.workers: must be >= 1"),
    ({"preprocessing": "fast"}, "store.preprocessing: expected one of 'exact', 'camvis2'"),
    ({"slurm": {"time": 0}}, "store.slurm.time: expected minutes"),
    ({"slurm": {"mem": 2}}, "store.slurm.mem"),
    ({"slurm": {"partition": "a b"}}, "store.slurm.partition: whitespace"),
    ({"factors": [2, 2]}, "store.factors: expected distinct"),
])
def test_store_section_errors_name_the_key(tmp_path: Path, synth_raw: Path, store: dict, expected: str) -> None:
    with pytest.raises(ConfigError, match=expected.replace(".", r"\.").replace("(", r"\(")) as e:
        load_grid(grid_file(tmp_path, synth_raw, store))
    assert str(tmp_path / "grid.yaml") in str(e.value)


def test_with_dependency_adds_afterok_beside_a_given_dependency() -> None:
    assert with_dependency({"name": "x"}, None) == {"name": "x"}
    assert with_dependency({"name": "x"}, "12")["slurm_additional_parameters"] == {"dependency": "afterok:12"}
    given = {"slurm_additional_parameters": {"dependency": "after:5", "hold": True}}
    assert with_dependency(given, "12")["slurm_additional_parameters"] == {"dependency": "afterok:12,after:5",
                                                                           "hold": True}
    assert given["slurm_additional_parameters"]["dependency"] == "after:5"  # not changed in place


def test_no_build_when_the_store_exists_or_is_not_used(tmp_path: Path, synth_raw: Path, synth_store: Any) -> None:
    build = load_grid(grid_file(tmp_path, synth_raw)).store
    assert store_job.plan_build(build, {"elsewhere.zarr"}) is None
    assert store_job.plan_build(None, {build.store}) is None
    (tmp_path / "built.zarr").mkdir()
    assert store_job.plan_build(build, {build.store}) is None


def test_dry_run_shows_the_build_job_and_the_arrays_afterok(tmp_path: Path, synth_raw: Path) -> None:
    result = launch(grid_file(tmp_path, synth_raw, {"workers": 2, "slurm": {"mem_gb": 3}}), dry_run=True,
                    outputs=tmp_path / "out", jobs_dir=tmp_path / "jobs")
    assert result.problems == [] and len(result.submitted) == 3
    assert list(result.scripts)[:2] == ["store build", "array"]
    build = result.scripts["store build"]
    assert "#SBATCH --cpus-per-task=2" in build and "#SBATCH --mem=3GB" in build and "module load x" in build
    assert "gres" not in build and "--array" not in build
    assert "#SBATCH --dependency='afterok:<store-build-id>'" in result.scripts["array"]
    lines = store_job.launch_lines(result)
    assert "store build job" in lines[0] and "deferred to the jobs" in lines[-1] and "(3 views)" in lines[-1]
    assert not (tmp_path / "jobs").exists() and not (tmp_path / "built.zarr").exists()


def test_preflight_checks_the_folds_against_the_raw_views(tmp_path: Path, synth_raw: Path) -> None:
    result = launch(grid_file(tmp_path, synth_raw, folds=4), dry_run=True, outputs=tmp_path / "out",
                    jobs_dir=tmp_path / "jobs")
    assert result.problems == ["job default_fold4 (store to be built): data.fold 4 out of range; store "
                               f"{tmp_path / 'built.zarr'} has 3 views"]


def test_preflight_checks_the_factors_and_patch_size_against_the_build(tmp_path: Path, synth_raw: Path) -> None:
    result = launch(grid_file(tmp_path, synth_raw, {"factors": [2], "patch_size": 12}), dry_run=True,
                    outputs=tmp_path / "out", jobs_dir=tmp_path / "jobs")
    text = "\n".join(result.problems)
    assert "data.factors [2, 4]: [4] not levels of store" in text and "patch_size 12 is not a power of 2" in text


def test_a_broken_raw_dir_is_refused_before_anything_is_submitted(tmp_path: Path, raw_copy: Path) -> None:
    next((raw_copy / "depth_maps").glob("*.npy")).unlink()
    path = grid_file(tmp_path, raw_copy)
    dry = launch(path, dry_run=True, outputs=tmp_path / "out", jobs_dir=tmp_path / "jobs")
    assert len(dry.problems) == 1 and dry.problems[0].startswith(f"store.raw: {raw_copy}: 1 problem")
    assert "depth map missing" in dry.problems[0] and "store build" not in dry.scripts
    with pytest.raises(SubmissionError, match="(?s)preflight: store.raw: .*depth map missing.*nothing submitted"):
        launch(path, outputs=tmp_path / "out", jobs_dir=tmp_path / "jobs")  # before SLURM is even asked
    assert not (tmp_path / "jobs").exists()


def test_a_missing_store_without_a_store_section_keeps_the_plain_error(tmp_path: Path, synth_raw: Path) -> None:
    path = grid_file(tmp_path, synth_raw)
    plain = yaml.safe_load(path.read_text())
    del plain["store"]
    path.write_text(yaml.safe_dump(plain))
    result = launch(path, dry_run=True, outputs=tmp_path / "out", jobs_dir=tmp_path / "jobs")
    assert result.problems[0].startswith(f"data.store: {tmp_path / 'built.zarr'} does not exist")


def test_the_build_is_recorded_in_a_manifest_begun_for_it(tmp_path: Path) -> None:
    exp = tmp_path / "jobs" / "sj"
    record_store_build(exp, "sj", {"job_id": "7", "store": "a.zarr"})
    record_store_build(exp, "sj", {"job_id": "9", "store": "a.zarr"})
    manifest = read_manifest(exp / "manifest.json")
    assert manifest["experiment"] == "sj" and manifest["jobs"] == {} and manifest["launches"] == []
    assert store_builds.latest_build(manifest, "a.zarr")["job_id"] == "9" and store_builds.latest_build(manifest, "b") is None
    assert [e["job_id"] for e in store_builds.latest_per_store(manifest)] == ["9"]


def test_status_line_says_where_a_failed_build_logged() -> None:
    entry = {"job_id": "7", "store": "s.zarr", "raw": "raw", "stdout": "7_0_log.out", "stderr": "7_0_log.err"}
    line, failed = store_builds.status_line(entry, "FAILED")
    assert failed and line.startswith("store build failed: see 7_0_log.err (job 7 FAILED")
    assert store_builds.status_line(entry, "RUNNING") == ("store build job 7 RUNNING: s.zarr from raw (log: 7_0_log.out)",
                                                       False)
    assert store_builds.status_line(entry, "COMPLETED") == ("store build job 7 COMPLETED: s.zarr", False)


def test_build_here_writes_the_store_a_local_launch_needs(tmp_path: Path, synth_raw: Path) -> None:
    build = load_grid(grid_file(tmp_path, synth_raw, {"workers": 1})).store
    summary = store_job.build_here(build)
    attrs = json.loads((tmp_path / "built.zarr" / "zarr.json").read_text())["attributes"]
    assert attrs["factors"] == [2, 4] and attrs["patch_size"] == 16 and str(tmp_path / "built.zarr") in summary


@pytest.mark.parametrize("args, expected", [
    (["--wait"], "--wait goes with --slurm"),
    (["--slurm", "--force"], "--force, --figure and --compress are not taken by --slurm"),
    (["--slurm", "--cpus", "0"], "--cpus: must be >= 1"),
    (["--slurm", "--partition", "a b"], "--partition: whitespace"),
])
def test_build_slurm_flags_are_checked_before_submitting(tmp_path: Path, synth_raw: Path, capsys: Any,
                                                         args: list[str], expected: str) -> None:
    assert data_cli.main(["build", str(synth_raw), str(tmp_path / "s.zarr"), *args]) == 2
    assert expected in capsys.readouterr().err and not (tmp_path / "s.zarr").exists()


def test_build_slurm_refuses_a_broken_raw_dir_before_submitting(tmp_path: Path, raw_copy: Path, capsys: Any) -> None:
    next((raw_copy / "depth_maps").glob("*.npy")).unlink()
    assert data_cli.main(["build", str(raw_copy), str(tmp_path / "s.zarr"), "--slurm",
                          "--jobs-dir", str(tmp_path / "jobs")]) == 2
    assert "depth map missing" in capsys.readouterr().err and not (tmp_path / "jobs").exists()
