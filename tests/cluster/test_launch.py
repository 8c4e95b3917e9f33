"""The launcher without a cluster: dry runs, the manifest (through stand-in sbatch/sacct
commands on PATH that record what they get), the no-SLURM error, local and debug modes with
real tiny jobs, and the no-torch-at-import rule."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from camvis.cluster import launch as launch_mod
from camvis import locks
from camvis.cli import launch as cli
from camvis.errors import CamvisError, SubmissionError
from camvis.data.store_info import FORMAT_VERSION

ROOT = Path(__file__).resolve().parents[2]
DEMO = ROOT / "configs" / "demo.yaml"
MANIFEST_KEYS = {"experiment", "grid", "description", "order", "outputs", "updated", "launches", "jobs"}
LAUNCH_KEYS = {"time", "mode", "array_id", "array_ids", "aggregate_id", "submitted", "skipped", "code_version", "sbatch_calls",
               "resources"}
JOB_KEYS = {"group", "fold", "view", "axes", "hash", "replicate", "config", "mode", "job_id", "array_id", "task", "submitted",
            "stdout", "stderr"}
SHIMS = {
    # sbatch: a new id per call (from 100), keeps every script it was given
    "sbatch": 'n=$(( $(cat "$SHIM/count" 2>/dev/null || echo 99) + 1 )); echo $n > "$SHIM/count"\n'
              'cp "$1" "$SHIM/script_$n.sh"; echo "Submitted batch job $n"',
    "srun": "exit 0",
    "sinfo": "echo debug",
    # sacct: sacct.txt; with all_pending, every array submitted so far as pending (tasks 0-15)
    "sacct": 'cat "$SHIM/sacct.txt" 2>/dev/null; [ -f "$SHIM/all_pending" ] && '
             'for n in $(seq 100 $(cat "$SHIM/count" 2>/dev/null || echo 99)); do '
             'echo "${n}_[0-15]|PENDING|None assigned|00:00:00|0:0"; done; exit 0',
    "squeue": "exit 0",
    "scancel": 'echo "$@" >> "$SHIM/scancel.txt"',
    # scontrol show config: MaxArraySize from max_array (SLURM's default 1001 without it)
    "scontrol": 'echo "MaxJobCount             = 10000"; '
                'echo "MaxArraySize            = $(cat "$SHIM/max_array" 2>/dev/null || echo 1001)"',
}


@pytest.fixture
def fake_slurm(install_shims) -> Path:
    """Stand-in SLURM commands first on PATH; returns their folder (scripts, count, sacct.txt)."""
    return install_shims(SHIMS)


@pytest.fixture(scope="module")
def demo_store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small store shaped as configs/demo.yaml expects (4 views, levels 1, 2, 4)."""
    from camvis.data import store_build
    from camvis.data.synth import synthesize

    root = tmp_path_factory.mktemp("demo")
    raw = synthesize(root / "raw", progress=False, views=4, images_per_view=2, size=(96, 144), seed=0)
    store_build.build(raw, root / "data" / "processed" / "demo.zarr", progress=False, figure=False,
                      factors=(1, 2, 4), patch_size=16, patches_per_image=16, seed=0)
    return root


