"""Integration against the real local SLURM (slurm/cluster.sh): the demo grid's real jobs.

Three launches start together (the machine has 2 cores; SLURM sees 8 CPUs) and each test
waits for its own:
- run:     2 demo jobs as one throttled array (1 at a time) + the dependent aggregate job;
- cancel:  1 job, cancelled while it runs;
- requeue: 1 job with a 2-minute limit: USR2 -> checkpoint -> requeue -> resume.
Required in CI (CI=true) and under `make test` (CAMVIS_SLURM=1); skipped elsewhere.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Callable

import pytest

from camvis.bookkeeping import slurm_query
from camvis.cluster.launch import LaunchResult, launch

pytestmark = [pytest.mark.slurm, pytest.mark.slow]

DEMO = Path(__file__).resolve().parents[2] / "configs" / "demo.yaml"
REQUIRED = os.environ.get("CI") == "true" or os.environ.get("CAMVIS_SLURM") == "1"
DEADLINE_S = 900
TINY = ["data.factors=[2,4,8]", "folds=3", "model.size_hidden=4", "train.batch_size=16", "train.epoch_patches=32",
        "eval.bootstrap=10", "eval.figures=false"]
ENDLESS = ["train.max_epochs=100000", "train.min_lr=0", "train.plateau_patience=100000"]


def cluster_up() -> tuple[bool, str]:
    try:
        proc = subprocess.run(["sinfo", "-h", "-o", "%T"], capture_output=True, text=True, timeout=20)
    except (OSError, subprocess.SubprocessError) as e:
        return False, str(e)
    states = proc.stdout.split()
    ok = proc.returncode == 0 and any(s.rstrip("*~#") in ("idle", "mixed", "allocated", "completing") for s in states)
    return ok, (proc.stderr or proc.stdout).strip()


@pytest.fixture(scope="module")
def cluster() -> None:
    if not REQUIRED:
        pytest.skip("SLURM integration tests: run `make test` (starts slurm/cluster.sh) or set CAMVIS_SLURM=1 "
                    "with the local cluster up (bash slurm/cluster.sh start)")
    up, detail = cluster_up()
    if not up:
        pytest.fail(f"CI=true/CAMVIS_SLURM=1 but the local SLURM cluster is not up ({detail or 'no node'}): "
                    f"bash slurm/cluster.sh start")


@pytest.fixture(scope="module")
def launched(cluster: None, synth_store: Any, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """The three launches, submitted at once; later tests wait on their own."""
    root = tmp_path_factory.mktemp("slurm")
    common = [f"data.store={synth_store.path}", *TINY]

    def go(name: str, overrides: list[str], only: list[str]) -> LaunchResult:
        return launch(DEMO, [f"experiment={name}", *common, *overrides], only=only,
                      outputs=root / "outputs", jobs_dir=root / "jobs")

    runs = {
        "requeue": go("it-requeue", [*ENDLESS, "slurm.time=2", "slurm.signal_delay_s=30", "slurm.max_requeues=5"],
                      ["name=align_fold2"]),
        "run": go("it-run", ["train.max_epochs=1", "slurm.array_parallelism=1",
                             f"slurm.setup=['export CAMVIS_SETUP_MARK=set', 'touch {root}/setup-ran-$SLURM_JOB_ID']"],
                  ["fold=1"]),
        "cancel": go("it-cancel", ENDLESS, ["name=cat_fold3"]),
    }
    yield {"root": root, "common": common, **runs}
    ids = [r.array_id for r in runs.values() if r.array_id] + [r.aggregate_id for r in runs.values() if r.aggregate_id]
    subprocess.run(["scancel", *ids], capture_output=True)  # nothing may outlive the tests


def states(ids: list[str]) -> dict[str, slurm_query.SlurmRow]:
    result = slurm_query.query(ids)
    assert result.source == "sacct", f"SLURM accounting is needed for these tests: {result.note}"
    return result.rows


def all_ended(ids: list[str]) -> dict[str, slurm_query.SlurmRow] | None:
    """Every job's row once all of `ids` are in a terminal state, else None (for wait_for)."""
    rows = states(ids)
    return rows if all(i in rows and rows[i].state in slurm_query.TERMINAL_STATES for i in ids) else None


def wait_for(what: str, check: Callable[[], Any], timeout: float = DEADLINE_S, every: float = 2.0) -> Any:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        value = check()
        if value:
            return value
        time.sleep(every)
    pytest.fail(f"timed out after {timeout:.0f}s waiting for {what}")


