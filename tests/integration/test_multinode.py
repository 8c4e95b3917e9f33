"""Several nodes on the real local SLURM (`bash slurm/cluster.sh start --nodes 2`, as `make test` starts it).

Every job here is the demo grid's cat_fold1 at a tiny size, so that every run can be compared
with every other one, bit for bit:
- reference: 2 nodes x 1 task and 1 node x 2 tasks, launched together: one DDP process group
  over every task of every node, the same result either way;
- node death: n2 is killed whole (cluster.sh kill-node) mid-training: NODE_FAIL, SLURM requeues
  the job, it waits for n2, resumes from its checkpoint and ends identical to the reference;
  the aggregate job (afterany on the array) waits for the requeued run;
- SIGKILL of one rank: the job FAILS (SLURM requeues node failures, not lost tasks); the
  next camvis-launch resubmits it and it resumes identically; rank 0 lost before the rendezvous
  ends the job at once (srun --kill-on-bad-exit), not at its time limit;
- preemption: `scontrol requeue` of the running 2-node job: resumes identically;
- drain: a node drained while an array runs: the remaining tasks run on the other node.
The faults run one after the other (a node death would kill any job sharing the node).
A submitit job object that polled during a requeue may report NODE_FAIL although the requeued
run completes: these tests judge by the job's files and a fresh sacct query only.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest
from test_slurm import DEMO, REQUIRED, TINY, wait_for

from camvis.cluster import monitor
from camvis.cluster.launch import LaunchResult, launch

pytestmark = [pytest.mark.slurm, pytest.mark.multinode, pytest.mark.slow]

CLUSTER_SH = Path(__file__).resolve().parents[2] / "slurm" / "cluster.sh"
EPOCHS = 24  # long enough that a poll every 0.2 s sees the job mid-training, even after a slow launch
JOB = [*TINY, f"train.max_epochs={EPOCHS}", "train.epoch_patches=128", "train.min_lr=0",
       "train.plateau_patience=100000", "slurm.max_requeues=3", "slurm.time=10"]
TWO_NODES = ["slurm.nodes=2", "slurm.tasks_per_node=1"]
ONE_NODE = ["slurm.nodes=1", "slurm.tasks_per_node=2"]
NAME = "cat_fold1"


def nodes() -> dict[str, str]:
    out = subprocess.run(["sinfo", "-h", "-N", "-o", "%N|%T"], capture_output=True, text=True).stdout
    return dict(line.split("|") for line in sorted(set(out.splitlines())) if "|" in line)


def cluster_sh(*args: str) -> str:
    proc = subprocess.run(["bash", str(CLUSTER_SH), *args], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, f"cluster.sh {' '.join(args)}:\n{proc.stdout}\n{proc.stderr}"
    return proc.stdout


@pytest.fixture(scope="module")
def two_nodes() -> list[str]:
    if not REQUIRED:
        pytest.skip("multi-node SLURM tests: run `make test` or set CAMVIS_SLURM=1 with "
                    "`bash slurm/cluster.sh start --nodes 2` up")
    found = nodes()
    usable = [n for n, s in found.items() if s.rstrip("*~#") in ("idle", "mixed", "allocated", "completing")]
    if len(usable) < 2:
        pytest.fail(f"CAMVIS_SLURM=1 but the local cluster has {found or 'no nodes'}: these tests need 2 "
                    f"nodes (bash slurm/cluster.sh start --nodes 2)")
    return usable[:2]


@pytest.fixture(scope="module")
def root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("multinode")


def go(root: Path, store: Any, experiment: str, overrides: list[str], only: list[str] | None = None) -> LaunchResult:
    return launch(DEMO, [f"experiment={experiment}", f"data.store={store.path}", *JOB, *overrides],
                  only=only or [f"name={NAME}"], outputs=root / "outputs", jobs_dir=root / "jobs")


def sacct(job_id: str, *, attempts: bool = False) -> list[dict[str, str]]:
    """A fresh query: every attempt of the job with -D (a requeued job has one row per run)."""
    cmd = ["sacct", "-X", "-n", "-P", "-j", job_id, "-o", "JobID,State,NodeList,Start,End"]
    out = subprocess.run([*cmd, *(["-D"] if attempts else [])], capture_output=True, text=True, check=True).stdout
    keys = ("id", "state", "nodes", "start", "end")
    return [dict(zip(keys, line.split("|"))) for line in out.splitlines() if line]


def ended(job_id: str) -> dict[str, str] | None:
    rows = sacct(job_id)
    return rows[-1] if rows and rows[-1]["state"].split()[0] in ("COMPLETED", "FAILED", "CANCELLED", "TIMEOUT") \
        else None


def running_on(job_id: str) -> str | None:
    """The node of a running job, from the controller itself (sacct's database may lag a short job by seconds)."""
    out = subprocess.run(["squeue", "-h", "-j", job_id, "-o", "%T|%N"], capture_output=True, text=True).stdout.split()
    if out and out[0].startswith("RUNNING|"):
        return out[0].split("|", 1)[1]
    if not out and ended(job_id):
        pytest.fail(f"{job_id} ended before it was seen running: give it more epochs")
    return None


def completed(result: LaunchResult, job_id: str, timeout: float = 900) -> dict[str, str]:
    row = wait_for(f"{job_id} to end", lambda: ended(job_id), timeout=timeout)
    assert row["state"] == "COMPLETED", (row, log_tail(result))
    return row


def log_tail(result: LaunchResult) -> str:
    manifest = json.loads(result.manifest.read_text())
    path = result.manifest.parent / manifest["jobs"][NAME]["stdout"]
    return path.read_text()[-20000:] if path.exists() else ""  # a resumed run's whole log: its "resuming" line


def job_dir(root: Path, experiment: str, name: str = NAME) -> Path:
    return root / "outputs" / experiment / name


def progress(root: Path, experiment: str) -> dict[str, Any] | None:
    try:
        return json.loads((job_dir(root, experiment) / "progress.json").read_text())
    except (OSError, ValueError):
        return None


def mid_training(root: Path, experiment: str) -> dict[str, Any] | None:
    p = progress(root, experiment)
    if p and (int(p.get("epoch", 0)) >= EPOCHS or p.get("state") == "done"):
        pytest.fail(f"{experiment}'s job finished before it was seen mid-training: raise EPOCHS")
    return p if p and 2 <= int(p.get("epoch", 0)) < EPOCHS else None


def assert_identical(a: Path, b: Path) -> None:
    import torch

    ca = torch.load(a / "checkpoint.pt", weights_only=True)
    cb = torch.load(b / "checkpoint.pt", weights_only=True)
    assert ca["state"]["epoch"] == cb["state"]["epoch"] == EPOCHS

    def learning(history: list[dict[str, Any]]) -> list[dict[str, Any]]:  # everything but timing
        return [{k: v for k, v in h.items() if k != "samples_per_s"} for h in history]

    assert learning(ca["state"]["history"]) == learning(cb["state"]["history"])
    for key, tensor in ca["model"].items():
        assert torch.equal(tensor, cb["model"][key]), key
    scores_a, scores_b = (json.loads((d / "scores.json").read_text()) for d in (a, b))
    assert scores_a["metrics"] == scores_b["metrics"]


# --------------------------------------------------------------------------- the reference runs


@pytest.fixture(scope="module")
def reference(two_nodes: list[str], synth_store: Any, root: Path) -> dict[str, Any]:
    runs = {"2x1": go(root, synth_store, "mn-2x1", TWO_NODES), "1x2": go(root, synth_store, "mn-1x2", ONE_NODE)}
    try:
        rows = {k: completed(r, r.job_ids[NAME]) for k, r in runs.items()}
    finally:
        subprocess.run(["scancel", *(r.aggregate_id for r in runs.values() if r.aggregate_id)], capture_output=True)
    return {"runs": runs, "rows": rows}


def test_two_nodes_by_one_task_equal_one_node_by_two_tasks(reference: dict[str, Any], root: Path) -> None:
    rows = reference["rows"]
    assert rows["2x1"]["nodes"] in ("n[1-2]", "n1,n2"), rows  # one job over both nodes
    assert "," not in rows["1x2"]["nodes"] and "[" not in rows["1x2"]["nodes"], rows
    assert_identical(job_dir(root, "mn-2x1"), job_dir(root, "mn-1x2"))


def test_status_shows_the_node_list_of_a_multi_node_job(reference: dict[str, Any], root: Path) -> None:
    status = monitor.collect("mn-2x1", root / "jobs", root / "outputs")
    job = status.jobs[0]
    assert job.state == "COMPLETED" and monitor.node_list(job.slurm.node) == ["n1", "n2"]
    table = monitor.build_table(status)
    assert "n1,n2" in "".join(str(c) for col in table.columns for c in col._cells)


# --------------------------------------------------------------------------- node death


def test_a_killed_node_requeues_the_job_which_resumes_identically(reference: dict[str, Any], synth_store: Any,
                                                                  root: Path) -> None:
    run = go(root, synth_store, "mn-kill", TWO_NODES)
    job_id = run.job_ids[NAME]
    revived = False
    try:
        at = wait_for("the 2-node job mid-training", lambda: mid_training(root, "mn-kill"), timeout=600, every=0.2)
        cluster_sh("kill-node", "n2")
        wait_for("NODE_FAIL of the first attempt",
                 lambda: any(r["state"] == "NODE_FAIL" for r in sacct(job_id, attempts=True)), timeout=120)
        pending = monitor.collect("mn-kill", root / "jobs", root / "outputs").jobs[0]
        assert pending.state in ("PENDING", "REQUEUED", "NODE_FAIL"), pending  # needs both nodes: it waits
        cluster_sh("revive-node", "n2")
        revived = True
        running = wait_for("the requeued run", lambda: (j := monitor.collect(
            "mn-kill", root / "jobs", root / "outputs").jobs[0]).state in ("RUNNING", "COMPLETED") and j)
        completed(run, job_id)
    finally:
        if not revived:
            cluster_sh("revive-node", "n2")
    attempts = sacct(job_id, attempts=True)
    assert [a["state"] for a in attempts] == ["NODE_FAIL", "COMPLETED"], attempts
    assert "resuming" in log_tail(run), log_tail(run)
    p = progress(root, "mn-kill")
    assert p["restarts"] == 1 and p["state"] == "done", (p, at, running)
    assert_identical(job_dir(root, "mn-2x1"), job_dir(root, "mn-kill"))
    # the aggregate job (afterany on the array) waited for the requeued run, not for the NODE_FAIL
    agg = completed(run, run.aggregate_id, timeout=300)
    assert agg["start"] >= attempts[-1]["end"], (agg, attempts)
    assert (root / "outputs" / "mn-kill" / "summary.md").exists()
    status = monitor.collect("mn-kill", root / "jobs", root / "outputs").jobs[0]
    assert status.state == "COMPLETED" and status.progress["restarts"] == 1
    table = monitor.build_table(monitor.collect("mn-kill", root / "jobs", root / "outputs"))
    assert str(table.columns[3]._cells[0]) == "COMPLETED (after NODE_FAIL; restarts 1)"  # sacct -D: what happened


# --------------------------------------------------------------------------- SIGKILL of one rank


RUNNERS = {b"submitit.core._submit", b"camvis.node.array_task"}  # a single job's, an array task's


def rank_pids(job_id: str, rank: int) -> list[int]:
    """Host pids of the job's Python processes of one rank (found by their SLURM environment)."""
    raw = subprocess.run(["squeue", "-h", "-j", job_id, "-o", "%A"], capture_output=True, text=True).stdout.split()
    if not raw:
        return []
    want = {f"SLURM_JOB_ID={raw[0]}".encode(), f"SLURM_PROCID={rank}".encode()}
    pids = []
    for proc in Path("/proc").iterdir():
        try:
            cmdline = (proc / "cmdline").read_bytes().split(b"\0")
            if cmdline[0].endswith(b"python") or b"python" in cmdline[0].rsplit(b"/", 1)[-1]:
                if RUNNERS & set(cmdline) and want <= set((proc / "environ").read_bytes().split(b"\0")):
                    pids.append(int(proc.name))
        except (OSError, ValueError, IndexError):
            continue
    return pids


def test_a_rank_killed_fails_the_job_and_a_relaunch_resumes_identically(reference: dict[str, Any],
                                                                        synth_store: Any, root: Path) -> None:
    run = go(root, synth_store, "mn-sigkill", TWO_NODES)
    job_id = run.job_ids[NAME]
    wait_for("the 2-node job mid-training", lambda: mid_training(root, "mn-sigkill"), timeout=600, every=0.2)
    pids = wait_for("rank 1's process", lambda: rank_pids(job_id, 1), timeout=60, every=0.5)
    for pid in pids:
        os.kill(pid, signal.SIGKILL)
    row = wait_for(f"{job_id} to end", lambda: ended(job_id), timeout=300)
    assert row["state"] == "FAILED", row  # a lost rank is not requeued by SLURM: the launcher resubmits it
    again = go(root, synth_store, "mn-sigkill", TWO_NODES)
    assert again.submitted == [NAME], again.decisions
    completed(again, again.job_ids[NAME])
    assert "resuming" in log_tail(again)
    assert_identical(job_dir(root, "mn-2x1"), job_dir(root, "mn-sigkill"))
    subprocess.run(["scancel", *(r.aggregate_id for r in (run, again) if r.aggregate_id)], capture_output=True)


def test_rank_0_lost_before_the_rendezvous_ends_the_job_at_once(reference: dict[str, Any], synth_store: Any,
                                                                root: Path) -> None:
    """srun --kill-on-bad-exit: without it rank 1 waits for rank 0's rendezvous until the time limit (10 min)."""
    run = go(root, synth_store, "mn-rank0", TWO_NODES)
    job_id = run.job_ids[NAME]
    pids = wait_for("rank 0's process", lambda: rank_pids(job_id, 0), timeout=600, every=0.05)
    for pid in pids:
        os.kill(pid, signal.SIGKILL)
    row = wait_for(f"{job_id} to end", lambda: ended(job_id), timeout=180)
    assert row["state"] == "FAILED", row
    assert progress(root, "mn-rank0") is None  # killed before training began: before the rendezvous
    subprocess.run(["scancel", run.aggregate_id], capture_output=True)


# --------------------------------------------------------------------------- preemption


def test_a_preempted_multi_node_job_resumes_identically(reference: dict[str, Any], synth_store: Any,
                                                        root: Path) -> None:
    run = go(root, synth_store, "mn-preempt", TWO_NODES)
    job_id = run.job_ids[NAME]
    wait_for("the 2-node job mid-training", lambda: mid_training(root, "mn-preempt"), timeout=600, every=0.2)
    subprocess.run(["scontrol", "requeue", job_id], check=True, capture_output=True)
    completed(run, job_id)
    attempts = sacct(job_id, attempts=True)
    assert len(attempts) == 2 and attempts[0]["state"] == "REQUEUED", attempts
    assert progress(root, "mn-preempt")["restarts"] == 1
    assert_identical(job_dir(root, "mn-2x1"), job_dir(root, "mn-preempt"))
    subprocess.run(["scancel", run.aggregate_id], capture_output=True)


# --------------------------------------------------------------------------- drain


def test_a_drained_node_leaves_the_remaining_tasks_to_the_other(two_nodes: list[str], synth_store: Any,
                                                                root: Path) -> None:
    names = ["cat_fold1", "cat_fold2", "cat_fold3"]
    run = go(root, synth_store, "mn-drain", ["slurm.nodes=1", "slurm.tasks_per_node=1", "train.max_epochs=8",
                                             "slurm.array_parallelism=1"], only=[f"name={','.join(names)}"])
    ids = [run.job_ids[n] for n in names]
    drained = wait_for("the first task to run", lambda: running_on(ids[0]), timeout=600, every=0.2)
    other = next(n for n in two_nodes if n != drained)
    try:
        subprocess.run(["scontrol", "update", f"nodename={drained}", "state=drain", "reason=camvis-test"],
                       check=True, capture_output=True)
        rows = [completed(run, i) for i in ids]
    finally:
        subprocess.run(["scontrol", "update", f"nodename={drained}", "state=resume"], capture_output=True)
    assert rows[0]["nodes"] == drained  # the running task ended where it was
    assert [r["nodes"] for r in rows[1:]] == [other, other], rows
    for name in names:
        assert json.loads((job_dir(root, "mn-drain", name) / "scores.json").read_text())["job"] == name
    completed(run, run.aggregate_id, timeout=300)
    assert (root / "outputs" / "mn-drain" / "summary.md").exists()