@pytest.fixture(autouse=True)
def in_demo_root(demo_store: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Run where the demo grid's data.store (data/processed/demo.zarr) exists: preflight wants it."""
    monkeypatch.chdir(demo_store)
    return demo_store


def demo_args(tmp_path: Path, *extra: str) -> list[str]:
    return [str(DEMO), *extra, "--outputs", str(tmp_path / "outputs"), "--jobs-dir", str(tmp_path / "jobs")]


def test_launcher_imports_no_torch() -> None:
    """The launcher loads neither torch, the job side nor zarr (every login module without torch:
    tests/test_layers.py)."""
    code = ("import sys, camvis.cli.launch, camvis.cluster.launch; "
            "bad = [m for m in ('torch', 'camvis.job.task', 'zarr') if m in sys.modules]; "
            "assert not bad, bad")
    subprocess.run([sys.executable, "-c", code], check=True, cwd=ROOT)


# --------------------------------------------------------------------------- dry run


def test_dry_run_prints_table_and_sbatch_scripts(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    assert cli.main(demo_args(tmp_path, "--dry-run")) == 0
    out = capsys.readouterr().out
    assert "#SBATCH --array=0-7%2" in out  # 8 demo jobs, 2 at a time
    assert "cat_fold1" in out and "align_fold4" in out and "would submit" in out
    assert "#SBATCH --dependency=afterany:" in out.replace("'", "")
    assert "#SBATCH --time=10" in out and "#SBATCH --mem=2GB" in out
    assert "nothing submitted" in out
    assert not (tmp_path / "jobs").exists()


def test_dry_run_shows_replicates(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    assert cli.main(demo_args(tmp_path, "--dry-run", "replicates=3")) == 0
    out = capsys.readouterr().out
    assert "24 to run, 0 skipped (slurm, dry run); 2 groups x 4 folds x 3 replicates" in out
    assert "#SBATCH --array=0-23%2" in out
    header = next(ln for ln in out.splitlines() if "┃ job" in ln)
    assert [c.strip() for c in header.split("┃")[1:5]] == ["job", "group", "fold", "rep"]
    assert "cat_fold1_rep3" in out
    assert cli.main(demo_args(tmp_path, "--dry-run", "replicates=3", "--only", "replicate=2")) == 0
    out = capsys.readouterr().out
    assert "8 to run" in out and "cat_fold1_rep2" in out and "cat_fold1_rep1" not in out
    assert cli.main(demo_args(tmp_path, "--dry-run")) == 0  # no replicates: no column
    header = next(ln for ln in capsys.readouterr().out.splitlines() if "┃ job" in ln)
    assert "rep" not in header


def test_cli_takes_options_and_overrides_in_any_order(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    assert cli.main([str(DEMO), "--dry-run", "slurm.time=3", "--only", "fold=1", "train.lr=1e-4",
                     "--jobs-dir", str(tmp_path / "j")]) == 0
    out = capsys.readouterr().out
    assert "#SBATCH --time=3\n" in out and "#SBATCH --array=0-1%2\n" in out


def test_dry_run_resources_from_overrides(tmp_path: Path) -> None:
    result = launch_mod.launch(DEMO, ["slurm.partition=gpu", "slurm.gpus_per_node=2", "slurm.account=lab",
                                      "slurm.array_parallelism=3", "slurm.additional.reservation=r1",
                                      "slurm.aggregate_partition=cpu"],
                               dry_run=True, only=["group=cat"], outputs=tmp_path / "o", jobs_dir=tmp_path / "j")
    array, aggregate = result.scripts["array"], result.scripts["aggregate"]
    for line in ("--array=0-3%3", "--partition=gpu", "--gpus-per-node=2", "--ntasks-per-node=2",
                 "--account=lab", "--reservation=r1"):
        assert f"#SBATCH {line}\n" in array, line
    assert "--partition=cpu" in aggregate and "--gpus-per-node" not in aggregate and "reservation" not in aggregate
    assert result.submitted == ["cat_fold1", "cat_fold2", "cat_fold3", "cat_fold4"]


def test_dry_run_script_runs_the_setup_lines_first(tmp_path: Path) -> None:
    result = launch_mod.launch(DEMO, ["slurm.setup=[module load cuda/12, 'export A=\"b c\"']"], dry_run=True,
                               outputs=tmp_path / "o", jobs_dir=tmp_path / "j")
    for script in result.scripts.values():
        lines = script.splitlines()
        first, second = lines.index("module load cuda/12"), lines.index('export A="b c"')
        srun = next(i for i, line in enumerate(lines) if line.startswith("srun"))
        assert first < second < srun


def test_cpu_ranks_from_tasks_per_node(tmp_path: Path) -> None:
    result = launch_mod.launch(DEMO, ["slurm.tasks_per_node=2"], dry_run=True, outputs=tmp_path / "o",
                               jobs_dir=tmp_path / "j")
    assert "#SBATCH --ntasks-per-node=2\n" in result.scripts["array"]
    assert "--gpus-per-node" not in result.scripts["array"]


def test_throttle_never_exceeds_the_jobs(tmp_path: Path) -> None:
    result = launch_mod.launch(DEMO, ["slurm.array_parallelism=50"], dry_run=True, outputs=tmp_path / "o",
                               jobs_dir=tmp_path / "j")
    assert "#SBATCH --array=0-7%8\n" in result.scripts["array"]


def test_cli_errors_are_one_line_exit_2(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    assert cli.main(demo_args(tmp_path, "train.lrr=1", "--dry-run")) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: override 'train.lrr=1': train.lrr: unknown key (did you mean train.lr?)")
    assert cli.main(demo_args(tmp_path, "--dry-run", "--only", "group=nope")) == 2
    assert "--only group=nope: the grid has no job with group nope" in capsys.readouterr().err


def test_without_slurm_launch_suggests_local(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                             capsys: pytest.CaptureFixture) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))  # no sbatch anywhere
    with pytest.raises(SubmissionError, match="no sbatch on PATH.*--local"):
        launch_mod.launch(DEMO, outputs=tmp_path / "o", jobs_dir=tmp_path / "j")
    assert cli.main(demo_args(tmp_path)) == 2
    assert "--local" in capsys.readouterr().err
    assert not (tmp_path / "jobs").exists()


def test_sinfo_failure_is_no_slurm(fake_slurm: Path, tmp_path: Path) -> None:
    (fake_slurm / "sinfo").write_text("#!/bin/sh\necho 'slurm_load_partitions: Unable to contact slurm controller' >&2\nexit 1\n")
    with pytest.raises(SubmissionError, match="Unable to contact slurm controller.*--local"):
        launch_mod.launch(DEMO, outputs=tmp_path / "o", jobs_dir=tmp_path / "j")


# --------------------------------------------------------------------------- SLURM mode against stand-ins


def test_slurm_launch_two_sbatch_calls_and_manifest(fake_slurm: Path, tmp_path: Path,
                                                    capsys: pytest.CaptureFixture) -> None:
    assert cli.main(demo_args(tmp_path, "--only", "fold=1,2")) == 0
    out = capsys.readouterr().out
    assert "array 100" in out and "aggregate job 101" in out and "camvis-status demo" in out
    assert (fake_slurm / "count").read_text().strip() == "101"  # exactly two sbatch calls
    array = (fake_slurm / "script_100.sh").read_text()
    assert "#SBATCH --array=0-3%2\n" in array
    (command,) = [line for line in array.splitlines() if "-u -m camvis.node.array_task " in line]
    assert cli.main([*demo_args(tmp_path, "--only", "fold=1,2"), "--dry-run", "--force"]) == 0
    assert command in capsys.readouterr().out.splitlines()  # the dry run shows the script sbatch was given
    assert "#SBATCH --dependency=afterany:100\n" in (fake_slurm / "script_101.sh").read_text()

    manifest = json.loads((tmp_path / "jobs" / "demo" / "manifest.json").read_text())
    assert set(manifest) == MANIFEST_KEYS and manifest["experiment"] == "demo"
    assert manifest["outputs"] == "../../outputs"  # from jobs/demo/: the project can move
    (launch,) = manifest["launches"]
    assert LAUNCH_KEYS <= set(launch)
    assert (launch["mode"], launch["array_id"], launch["aggregate_id"], launch["sbatch_calls"]) == \
        ("slurm", "100", "101", 2)
    assert launch["submitted"] == ["cat_fold1", "cat_fold2", "align_fold1", "align_fold2"]
    assert launch["resources"] == {"mode": "slurm", "nodes": 1, "ranks_per_node": 1, "gpus_per_node": 0,
                                   "cpus_per_task": 1, "mem_gb": 2, "time_min": 10}
    assert manifest["order"][:2] == ["cat_fold1", "cat_fold2"] and manifest["description"].startswith("cat vs align")
    jobs = manifest["jobs"]
    assert set(jobs) == set(launch["submitted"])
    entry = jobs["align_fold2"]
    assert set(entry) == JOB_KEYS
    assert (entry["job_id"], entry["array_id"], entry["task"], entry["mode"]) == ("100_3", "100", 3, "slurm")
    assert entry["config"]["model"]["align_features"] is True and entry["config"]["name"] == "align_fold2"
    assert entry["stdout"].endswith("100_3/100_3_0_log.out")


def test_each_task_pickle_holds_its_own_jobs_config(fake_slurm: Path, tmp_path: Path) -> None:
    """What a node runs for task i of each array (its pickle in the array's <array>_tasks.pkl, written
    by camvis.cluster.array_submit): TrainEvalTask with the config the manifest records for that task."""
    import pickle

    from camvis.bookkeeping.tasks_file import read_task
    from camvis.config import job_config_from_dict
    from camvis.job.task import TrainEvalTask

    (fake_slurm / "max_array").write_text("3\n")  # 8 jobs: arrays of 3, 3 and 2 tasks
    result = launch_mod.launch(DEMO, ["slurm.max_requeues=4"], outputs=tmp_path / "o", jobs_dir=tmp_path / "j")
    assert result.array_ids == ["100", "101", "102"]
    manifest = json.loads(result.manifest.read_text())
    assert len(manifest["jobs"]) == 8
    for name, entry in manifest["jobs"].items():
        job_id = entry["job_id"]
        delayed = pickle.loads(read_task(tmp_path / "j" / "demo" / f"{entry['array_id']}_tasks.pkl", entry["task"]))
        cfg, outputs = delayed.args
        assert isinstance(delayed.function, TrainEvalTask) and delayed.kwargs == {}
        assert (cfg.name, cfg.data.fold, outputs) == (name, entry["fold"], str(tmp_path / "o"))
        assert cfg == job_config_from_dict(entry["config"], name)
        assert (delayed._timeout_min, delayed._timeout_countdown) == (10, 4)
        assert entry["stdout"] == f"{job_id}/{job_id}_0_log.out"  # from the jobs folder: projects move
    assert sorted(p.name for p in (tmp_path / "j" / "demo").glob("*.pkl")) == [f"{a}_tasks.pkl" for a in result.array_ids]
    assert not list((tmp_path / "j" / "demo").glob(".*.tmp"))  # no staged tasks file left behind


def test_a_grid_over_max_array_size_is_split_into_arrays(fake_slurm: Path, tmp_path: Path,
                                                          capsys: pytest.CaptureFixture,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    (fake_slurm / "max_array").write_text("3\n")  # arrays of at most 3 tasks (indices 0..2)
    from camvis.bookkeeping import manifest as manifest_mod

    monkeypatch.setattr(manifest_mod, "INDENT_UP_TO", 4)  # 5 jobs: the compact manifest of big grids
    monkeypatch.setattr(launch_mod, "TABLE_ROWS", 2)  # the job table of a big grid: its first rows
    five = "name=cat_fold1,cat_fold2,cat_fold3,cat_fold4,align_fold1"
    args = demo_args(tmp_path, "--only", five, "slurm.array_parallelism=3")
    assert cli.main([*args, "--dry-run"]) == 0
    dry = capsys.readouterr().out
    assert "sbatch script: array 1 of 2" in dry and "sbatch script: array 2 of 2" in dry
    assert "#SBATCH --array=0-2%2\n" in dry and "#SBATCH --array=0-1%1\n" in dry  # 3 + 2 tasks, throttle 2 + 1
    assert "afterany:<array 1 id>:<array 2 id>" in dry.replace("'", "")
    assert "cat_fold2" in dry and "cat_fold3" not in dry and "... and 3 more jobs (3 to run)" in dry
    assert cli.main(args) == 0
    out = capsys.readouterr().out
    assert "as arrays 100, 101 (3 at a time in all)" in out and "aggregate job 102 after them" in out
    assert "finished" not in out  # a SLURM launch returns at once: nothing has run
    assert "#SBATCH --array=0-2%2\n" in (fake_slurm / "script_100.sh").read_text()
    assert "#SBATCH --array=0-1%1\n" in (fake_slurm / "script_101.sh").read_text()
    assert "#SBATCH --dependency=afterany:100:101\n" in (fake_slurm / "script_102.sh").read_text()
    assert not (fake_slurm / "script_103.sh").exists()
    text = (tmp_path / "jobs" / "demo" / "manifest.json").read_text()
    assert len(text.splitlines()) == 1
    manifest = json.loads(text)
    (launch,) = manifest["launches"]
    assert (launch["array_id"], launch["array_ids"], launch["aggregate_id"], launch["sbatch_calls"]) == \
        ("100", ["100", "101"], "102", 3)
    ids = {name: (e["job_id"], e["array_id"], e["task"]) for name, e in manifest["jobs"].items()}
    assert ids == {"cat_fold1": ("100_0", "100", 0), "cat_fold2": ("100_1", "100", 1),
                   "cat_fold3": ("100_2", "100", 2), "cat_fold4": ("101_0", "101", 0),
                   "align_fold1": ("101_1", "101", 1)}
    # camvis-status sees every task of both arrays (one batched sacct), --cancel cancels both and the aggregate
    from camvis.cluster import monitor

    (fake_slurm / "all_pending").touch()
    (fake_slurm / "sacct.txt").write_text("102|PENDING|None assigned|00:00:00|0:0\n")
    status = monitor.collect("demo", tmp_path / "jobs", tmp_path / "outputs")
    assert {j.info.job_id: j.state for j in status.jobs} == {i: "PENDING" for i, _, _ in ids.values()}
    assert status.aggregate == [("102", "PENDING")]
    assert monitor.cancel_experiment("demo", None, tmp_path / "jobs", tmp_path / "outputs") == \
        ["cancelled job array 100", "cancelled job array 101", "cancelled aggregate job 102"]
    assert (fake_slurm / "scancel.txt").read_text().split() == ["100", "101", "102"]


def test_each_array_script_is_the_dry_runs(fake_slurm: Path, tmp_path: Path) -> None:
    (fake_slurm / "max_array").write_text("2\n")
    kwargs = dict(only=["group=cat"], outputs=str(tmp_path / "o"), jobs_dir=str(tmp_path / "j"))
    dry = launch_mod.launch(DEMO, dry_run=True, **kwargs)
    assert list(dry.scripts) == ["array 1 of 2", "array 2 of 2", "aggregate"]
    launch_mod.launch(DEMO, **kwargs)
    assert (fake_slurm / "script_100.sh").read_text() == dry.scripts["array 1 of 2"]
    assert (fake_slurm / "script_101.sh").read_text() == dry.scripts["array 2 of 2"]


def test_a_refused_second_array_leaves_the_first_in_the_manifest(fake_slurm: Path, tmp_path: Path) -> None:
    (fake_slurm / "max_array").write_text("2\n")
    (fake_slurm / "sbatch").write_text('#!/bin/sh\nn=$(( $(cat "$SHIM/count" 2>/dev/null || echo 99) + 1 ))\n'
                                       '[ $n = 101 ] && { echo "sbatch: error: QOSMaxSubmitJobPerUserLimit" >&2; exit 1; }\n'
                                       'echo $n > "$SHIM/count"; echo "Submitted batch job $n"\n')
    with pytest.raises(SubmissionError, match=r"array 2 of 2 .*QOSMaxSubmitJobPerUserLimit \(array 100 already "
                                              r"submitted, in the manifest\)"):
        launch_mod.launch(DEMO, only=["group=cat"], outputs=tmp_path / "o", jobs_dir=tmp_path / "j")
    manifest = json.loads((tmp_path / "j" / "demo" / "manifest.json").read_text())
    assert manifest["launches"][-1]["array_ids"] == ["100"] and manifest["launches"][-1]["aggregate_id"] is None
    assert {n: e["job_id"] for n, e in manifest["jobs"].items() if e["job_id"]} == {"cat_fold1": "100_0",
                                                                                   "cat_fold2": "100_1"}


def test_array_ids_of_old_and_new_manifests() -> None:
    from camvis.bookkeeping.experiment_files import array_ids

    launches = [{"array_id": "7"}, {"array_id": "9", "array_ids": ["9", "10"]}, {"array_id": None}, "bad"]
    assert array_ids({"launches": launches}) == ["7", "9", "10"]


def test_max_array_size_from_scontrol_or_the_default(fake_slurm: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from camvis.cluster.sbatch import DEFAULT_MAX_ARRAY_SIZE, max_array_size

    (fake_slurm / "max_array").write_text("40001\n")
    assert max_array_size() == 40001
    (fake_slurm / "scontrol").write_text("#!/bin/sh\necho 'slurm_load_ctl_conf error: Unable to contact' >&2\nexit 1\n")
    assert max_array_size() == DEFAULT_MAX_ARRAY_SIZE == 1001
    (fake_slurm / "scontrol").write_text("#!/bin/sh\necho 'MaxJobCount = 5'\n")  # says nothing of arrays
    assert max_array_size() == 1001
    monkeypatch.setenv("PATH", str(fake_slurm / "none"))  # no scontrol at all
    assert max_array_size() == 1001


def test_dry_run_script_is_what_submitit_submits(fake_slurm: Path, tmp_path: Path) -> None:
    kwargs = dict(only=["group=cat"], outputs=str(tmp_path / "o"), jobs_dir=str(tmp_path / "j"))
    dry = launch_mod.launch(DEMO, dry_run=True, **kwargs)
    launch_mod.launch(DEMO, **kwargs)
    assert (fake_slurm / "script_100.sh").read_text() == dry.scripts["array"]


def test_relaunch_skips_finished_and_queued_and_merges(fake_slurm: Path, tmp_path: Path) -> None:
    kwargs = dict(only=["fold=1"], outputs=tmp_path / "outputs", jobs_dir=tmp_path / "jobs")
    first = launch_mod.launch(DEMO, **kwargs)
    assert first.job_ids == {"cat_fold1": "100_0", "align_fold1": "100_1"}
    # cat_fold1 finished with this config; align_fold1 still runs according to SLURM
    cat = next(d.job for d in first.decisions if d.job.name == "cat_fold1")
    done = tmp_path / "outputs" / "demo" / "cat_fold1"
    done.mkdir(parents=True)
    (done / "scores.json").write_text(json.dumps({"config_hash": cat.hash}))
    (fake_slurm / "sacct.txt").write_text("100_0|COMPLETED|vm|00:01:00|0:0\n100_1|RUNNING|vm|00:01:00|0:0\n")
    second = launch_mod.launch(DEMO, **kwargs)
    assert second.submitted == [] and second.sbatch_calls == 0
    assert "finished" in second.skipped["cat_fold1"] and "100_1 RUNNING" in second.skipped["align_fold1"]
    assert (fake_slurm / "count").read_text().strip() == "101"  # nothing new
    # a third launch with fold 2 added merges into the same manifest
    (fake_slurm / "sacct.txt").write_text("100_1|CANCELLED by 0|vm|00:01:00|0:0\n")
    third = launch_mod.launch(DEMO, only=["fold=1,2"], outputs=tmp_path / "outputs", jobs_dir=tmp_path / "jobs")
    assert third.submitted == ["cat_fold2", "align_fold1", "align_fold2"]
    manifest = json.loads((tmp_path / "jobs" / "demo" / "manifest.json").read_text())
    assert [launch["sbatch_calls"] for launch in manifest["launches"]] == [2, 0, 2]
    assert manifest["launches"][1]["skipped"]["align_fold1"].startswith("still queued/running")
    assert manifest["jobs"]["cat_fold1"]["job_id"] == "100_0"  # skipped: earlier entry kept
    assert manifest["jobs"]["align_fold1"]["job_id"] == "102_1"
    assert set(manifest["jobs"]) == {"cat_fold1", "cat_fold2", "align_fold1", "align_fold2"}


def test_active_jobs_are_slurm_querys_active_ones(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The launcher and camvis-status agree (slurm_query.is_active): a held SPECIAL_EXIT task is not
    submitted twice; REVOKED and UNKNOWN ones may be."""
    from camvis.bookkeeping import slurm_query

    states = {"a": "RUNNING", "b": "SPECIAL_EXIT", "c": "REVOKED", "d": "UNKNOWN", "e": "COMPLETED", "f": "PENDING"}
    jobs = {name: {"mode": "slurm", "job_id": f"7_{i}"} for i, name in enumerate(states)}
    jobs["local"] = {"mode": "local", "job_id": "99"}
    manifest = tmp_path / "manifest.json"
    manifest.write_text(json.dumps({"jobs": jobs}))
    rows = {f"7_{i}": slurm_query.SlurmRow(f"7_{i}", state, state) for i, state in enumerate(states.values())}
    asked: list[list[str]] = []
    monkeypatch.setattr(slurm_query, "query",
                        lambda ids: asked.append(list(ids)) or slurm_query.QueryResult(rows, "sacct"))
    assert launch_mod.active_jobs(manifest) == {"a": "7_0 RUNNING", "b": "7_1 SPECIAL_EXIT", "f": "7_5 PENDING"}
    assert asked == [[f"7_{i}" for i in range(6)]]  # one batched query, SLURM jobs only


def test_code_version_asks_git_once(monkeypatch: pytest.MonkeyPatch) -> None:
    from camvis.bookkeeping import manifest

    calls: list[list[str]] = []

    def fake_run(cmd: list[str], **kwargs: object) -> subprocess.CompletedProcess:
        calls.append(cmd)
        return subprocess.CompletedProcess(cmd, 0, "abc1234\n", "")

    manifest.code_version.cache_clear()
    monkeypatch.setattr(manifest.subprocess, "run", fake_run)
    try:
        assert manifest.code_version() == manifest.code_version() == f"{manifest.__version__}+gabc1234"
        assert len(calls) == 1
    finally:
        manifest.code_version.cache_clear()  # later tests ask the real git again


def test_refused_array_is_a_submission_error(fake_slurm: Path, tmp_path: Path) -> None:
    (fake_slurm / "sbatch").write_text("#!/bin/sh\necho 'sbatch: error: invalid partition specified: gpu' >&2\nexit 1\n")
    with pytest.raises(SubmissionError, match="invalid partition specified: gpu"):
        launch_mod.launch(DEMO, ["slurm.partition=gpu"], outputs=tmp_path / "o", jobs_dir=tmp_path / "j")


# --------------------------------------------------------------------------- one launch at a time


def test_concurrent_launches_submit_each_job_once(fake_slurm: Path, tmp_path: Path) -> None:
    """Three launches of one grid started together: one submits, the others find its jobs queued."""
    (fake_slurm / "all_pending").touch()
    kwargs = dict(only=["fold=1,2"], outputs=tmp_path / "outputs", jobs_dir=tmp_path / "jobs")
    start, results, errors = threading.Barrier(3), [], []

    def go() -> None:
        start.wait()
        try:
            results.append(launch_mod.launch(DEMO, **kwargs))
        except Exception as e:  # noqa: BLE001 - reported by the assert below
            errors.append(e)

    threads = [threading.Thread(target=go) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert sorted(len(r.submitted) for r in results) == [0, 0, 4]
    assert (fake_slurm / "count").read_text().strip() == "101"  # one array, one aggregate job in all
    manifest = json.loads((tmp_path / "jobs" / "demo" / "manifest.json").read_text())
    ids = sorted(((x["array_id"], x["aggregate_id"], x["sbatch_calls"]) for x in manifest["launches"]), key=str)
    assert ids == sorted([("100", "101", 2), (None, None, 0), (None, None, 0)], key=str)
    assert {e["job_id"] for e in manifest["jobs"].values()} == {"100_0", "100_1", "100_2", "100_3"}
    skipped = [r for r in results if not r.submitted]
    assert all(reason.startswith("still queued/running as 100_") for r in skipped for reason in r.skipped.values())


def _hold(path: Path) -> subprocess.Popen:
    """Another process holding the lock at `path` (as another launch would)."""
    code = ("import sys, time; from camvis import locks; locks.acquire(sys.argv[1], 'slurm launch of demo'); "
            "print('held', flush=True); time.sleep(120)")
    proc = subprocess.Popen([sys.executable, "-c", code, str(path)], stdout=subprocess.PIPE, text=True,
                            env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert proc.stdout.readline().strip() == "held"
    return proc


def test_a_launch_waits_for_another_then_gives_up(fake_slurm: Path, tmp_path: Path) -> None:
    from rich.console import Console

    holder = _hold(tmp_path / "jobs" / "demo" / locks.LAUNCH_LOCK)
    console = Console(record=True, width=300)
    try:
        with pytest.raises(SubmissionError, match=rf"another launch of demo holds .*pid {holder.pid} on "):
            launch_mod.launch(DEMO, outputs=tmp_path / "o", jobs_dir=tmp_path / "jobs", lock_timeout=0.5,
                              console=console)
        assert f"waiting for another launch of demo (pid {holder.pid} on " in console.export_text()
        assert not (fake_slurm / "count").exists()  # nothing submitted
    finally:
        holder.kill()
        holder.wait()
    # the kernel dropped the dead holder's lock: no stale lock file blocks the next launch
    assert launch_mod.launch(DEMO, outputs=tmp_path / "o", jobs_dir=tmp_path / "jobs", lock_timeout=5).array_id == "100"


def test_relaunch_cancels_the_earlier_pending_aggregate_job(fake_slurm: Path, tmp_path: Path) -> None:
    kwargs = dict(outputs=tmp_path / "outputs", jobs_dir=tmp_path / "jobs")
    first = launch_mod.launch(DEMO, only=["fold=1"], **kwargs)
    assert (first.array_id, first.aggregate_id) == ("100", "101")
    (fake_slurm / "sacct.txt").write_text("100_[0-1]|PENDING|None assigned|00:00:00|0:0\n"
                                          "101|PENDING|None assigned|00:00:00|0:0\n")
    second = launch_mod.launch(DEMO, only=["fold=1,2"], **kwargs)
    assert second.submitted == ["cat_fold2", "align_fold2"] and second.cancelled == ["101"]
    assert (fake_slurm / "scancel.txt").read_text().split() == ["101"]
    # the new aggregate job waits for the earlier array too: it summarizes every job once
    assert "#SBATCH --dependency=afterany:102:100\n" in (fake_slurm / "script_103.sh").read_text()
    manifest = json.loads((tmp_path / "jobs" / "demo" / "manifest.json").read_text())
    assert manifest["cancelled"]["101"]["by"] == "camvis-launch"
    assert "superseded by aggregate job 103" in manifest["cancelled"]["101"]["reason"]
    assert [x["aggregate_id"] for x in manifest["launches"]] == ["101", "103"]
    # a running aggregate job is left alone
    (fake_slurm / "sacct.txt").write_text("103|RUNNING|vm|00:00:05|0:0\n")
    third = launch_mod.launch(DEMO, only=["fold=3"], **kwargs)
    assert third.aggregate_id == "105" and third.cancelled == []
    assert (fake_slurm / "scancel.txt").read_text().split() == ["101"]


# --------------------------------------------------------------------------- preflight


def _copy_store(tmp_path: Path, edit: str | None = None, **attrs: object) -> Path:
    import shutil

    store = Path(shutil.copytree(Path("data/processed/demo.zarr"), tmp_path / "copy.zarr"))
    meta = json.loads((store / "zarr.json").read_text())
    meta["attributes"].update(attrs)
    (store / "zarr.json").write_text(json.dumps(meta))
    if edit:
        (store / edit).unlink()
    return store


@pytest.mark.parametrize("case, expected", [
    ("missing", r"data.store: .*nowhere.zarr does not exist \(jobs cat_fold1, .*\); build it"),
    ("version", rf"store format version 99, this camvis reads version {FORMAT_VERSION}"),
    ("patch", r"attribute patch_size 12 is not a power of 2"),
    ("level", r"level 4 has no images array .*levels/4/images/zarr.json is missing"),
    ("factors", r"data.factors \[1, 2, 4\]: \[4\] not levels of store"),
    ("fold", r"axes.fold: fold\(s\) \[5\] out of range; store .* has 4 views"),
    ("outputs", r"--outputs: .*outputs is a file, not a folder"),
])
def test_preflight_refuses_before_any_sbatch(fake_slurm: Path, tmp_path: Path, case: str, expected: str) -> None:
    store = {"missing": lambda: tmp_path / "nowhere.zarr", "version": lambda: _copy_store(tmp_path, format_version=99),
             "patch": lambda: _copy_store(tmp_path, patch_size=12),
             "level": lambda: _copy_store(tmp_path, "levels/4/images/zarr.json"),
             "factors": lambda: _copy_store(tmp_path, factors=[1, 2]),
             }.get(case, lambda: Path("data/processed/demo.zarr").absolute())()
    outputs = tmp_path / "outputs"
    if case == "outputs":
        outputs.write_text("not a folder")
    grid = DEMO
    if case == "fold":  # a grid that names a fold the store does not have
        grid = tmp_path / "grid.yaml"
        grid.write_text(DEMO.read_text().replace("  fold: all", "  fold: [1, 5]"))
    with pytest.raises(CamvisError, match=expected):
        launch_mod.launch(grid, [f"data.store={store}"], outputs=outputs, jobs_dir=tmp_path / "jobs")
    assert not (fake_slurm / "count").exists() and not (tmp_path / "jobs").exists()  # no sbatch, nothing written


def test_dry_run_reports_preflight_problems(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    missing = tmp_path / "nowhere.zarr"
    assert cli.main(demo_args(tmp_path, "--dry-run", f"data.store={missing}", "folds=4")) == 2
    out = capsys.readouterr().out
    assert "would submit" in out and "#SBATCH --array=0-7%2" in out  # the table and scripts still shown
    assert f"preflight: data.store: {missing} does not exist" in out.replace("\n", "")
    assert "a launch would refuse: 1 preflight problem" in out
    assert cli.main(demo_args(tmp_path, "--dry-run")) == 0  # a good store: no problem


# --------------------------------------------------------------------------- local and debug (real jobs)

TINY = ["data.factors=[2,4,8]", "folds=3", "model.size_hidden=4", "train.max_epochs=1", "train.epoch_patches=32",
        "train.batch_size=16", "eval.bootstrap=10", "eval.figures=false"]


@pytest.mark.slow
def test_local_runs_throttled_then_aggregates(synth_store, tmp_path: Path) -> None:
    outputs, jobs = tmp_path / "outputs", tmp_path / "jobs"
    result = launch_mod.launch(DEMO, [f"data.store={synth_store.path}", *TINY, "slurm.array_parallelism=1"],
                               mode="local", only=["group=cat", "fold=1,2"], outputs=outputs, jobs_dir=jobs)
    assert result.failed == {} and result.aggregated
    scores = [json.loads((outputs / "demo" / n / "scores.json").read_text()) for n in ("cat_fold1", "cat_fold2")]
    assert [s["job"] for s in scores] == ["cat_fold1", "cat_fold2"]
    # parallelism 1: the second job was started only after the first had finished
    manifest = json.loads((jobs / "demo" / "manifest.json").read_text())
    second_started = manifest["jobs"]["cat_fold2"]["submitted"]
    assert scores[0]["finished"] <= second_started
    assert manifest["launches"][-1]["mode"] == "local" and manifest["jobs"]["cat_fold1"]["mode"] == "local"
    assert any((outputs / "demo").glob("summary.*"))
    assert not (jobs / "demo" / "%j").exists()  # no literal folder from the local controller
    again = launch_mod.launch(DEMO, [f"data.store={synth_store.path}", *TINY, "slurm.array_parallelism=1"],
                              mode="local", only=["group=cat", "fold=1,2"], outputs=outputs, jobs_dir=jobs)
    assert again.submitted == []


@pytest.mark.slow
def test_debug_runs_first_job_in_process(synth_store, tmp_path: Path) -> None:
    outputs = tmp_path / "outputs"
    result = launch_mod.launch(DEMO, [f"data.store={synth_store.path}", *TINY], mode="debug",
                               only=["group=align"], outputs=outputs, jobs_dir=tmp_path / "jobs")
    assert result.submitted == ["align_fold1"]
    assert json.loads((outputs / "demo" / "align_fold1" / "scores.json").read_text())["job"] == "align_fold1"
    assert not (outputs / "demo" / "align_fold2").exists()


@pytest.mark.slow
def test_local_job_trains_with_two_ddp_ranks(synth_store, tmp_path: Path) -> None:
    """tasks_per_node=2: submitit starts 2 local processes that form one gloo process group."""
    outputs = tmp_path / "outputs"
    result = launch_mod.launch(DEMO, [f"data.store={synth_store.path}", *TINY, "slurm.tasks_per_node=2"],
                               mode="local", only=["group=cat", "fold=1"], outputs=outputs, jobs_dir=tmp_path / "jobs")
    assert result.failed == {}
    job = outputs / "demo" / "cat_fold1"
    progress = json.loads((job / "progress.json").read_text())
    assert progress["world_size"] == 2 and progress["state"] == "done"
    scores = json.loads((job / "scores.json").read_text())
    # validation and evaluation were sharded over 2 ranks and gathered: every held-out patch once
    predictions = (job / "predictions.csv").read_text().splitlines()[1:]
    assert len(predictions) == scores["n_val"] == len({line.split(",")[0] for line in predictions})