def sacct_times(job_id: str) -> list[tuple[str, str, str]]:
    out = subprocess.run(["sacct", "-X", "-n", "-P", "-j", job_id, "-o", "JobID,Start,End"],
                         capture_output=True, text=True, check=True).stdout
    return [tuple(line.split("|")) for line in out.splitlines() if line]  # ISO times sort as text


def log_text(result: LaunchResult, name: str) -> str:
    manifest = json.loads(result.manifest.read_text())
    path = result.manifest.parent / manifest["jobs"][name]["stdout"]
    return path.read_text() if path.exists() else ""


# --------------------------------------------------------------------------- tests


def test_array_is_one_throttled_sbatch_plus_dependent_aggregate(launched: dict[str, Any]) -> None:
    run: LaunchResult = launched["run"]
    assert run.submitted == ["cat_fold1", "align_fold1"]
    assert run.sbatch_calls == 2 and run.job_ids == {"cat_fold1": f"{run.array_id}_0", "align_fold1": f"{run.array_id}_1"}
    scontrol = subprocess.run(["scontrol", "show", "job", run.array_id], capture_output=True, text=True).stdout
    sacct = subprocess.run(["sacct", "-X", "-n", "-P", "-j", run.array_id, "-o", "JobID"],
                           capture_output=True, text=True).stdout
    assert "ArrayTaskThrottle=1" in scontrol or "%1]" in sacct  # the throttle, while SLURM still shows it
    dep = subprocess.run(["scontrol", "show", "job", run.aggregate_id], capture_output=True, text=True).stdout
    assert f"afterany:{run.array_id}" in dep or "Dependency=(null)" in dep  # (null) once the array has ended


def test_jobs_complete_then_aggregate_runs(launched: dict[str, Any]) -> None:
    run: LaunchResult = launched["run"]
    ids = [run.job_ids["cat_fold1"], run.job_ids["align_fold1"], run.aggregate_id]
    rows = wait_for("the demo array and its aggregate job", lambda: all_ended(ids))
    assert {i: rows[i].state for i in ids} == {i: "COMPLETED" for i in ids}, \
        {n: log_text(run, n)[-2000:] for n in run.submitted}
    outputs = launched["root"] / "outputs" / "it-run"
    for name in run.submitted:
        scores = json.loads((outputs / name / "scores.json").read_text())
        assert scores["job"] == name and scores["config_hash"] == json.loads(run.manifest.read_text())["jobs"][name]["hash"]
    assert any(outputs.glob("summary.*")), sorted(p.name for p in outputs.iterdir())
    times = {job_id: (start, end) for job_id, start, end in sacct_times(run.array_id) + sacct_times(run.aggregate_id)}
    first, second, agg = (times[i] for i in ids)
    assert second[0] >= first[1], "array_parallelism=1: task 1 started before task 0 ended"
    assert agg[0] >= max(first[1], second[1]), "the aggregate job started before the array ended"


def test_setup_lines_ran_in_every_job_script(launched: dict[str, Any]) -> None:
    run: LaunchResult = launched["run"]
    ids = [run.job_ids["cat_fold1"], run.job_ids["align_fold1"], run.aggregate_id]
    wait_for("the demo array and its aggregate job", lambda: all_ended(ids))
    marks = sorted(p.name for p in launched["root"].glob("setup-ran-*"))
    assert len(marks) == 3, marks  # two array tasks (each its own SLURM_JOB_ID) and the aggregate job


def test_second_launch_submits_nothing(launched: dict[str, Any]) -> None:
    run: LaunchResult = launched["run"]
    ids = list(run.job_ids.values())

    def ended() -> bool:  # scores.json comes before the job's last steps (efficiency, hparams): wait for SLURM too
        rows = slurm_query.query(ids).rows
        return (launched["root"] / "outputs" / "it-run" / "align_fold1" / "scores.json").exists() and \
            all(i in rows and not slurm_query.is_active(rows[i].state) for i in ids)

    wait_for("the first launch", ended)
    again = launch(DEMO, ["experiment=it-run", *launched["common"], "train.max_epochs=1", "slurm.array_parallelism=1"],
                   only=["fold=1"], outputs=launched["root"] / "outputs", jobs_dir=launched["root"] / "jobs")
    assert again.submitted == [] and again.sbatch_calls == 0 and again.array_id is None
    assert all(reason.startswith("finished") for reason in again.skipped.values()), again.skipped
    manifest = json.loads(run.manifest.read_text())
    assert [launch_["sbatch_calls"] for launch_ in manifest["launches"]] == [2, 0]


