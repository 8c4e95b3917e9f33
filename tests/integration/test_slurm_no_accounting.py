"""camvis on a real SLURM without accounting (`bash slurm/cluster.sh restart --no-accounting`).

Many sites run SLURM with no slurmdbd, so sacct fails there. The launcher and camvis-status
must then fall back to squeue, which forgets a job once it ends: a job that squeue no
longer shows reads its state from its files instead. This module restarts the local
cluster without accounting, runs one demo job through it, and puts accounting back
afterwards, whatever happens. It runs after test_slurm.py (file order), whose tests need
accounting.
"""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any

import pytest
from test_slurm import DEMO, TINY, cluster, wait_for  # noqa: F401 (cluster: the shared fixture)

from camvis.cluster import monitor
from camvis.bookkeeping import slurm_query
from camvis.cluster.launch import LaunchResult, launch

pytestmark = [pytest.mark.slurm, pytest.mark.slow]

CLUSTER_SH = Path(__file__).resolve().parents[2] / "slurm" / "cluster.sh"
EXPERIMENT = "it-noacct"


def restart_cluster(*flags: str) -> None:
    proc = subprocess.run(["bash", str(CLUSTER_SH), "restart", *flags], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, f"cluster.sh restart {' '.join(flags)} failed:\n{proc.stdout}\n{proc.stderr}"


def sacct_works() -> bool:
    return subprocess.run(["sacct", "-n", "-X", "-S", "now"], capture_output=True).returncode == 0


@pytest.fixture(scope="module")
def no_accounting(cluster: None) -> Any:  # noqa: F811
    restart_cluster("--no-accounting")
    try:
        assert not sacct_works(), "sacct still answers after a restart without accounting"
        yield
    finally:
        restart_cluster()
        wait_for("sacct to answer again", sacct_works, timeout=120, every=1.0)


@pytest.fixture(scope="module")
def launched(no_accounting: None, synth_store: Any, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    root = tmp_path_factory.mktemp("noacct")
    overrides = [f"experiment={EXPERIMENT}", f"data.store={synth_store.path}", *TINY, "train.max_epochs=2"]

    def go() -> LaunchResult:
        return launch(DEMO, overrides, only=["name=cat_fold1"], outputs=root / "outputs", jobs_dir=root / "jobs")

    first = go()
    yield {"root": root, "first": first, "go": go}
    subprocess.run(["scancel", *(i for i in (first.array_id, first.aggregate_id) if i)], capture_output=True)


def status(launched: dict[str, Any]) -> monitor.ExperimentStatus:
    root = launched["root"]
    return monitor.collect(EXPERIMENT, jobs=root / "jobs", outputs=root / "outputs")


def test_queued_job_is_seen_through_squeue_and_not_submitted_twice(launched: dict[str, Any]) -> None:
    first: LaunchResult = launched["first"]
    assert first.submitted == ["cat_fold1"] and first.array_id
    job = status(launched).jobs[0]
    assert status(launched).slurm.source == "squeue"
    assert job.source == "squeue" and job.state in ("PENDING", "RUNNING"), job
    again: LaunchResult = launched["go"]()  # the job takes well over a second to start and train
    assert again.submitted == [] and again.sbatch_calls == 0
    assert again.decisions[0].status == "active" and first.job_ids["cat_fold1"] in again.decisions[0].reason


def test_finished_job_reads_completed_from_its_files(launched: dict[str, Any]) -> None:
    first: LaunchResult = launched["first"]
    job_id = first.job_ids["cat_fold1"]
    wait_for("squeue to forget the finished job and its aggregate job",
             lambda: not {job_id, first.aggregate_id} & set(slurm_query.query([job_id, first.aggregate_id]).rows),
             timeout=900)
    job = status(launched).jobs[0]
    assert (job.state, job.source, job.finished) == ("COMPLETED", "files", True), job
    assert (launched["root"] / "outputs" / EXPERIMENT / "summary.md").exists()  # the aggregate job ran