def test_cancelled_job_shows_cancelled(launched: dict[str, Any]) -> None:
    cancel: LaunchResult = launched["cancel"]
    job_id = cancel.job_ids["cat_fold3"]
    wait_for("the job to run", lambda: states([job_id]).get(job_id, None) and states([job_id])[job_id].state == "RUNNING")
    slurm_query.scancel([job_id, cancel.aggregate_id])
    row = wait_for("CANCELLED", lambda: (r := states([job_id]).get(job_id)) and r.state == "CANCELLED" and r)
    assert row.raw_state.startswith("CANCELLED")
    assert not (launched["root"] / "outputs" / "it-cancel" / "cat_fold3" / "scores.json").exists()


def test_time_limit_requeues_and_resumes_from_checkpoint(launched: dict[str, Any]) -> None:
    requeue: LaunchResult = launched["requeue"]
    job_id = requeue.job_ids["align_fold2"]
    progress = launched["root"] / "outputs" / "it-requeue" / "align_fold2" / "progress.json"

    def resumed() -> dict[str, Any] | None:
        try:
            p = json.loads(progress.read_text())
        except (OSError, ValueError):
            return None
        return p if p.get("restarts", 0) >= 1 and "resuming" in log_text(requeue, "align_fold2") else None

    p = wait_for("a requeue after the 2-minute limit", resumed, timeout=600)
    log = log_text(requeue, "align_fold2")
    assert "resuming align_fold2 from" in log and " at epoch 0" not in log.split("resuming", 1)[1].splitlines()[0]
    assert p["epoch"] >= 1
    assert states([job_id])[job_id].state in ("RUNNING", "PENDING", "REQUEUED")  # the same id, still going
    restarts = subprocess.run(["scontrol", "show", "job", job_id], capture_output=True, text=True).stdout
    assert "Restarts=0" not in restarts
    slurm_query.scancel([job_id, requeue.aggregate_id])


# --------------------------------------------------------------------------- one launch at a time (held jobs)

HOLD = ["slurm.additional.hold=true"]  # the array stays pending (its aggregate job waits on it): no compute


def squeue_ids(name: str) -> list[str]:
    out = subprocess.run(["squeue", "-h", "-r", "-n", name, "-o", "%i|%T"], capture_output=True,
                         text=True, check=True).stdout
    return sorted(line for line in out.splitlines() if line.strip())


@pytest.fixture(scope="module")
def held(cluster: None, synth_store: Any, tmp_path_factory: pytest.TempPathFactory) -> Any:
    """Two camvis-launch processes of one grid, started together; everything is cancelled at the end."""
    root = tmp_path_factory.mktemp("held")
    cmd = [sys.executable, "-m", "camvis.cli.launch", str(DEMO), "experiment=it-lock",
           f"data.store={synth_store.path}", *TINY, *HOLD, "--only", "fold=1,2",
           "--outputs", str(root / "outputs"), "--jobs-dir", str(root / "jobs")]
    procs = [subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True) for _ in range(2)]
    outs = [p.communicate(timeout=300)[0] for p in procs]
    yield {"root": root, "outs": outs, "codes": [p.returncode for p in procs]}
    manifest = json.loads((root / "jobs" / "it-lock" / "manifest.json").read_text())
    ids = [str(x[k]) for x in manifest["launches"] for k in ("array_id", "aggregate_id") if x.get(k)]
    subprocess.run(["scancel", *ids], capture_output=True)


def test_two_launches_started_together_submit_each_job_once(held: Any) -> None:
    assert held["codes"] == [0, 0], held["outs"]
    manifest = json.loads((held["root"] / "jobs" / "it-lock" / "manifest.json").read_text())
    launches = sorted(manifest["launches"], key=lambda x: x["sbatch_calls"])
    assert [x["sbatch_calls"] for x in launches] == [0, 2]
    array, aggregate = launches[1]["array_id"], launches[1]["aggregate_id"]
    assert all(r.startswith(f"still queued/running as {array}_") for r in launches[0]["skipped"].values())
    assert {n: e["job_id"] for n, e in manifest["jobs"].items()} == \
        {n: f"{array}_{i}" for i, n in enumerate(["cat_fold1", "cat_fold2", "align_fold1", "align_fold2"])}
    queued = squeue_ids("camvis-it-lock,camvis-it-lock-aggregate")  # one array of 4 tasks, one aggregate job
    assert [q.split("|")[0] for q in queued] == sorted([f"{array}_{i}" for i in range(4)] + [aggregate]), queued
    assert any("waiting for another launch of it-lock (pid " in out for out in held["outs"]) or \
        launches[0]["time"] >= launches[1]["time"]  # the second either waited, or came after the first


def test_relaunch_cancels_the_pending_aggregate_and_shows_no_earlier_progress(held: Any, synth_store: Any) -> None:
    from camvis.cluster import monitor

    root = held["root"]
    earlier = root / "outputs" / "it-lock" / "cat_fold3"  # an earlier run's files, in the folder of a new job
    earlier.mkdir(parents=True)
    (earlier / "progress.json").write_text(json.dumps({"state": "done", "epoch": 7, "max_epochs": 7,
                                                       "updated": "2026-01-01T00:00:00+00:00"}))
    old = time.time() - 3600
    os.utime(earlier / "progress.json", (old, old))
    first = json.loads((root / "jobs" / "it-lock" / "manifest.json").read_text())
    first_agg = next(x["aggregate_id"] for x in first["launches"] if x["aggregate_id"])
    again = launch(DEMO, ["experiment=it-lock", f"data.store={synth_store.path}", *TINY, *HOLD],
                   only=["fold=1,2,3"], outputs=root / "outputs", jobs_dir=root / "jobs")
    assert again.submitted == ["cat_fold3", "align_fold3"] and again.cancelled == [first_agg]
    row = wait_for("the earlier aggregate job CANCELLED",
                   lambda: (r := slurm_query.query([first_agg]).rows.get(first_agg)) and r.state == "CANCELLED" and r)
    assert row.state == "CANCELLED"
    dep = subprocess.run(["scontrol", "show", "job", again.aggregate_id], capture_output=True, text=True).stdout
    assert f"afterany:{again.array_id}" in dep and "afterany:" + first["jobs"]["cat_fold1"]["array_id"] in dep, dep
    status = monitor.collect("it-lock", root / "jobs", root / "outputs")
    job = next(j for j in status.jobs if j.info.name == "cat_fold3")
    assert job.state == "PENDING" and job.progress is None and job.hidden == {"progress.json"}
    assert dict(status.aggregate)[first_agg] == "CANCELLED"


def test_a_cancelled_pending_task_shows_cancelled(held: Any) -> None:
    from camvis.cluster import monitor

    root = held["root"]
    job_id = json.loads((root / "jobs" / "it-lock" / "manifest.json").read_text())["jobs"]["cat_fold1"]["job_id"]
    assert monitor.cancel_experiment("it-lock", "cat_fold1", root / "jobs", root / "outputs") == [f"cancelled cat_fold1 ({job_id})"]

    def states() -> dict[str, str] | None:
        jobs = monitor.collect("it-lock", root / "jobs", root / "outputs").jobs
        out = {j.info.name: j.state for j in jobs}
        return out if out["cat_fold1"] == "CANCELLED" and out["cat_fold2"] == "PENDING" else None

    by_name = wait_for("cat_fold1 CANCELLED, the other tasks still PENDING", states, timeout=60)
    assert by_name["align_fold1"] == "PENDING"


def test_a_missing_store_submits_nothing(cluster: None, tmp_path: Path) -> None:
    from camvis.errors import SubmissionError

    with pytest.raises(SubmissionError, match="does not exist"):
        launch(DEMO, ["experiment=it-nostore", f"data.store={tmp_path / 'nowhere.zarr'}", "folds=3", *TINY],
               outputs=tmp_path / "outputs", jobs_dir=tmp_path / "jobs")
    assert squeue_ids("camvis-it-nostore,camvis-it-nostore-aggregate") == [] and not (tmp_path / "jobs").exists()


def test_a_grid_over_max_array_size_is_split_into_held_arrays(cluster: None, synth_store: Any, tmp_path: Path) -> None:
    """MaxArraySize + 2 held jobs: two arrays (the limit, then 2 tasks), the aggregate after both,
    the manifest and camvis-status across both; everything cancelled afterwards."""
    import yaml

    from camvis.cluster import monitor
    from camvis.cluster.sbatch import max_array_size

    limit = max_array_size()
    if limit > 5000:
        pytest.skip(f"MaxArraySize {limit}: a grid over it takes too long to launch in a test")
    n = limit + 2
    grid = tmp_path / "big.yaml"
    grid.write_text(yaml.safe_dump({
        "experiment": "it-arrays", "base": {"data": {"store": str(synth_store.path), "factors": [2, 4, 8]}},
        "axes": {"train.seed": list(range(n))},
        "slurm": {"time": 5, "cpus_per_task": 1, "mem_gb": 1, "array_parallelism": 3, "additional": {"hold": True}}}))
    result = launch(grid, outputs=tmp_path / "outputs", jobs_dir=tmp_path / "jobs")
    try:
        first, second = result.array_ids
        assert result.sbatch_calls == 3 and result.array_id == first and len(result.submitted) == n
        queued = subprocess.run(["squeue", "-h", "-r", "-j", f"{first},{second}", "-o", "%i"], capture_output=True,
                                text=True, check=True).stdout.split()
        assert sorted(queued) == sorted(result.job_ids.values())  # every task held in the queue
        dep = subprocess.run(["scontrol", "show", "job", result.aggregate_id], capture_output=True, text=True).stdout
        assert f"afterany:{first}" in dep and f"afterany:{second}" in dep, dep
        manifest = json.loads(result.manifest.read_text())
        assert manifest["launches"][-1]["array_ids"] == [first, second]
        tasks = sorted((e["array_id"], e["task"]) for e in manifest["jobs"].values())
        assert tasks == sorted([(first, i) for i in range(limit)] + [(second, 0), (second, 1)])
        status = monitor.collect("it-arrays", tmp_path / "jobs", tmp_path / "outputs")
        assert status.counts == {"PENDING": n}
        lines = monitor.cancel_experiment("it-arrays", None, tmp_path / "jobs", tmp_path / "outputs")
        assert lines == [f"cancelled job array {first}", f"cancelled job array {second}",
                         f"cancelled aggregate job {result.aggregate_id}"]
    finally:
        subprocess.run(["scancel", *result.array_ids, result.aggregate_id], capture_output=True)


def test_array_tasks_run_their_own_pickles_on_slurm(cluster: None, tmp_path: Path) -> None:
    """camvis.cluster.array_submit's tasks file through real sbatch, its runner and submitit's on the
    nodes: task i returns the name and fold of config i (any mix-up shows)."""
    import operator
    import pickle

    import submitit
    from submitit.core.utils import JobPaths

    from camvis.cluster.array_submit import submit_array
    from camvis.config import job_config_from_dict

    cfgs = [job_config_from_dict({"experiment": "it-pickles", "name": f"job{i}", "data": {"fold": i + 1}}, "test")
            for i in range(3)]
    folder = tmp_path / "jobs" / "%j"
    executor = submitit.AutoExecutor(folder=folder, cluster="slurm")
    executor.update_parameters(name="camvis-it-pickles", timeout_min=5, cpus_per_task=1, mem_gb=1,
                               slurm_array_parallelism=3)
    tasks = submit_array(executor, operator.attrgetter("name", "data.fold"), [(c,) for c in cfgs])
    array = tasks[0].job_id.split("_")[0]
    try:
        results = [JobPaths(folder, job_id=t.job_id, task_id=0).result_pickle for t in tasks]
        wait_for("the 3 tasks' results", lambda: all(p.exists() for p in results), timeout=300)
        assert [pickle.loads(p.read_bytes()) for p in results] == \
            [("success", (f"job{i}", i + 1)) for i in range(3)]
    finally:
        subprocess.run(["scancel", array], capture_output=True)


def test_every_rank_of_an_array_task_runs_that_tasks_pickle(cluster: None, tmp_path: Path) -> None:
    """Two ranks per task: both runners copy the task's pickle (the same bytes, renamed into place) and
    each rank's submitit runner writes its own result; no temporary is left."""
    import operator
    import pickle

    import submitit
    from submitit.core.utils import JobPaths

    from camvis.cluster.array_submit import submit_array
    from camvis.config import job_config_from_dict

    cfgs = [job_config_from_dict({"experiment": "it-ranks", "name": f"job{i}"}, "test") for i in range(2)]
    folder = tmp_path / "jobs" / "%j"
    executor = submitit.AutoExecutor(folder=folder, cluster="slurm")
    executor.update_parameters(name="camvis-it-ranks", timeout_min=5, tasks_per_node=2, cpus_per_task=1,
                               mem_gb=1, slurm_array_parallelism=2)
    tasks = submit_array(executor, operator.attrgetter("name"), [(c,) for c in cfgs])
    try:
        results = {(t.job_id, rank): JobPaths(folder, job_id=t.job_id, task_id=rank).result_pickle
                   for t in tasks for rank in (0, 1)}
        wait_for("both ranks of both tasks", lambda: all(p.exists() for p in results.values()), timeout=300)
        for (job_id, _), path in results.items():
            assert pickle.loads(path.read_bytes()) == ("success", f"job{job_id.split('_')[1]}")
        for t in tasks:
            assert not list(Path(t.paths.submitted_pickle).parent.glob(".*.tmp"))
    finally:
        subprocess.run(["scancel", tasks[0].job_id.split("_")[0]], capture_output=True)
