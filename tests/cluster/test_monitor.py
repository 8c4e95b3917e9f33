"""camvis-status: sacct/squeue parsing, the join with manifest and progress.json, rendering, logs, cancel."""

from __future__ import annotations

import dataclasses
import io
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Sequence

import pytest
from rich.console import Console

from camvis.bookkeeping import experiment_files
from camvis.cluster import monitor
from camvis.bookkeeping import slurm_query
from camvis.cli import status as cli
from camvis.errors import ConfigError, SubmissionError

EXP = "cv"

SACCT = """\
123_0|COMPLETED|node1|00:05:00|0:0
123_0.batch|COMPLETED|node1|00:05:00|0:0
123_0.extern|COMPLETED|node1|00:05:00|0:0
123_1|CANCELLED by 0|node1|00:01:00|0:15
123_2|REQUEUED|node1|00:02:00|0:0
123_2|RUNNING|node2|00:00:30|0:0
123_3|FAILED|node1|00:00:10|1:0
123_[4-7%2]|PENDING|None assigned|00:00:00|0:0
124|PENDING|None assigned|00:00:00|0:0
"""

SQUEUE = """\
123_2|RUNNING|node2|0:30
123_[4-7%2]|PENDING||0:00
124|PENDING||0:00
"""


class FakeSlurm:
    """Stands in for subprocess.run: answers sacct/squeue/scancel from canned text, records calls."""

    def __init__(self, sacct: str | None = SACCT, squeue: str | None = SQUEUE, squeue_err: str = "") -> None:
        self.sacct, self.squeue, self.squeue_err = sacct, squeue, squeue_err
        self.calls: list[list[str]] = []

    def __call__(self, cmd: Sequence[str]) -> subprocess.CompletedProcess:
        cmd = list(cmd)
        self.calls.append(cmd)
        if cmd[0] == "sacct":
            if self.sacct is None:
                return subprocess.CompletedProcess(cmd, 1, "", "sacct: error: Slurm accounting storage is disabled\n")
            return subprocess.CompletedProcess(cmd, 0, self.sacct, "")
        if cmd[0] == "squeue":
            if self.squeue is None:
                return subprocess.CompletedProcess(cmd, 1, "", self.squeue_err)
            return subprocess.CompletedProcess(cmd, 0, self.squeue, "")
        return subprocess.CompletedProcess(cmd, 0, "", "")  # scancel


def _never_run(cmd: Sequence[str]) -> subprocess.CompletedProcess:
    raise AssertionError(f"a unit test ran the real {cmd[0]}")


@pytest.fixture(autouse=True)
def _no_real_slurm(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> None:
    # Without an explicit fake runner, behave as on a machine without SLURM (even where one runs):
    # fabricated ids must never reach the real sacct/scancel.
    if request.node.get_closest_marker("slurm") is None:
        monkeypatch.setattr(slurm_query, "tool_on_path", lambda name: False)
        monkeypatch.setattr(slurm_query, "_run", _never_run)


def write_json(path: Path, obj: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(obj))


def progress(state: str, epoch: int = 5, **extra: object) -> dict:
    return {"state": state, "epoch": epoch, "max_epochs": 100,
            "metrics": {"train_loss": 0.3, "val_loss": 0.4, "val_acc": 0.8, "val_f1": 0.79, "lr": 1e-3},
            "best": {"metric": "acc", "value": 0.8123, "epoch": 4}, "samples_per_s": 1234.4, "eta_s": 3600.0,
            "updated": "2026-01-01T00:00:00", "host": "node2", "restarts": 0, **extra}  # fmt: skip


def make_experiment(root: Path, name: str = EXP, mode: str = "slurm", array: str = "123", aggregate: str | None = "124") -> None:
    """8 jobs (cat/align x folds 1-4) as tasks array_0..7, in a shuffled manifest order."""
    names = [f"{g}_fold{k}" for g in ("cat", "align") for k in (1, 2, 3, 4)]
    jobs = {}
    for task, job in enumerate(names):
        job_id = f"{array}_{task}" if mode == "slurm" else None
        logs = root / "jobs" / name / "logs"
        jobs[job] = {"group": job.split("_")[0], "fold": int(job[-1]), "view": f"cam{job[-1]}_1", "axes": {},
                     "hash": "h1", "config": {}, "mode": mode, "job_id": job_id, "array_id": array if job_id else None,
                     "task": task, "submitted": "2026-01-01T00:00:00",
                     "stdout": str(logs / f"{job}.out"), "stderr": str(logs / f"{job}.err")}  # fmt: skip
    shuffled = dict(sorted(jobs.items(), key=lambda kv: kv[1]["task"] * 5 % 8))
    write_json(root / "jobs" / name / "manifest.json", {
        "experiment": name, "grid": "configs/cv.yaml", "outputs": "../../outputs", "updated": "2026-01-01T00:00:00",
        "launches": [{"time": "2026-01-01T00:00:00", "mode": mode, "array_id": array if mode == "slurm" else None,
                      "aggregate_id": aggregate if mode == "slurm" else None, "submitted": names, "skipped": {},
                      "code_version": "abc", "sbatch_calls": 2}],
        "jobs": shuffled,
    })  # fmt: skip
    out = root / "outputs" / name
    write_json(out / "cat_fold1" / "progress.json", progress("done", 100))
    write_json(out / "cat_fold1" / "scores.json", {"config_hash": "h1", "metrics": {"loss": 0.3, "acc": 0.8, "f1": 0.8}})
    write_json(out / "cat_fold3" / "progress.json", progress("training"))
    write_json(out / "cat_fold4" / "progress.json", progress("failed", 2))
    err = root / "jobs" / name / "logs" / "cat_fold4.err"
    err.parent.mkdir(parents=True, exist_ok=True)
    err.write_text("".join(f"noise line {i}\n" for i in range(50)) + "Traceback (most recent call last):\nRuntimeError: boom\n")
    (root / "jobs" / name / "logs" / "cat_fold4.out").write_text("epoch 1\nepoch 2\n")


def collect(root: Path, runner: FakeSlurm | None = None, name: str = EXP) -> monitor.ExperimentStatus:
    return monitor.collect(name, root / "jobs", root / "outputs", runner=runner)


def render(renderable: object) -> str:
    console = Console(record=True, width=220)
    console.print(renderable)
    return console.export_text()


# --------------------------------------------------------------------------- parsing


def test_parse_sacct_handles_steps_requeues_cancel_and_pending_ranges() -> None:
    rows = slurm_query.parse_sacct(SACCT)
    assert sorted(rows) == ["123_0", "123_1", "123_2", "123_3", "123_4", "123_5", "123_6", "123_7", "124"]
    assert rows["123_1"].state == "CANCELLED" and rows["123_1"].raw_state == "CANCELLED by 0"
    assert (rows["123_2"].state, rows["123_2"].node, rows["123_2"].elapsed) == ("RUNNING", "node2", "00:00:30")
    assert rows["123_3"].exit_code == "1:0"
    assert rows["123_6"].state == "PENDING" and rows["123_6"].node == ""


def test_parse_squeue() -> None:
    rows = slurm_query.parse_squeue(SQUEUE)
    assert sorted(rows) == ["123_2", "123_4", "123_5", "123_6", "123_7", "124"]
    assert rows["123_2"].elapsed == "0:30" and rows["123_5"].state == "PENDING" and rows["124"].exit_code == ""


@pytest.mark.parametrize(("job_id", "expected"), [
    ("123_[4-7%2]", ["123_4", "123_5", "123_6", "123_7"]),
    ("123_[1,3-4]", ["123_1", "123_3", "123_4"]),
    ("123_[9]", ["123_9"]),
    ("123_4", ["123_4"]),
    ("77", ["77"]),
])  # fmt: skip
def test_expand_job_id(job_id: str, expected: list[str]) -> None:
    assert slurm_query.expand_job_id(job_id) == expected


@pytest.mark.parametrize(("raw", "state"), [("CANCELLED by 0", "CANCELLED"), ("RUNNING", "RUNNING"),
                                            ("completed", "COMPLETED"), ("", "UNKNOWN"), ("FAILED+", "FAILED")])  # fmt: skip
def test_normalize_state(raw: str, state: str) -> None:
    assert slurm_query.normalize_state(raw) == state


@pytest.mark.parametrize(("state", "active"), [
    ("PENDING", True), ("RUNNING", True), ("REQUEUED", True), ("REQUEUE_HOLD", True), ("SUSPENDED", True),
    ("COMPLETING", True), ("SPECIAL_EXIT", True),  # held after a special exit: SLURM's until released or cancelled
    ("SOME_NEW_STATE", True),  # not known to end a job: still SLURM's
    ("COMPLETED", False), ("FAILED", False), ("CANCELLED by 0", False), ("TIMEOUT", False), ("NODE_FAIL", False),
    ("OUT_OF_MEMORY", False), ("PREEMPTED", False), ("REVOKED", False),
    ("UNKNOWN", False), ("", False),  # no state: nothing will change it, --watch must not wait for it
])  # fmt: skip
def test_is_active_is_not_terminal(state: str, active: bool) -> None:
    assert slurm_query.is_active(state) is active


def test_every_active_check_uses_is_active(tmp_path: Path) -> None:
    """SPECIAL_EXIT (in no list) and REVOKED (terminal) read alike for status, cancel and the launcher."""
    make_experiment(tmp_path)
    held = "\n".join(f"123_{i}|COMPLETED|n|00:01:00|0:0" for i in range(8)) + "\n124|SPECIAL_EXIT|n|0|0:0\n"
    status = monitor.collect(EXP, tmp_path / "jobs", tmp_path / "outputs", runner=FakeSlurm(sacct=held))
    assert status.aggregate == [("124", "SPECIAL_EXIT")] and status.active
    fake = FakeSlurm(sacct=held)
    assert monitor.cancel_experiment(EXP, None, tmp_path / "jobs", tmp_path / "outputs", fake) == ["cancelled aggregate job 124"]
    revoked = held.replace("SPECIAL_EXIT", "REVOKED")
    status = monitor.collect(EXP, tmp_path / "jobs", tmp_path / "outputs", runner=FakeSlurm(sacct=revoked))
    assert not status.active
    assert monitor.cancel_experiment(EXP, None, tmp_path / "jobs", tmp_path / "outputs", FakeSlurm(sacct=revoked)) == [
        "nothing to cancel: every SLURM job has ended"]


# --------------------------------------------------------------------------- one batched query


def test_query_is_one_batched_sacct_call_per_array() -> None:
    fake = FakeSlurm()
    result = slurm_query.query(["123_0", "123_7", "124", None, "123_3"], fake)
    assert result.source == "sacct" and len(result.rows) == 9
    assert fake.calls == [["sacct", "-D", "-j", "123,124", "-P", "-n", "-o", slurm_query.SACCT_FIELDS]]


def test_query_falls_back_on_squeue_when_accounting_is_off() -> None:
    fake = FakeSlurm(sacct=None)
    result = slurm_query.query(["123_0", "124"], fake)
    assert result.source == "squeue" and "123_2" in result.rows and "123_0" not in result.rows
    assert [c[0] for c in fake.calls] == ["sacct", "squeue"]
    assert fake.calls[1] == ["squeue", "-h", "-t", "all", "-j", "123,124", "-o", "%i|%T|%N|%M"]


def test_ids_sacct_has_not_recorded_yet_are_asked_of_squeue() -> None:
    """slurmdbd learns of a job seconds after sbatch: meanwhile squeue knows it."""
    fake = FakeSlurm(sacct=SACCT.replace("124|PENDING|None assigned|00:00:00|0:0\n", ""), squeue="124|PENDING||0:00\n")
    result = slurm_query.query(["123_0", "124"], fake)
    assert result.source == "sacct" and result.rows["124"].state == "PENDING" and result.rows["123_0"].state == "COMPLETED"
    assert fake.calls[1] == ["squeue", "-h", "-t", "all", "-j", "124", "-o", "%i|%T|%N|%M"] and len(fake.calls) == 2


def test_query_when_squeue_has_forgotten_every_job() -> None:
    fake = FakeSlurm(sacct=None, squeue=None, squeue_err="slurm_load_jobs error: Invalid job id specified\n")
    result = slurm_query.query(["123_0"], fake)
    assert result.source == "squeue" and result.rows == {} and result.reachable


def test_query_when_slurm_is_unreachable() -> None:
    def missing(cmd: Sequence[str]) -> subprocess.CompletedProcess:
        raise FileNotFoundError(cmd[0])

    assert not slurm_query.query(["123_0"], missing).reachable
    down = FakeSlurm(sacct=None, squeue=None, squeue_err="slurm_load_jobs error: Unable to contact slurm controller\n")
    result = slurm_query.query(["123_0"], down)
    assert result.source is None and "Unable to contact" in result.note
    no_path = slurm_query.query(["123_0"])  # the autouse fixture hides sacct/squeue
    assert no_path.source is None and "not reachable" in no_path.note


# --------------------------------------------------------------------------- the join


def test_collect_joins_manifest_sacct_and_progress(tmp_path: Path) -> None:
    make_experiment(tmp_path)
    fake = FakeSlurm()
    status = collect(tmp_path, fake)
    assert len(fake.calls) == 1  # one batched query for the whole experiment
    by_name = {j.info.name: j for j in status.jobs}
    assert [j.info.name for j in status.jobs] == [f"align_fold{k}" for k in (1, 2, 3, 4)] + [f"cat_fold{k}" for k in (1, 2, 3, 4)]
    assert {n: j.state for n, j in by_name.items()} == {
        "cat_fold1": "COMPLETED", "cat_fold2": "CANCELLED", "cat_fold3": "RUNNING", "cat_fold4": "FAILED",
        **{f"align_fold{k}": "PENDING" for k in (1, 2, 3, 4)}}  # fmt: skip
    assert by_name["cat_fold3"].slurm.node == "node2" and by_name["cat_fold1"].finished
    assert monitor.progress_cells(by_name["cat_fold3"]) == ("5/100", "acc 0.8123", "1,234", "1:00:00")
    assert monitor.progress_cells(by_name["align_fold1"]) == ("-", "-", "-", "-")
    assert status.counts == {"COMPLETED": 1, "RUNNING": 1, "PENDING": 4, "FAILED": 1, "CANCELLED": 1}
    assert list(status.counts)[:3] == ["COMPLETED", "RUNNING", "PENDING"]
    assert status.aggregate == [("124", "PENDING")] and status.active


def test_jobs_squeue_has_forgotten_are_read_from_files(tmp_path: Path) -> None:
    make_experiment(tmp_path)
    status = collect(tmp_path, FakeSlurm(sacct=None))
    states = {j.info.name: (j.state, j.source) for j in status.jobs}
    assert states["cat_fold1"] == ("COMPLETED", "files")  # scores.json
    assert states["cat_fold4"] == ("FAILED", "files")  # progress.json says failed
    assert states["cat_fold2"] == ("UNKNOWN", "files")  # ended, left nothing
    assert states["cat_fold3"] == ("RUNNING", "squeue")
    assert "squeue" in render(monitor.slurm_line(status))


def test_unreachable_slurm_falls_back_on_files(tmp_path: Path) -> None:
    make_experiment(tmp_path)
    status = collect(tmp_path)  # no sacct/squeue on PATH
    states = {j.info.name: j.state for j in status.jobs}
    assert states["cat_fold1"] == "COMPLETED" and states["cat_fold3"] == "RUNNING" and states["align_fold2"] == "PENDING"
    assert "SLURM is not reachable" in render(monitor.status_renderable(status))


def test_local_runs_take_their_state_from_files(tmp_path: Path) -> None:
    make_experiment(tmp_path, mode="local")
    write_json(tmp_path / "outputs" / EXP / "align_fold2" / "progress.json", progress("evaluating"))
    fake = FakeSlurm()
    status = collect(tmp_path, fake)
    assert fake.calls == []  # nothing to ask SLURM
    states = {j.info.name: j.state for j in status.jobs}
    assert states == {"cat_fold1": "COMPLETED", "cat_fold2": "PENDING", "cat_fold3": "RUNNING", "cat_fold4": "FAILED",
                      "align_fold1": "PENDING", "align_fold2": "RUNNING", "align_fold3": "PENDING", "align_fold4": "PENDING"}  # fmt: skip
    assert "local run" in render(monitor.status_renderable(status))


def test_tasks_stuck_behind_a_failed_build_are_said_with_squeues_reason(tmp_path: Path) -> None:
    make_experiment(tmp_path, mode="local")
    status = dataclasses.replace(collect(tmp_path, FakeSlurm()), stuck=frozenset({"100_0", "100_1"}),
                                 store_builds=[("store build failed: see b.err", True)])
    text = render(monitor.status_renderable(status))
    assert "store build failed: see b.err" in text
    assert "2 jobs pending for ever behind it (squeue: DependencyNeverSatisfied)" in text


def test_error_txt_and_submitit_result_mark_local_jobs_failed(tmp_path: Path) -> None:
    make_experiment(tmp_path, mode="local")
    out = tmp_path / "outputs" / EXP
    (out / "align_fold1").mkdir(parents=True)
    (out / "align_fold1" / "error.txt").write_text("Traceback (most recent call last):\nIndexError: index 95\n")
    old = out / "cat_fold3" / "error.txt"  # an earlier attempt's error; the job has restarted since
    old.write_text("Traceback\nOSError: disk full\n")
    os.utime(old, (time.time() - 60, time.time() - 60))
    manifest_path = tmp_path / "jobs" / EXP / "manifest.json"
    manifest = json.loads(manifest_path.read_text())
    log_dir = tmp_path / "jobs" / EXP / "4242"
    log_dir.mkdir()
    manifest["jobs"]["align_fold2"]["stdout"] = str(log_dir / "4242_0_log.out")
    manifest_path.write_text(json.dumps(manifest))
    (log_dir / "4242_0_result.pkl").write_bytes(b"x")  # submitit: the job has ended (here without scores)
    status = collect(tmp_path)
    jobs = {j.info.name: j for j in status.jobs}
    assert (jobs["align_fold1"].state, jobs["align_fold1"].error) == ("FAILED", "IndexError: index 95")
    assert jobs["cat_fold3"].state == "RUNNING" and jobs["align_fold2"].state == "FAILED"
    text = render(monitor.status_renderable(status))
    assert "error.txt" in text and "IndexError: index 95" in text  # no stderr file: the traceback instead
    (out / "align_fold3").mkdir()
    (out / "align_fold3" / "error.txt").write_text("Traceback (most recent call last):\nIndexError: index 95\n")
    text = render(monitor.status_renderable(collect(tmp_path)))
    assert text.count("IndexError: index 95") == 1 and "(same last lines as align_fold1)" in text
    streams = [s for s, _, _ in experiment_files.job_logs(EXP, "align_fold1", tmp_path / "jobs", tmp_path / "outputs")]
    assert streams == ["stdout", "stderr", "error.txt"]


@pytest.mark.parametrize("scores", [{"config_hash": "old"}, {"metrics": {"acc": 0.9}}])
def test_scores_of_another_config_do_not_count_as_completed(tmp_path: Path, scores: dict) -> None:
    # The launcher resubmits such a job (camvis.cluster.plan), so status must not call it COMPLETED.
    make_experiment(tmp_path, mode="local")
    write_json(tmp_path / "outputs" / EXP / "cat_fold2" / "scores.json", scores)
    job = next(j for j in collect(tmp_path).jobs if j.info.name == "cat_fold2")
    assert job.state == "PENDING" and not job.finished


def test_without_manifest_job_folders_are_the_jobs(tmp_path: Path) -> None:
    make_experiment(tmp_path, mode="local")
    (tmp_path / "jobs" / EXP / "manifest.json").unlink()
    (tmp_path / "outputs" / EXP / "figures").mkdir()  # aggregate's output is no job
    status = collect(tmp_path)
    assert [j.info.name for j in status.jobs] == ["cat_fold1", "cat_fold3", "cat_fold4"]
    assert [j.info.fold for j in status.jobs] == [1, 3, 4]
    with pytest.raises(ConfigError, match="unknown experiment 'nope'"):
        collect(tmp_path, name="nope")


# --------------------------------------------------------------------------- rendering


def test_table_renders_every_column_counts_and_failure_tails(tmp_path: Path) -> None:
    make_experiment(tmp_path)
    text = render(monitor.status_renderable(collect(tmp_path, FakeSlurm()), tail_lines=5))
    for column in ("job", "group", "fold", "state", "node", "elapsed", "epoch", "best", "samples/s", "ETA"):
        assert column in text
    line = next(ln for ln in text.splitlines() if "cat_fold3" in ln)
    for cell in ("123_2", "RUNNING", "node2", "00:00:30", "5/100", "acc 0.8123", "1,234", "1:00:00"):
        assert cell in line
    assert "COMPLETED 1  RUNNING 1  PENDING 4  FAILED 1  CANCELLED 1" in text
    assert "aggregate job: 124 PENDING" in text and "SLURM view: sacct" in text
    assert "RuntimeError: boom" in text and "noise line 47" in text and "noise line 46" not in text
    assert "CANCELLED by 0" in text  # cancelled jobs are failures too: their (empty) stderr is reported
    assert text.index("align_fold1") < text.index("align_fold4") < text.index("cat_fold1")


def test_table_shows_replicates_as_such(tmp_path: Path) -> None:
    make_experiment(tmp_path, mode="local")
    path = tmp_path / "jobs" / EXP / "manifest.json"
    manifest = json.loads(path.read_text())
    manifest["jobs"] = {f"{name}_rep{r}": {**entry, "replicate": r} for name, entry in manifest["jobs"].items()
                        for r in (1, 2)}
    path.write_text(json.dumps(manifest))
    text = render(monitor.build_table(collect(tmp_path)))
    assert "16 jobs (2 groups x 4 folds x 2 replicates)" in text
    header = next(ln for ln in text.splitlines() if "┃ job" in ln)
    assert [c.strip() for c in header.split("┃")[1:5]] == ["job (id)", "group", "fold", "rep"]
    row = next(ln for ln in text.splitlines() if "cat_fold2_rep2" in ln)
    assert [c.strip() for c in row.split("│")[3:5]] == ["2", "2"]  # fold, replicate
    make_experiment(tmp_path / "plain", mode="local")  # without replicates: neither column nor shape
    text = render(monitor.build_table(collect(tmp_path / "plain")))
    assert "rep" not in next(ln for ln in text.splitlines() if "┃ job" in ln) and "replicate" not in text


def state_cells(status: monitor.ExperimentStatus) -> dict[str, str]:
    """The table's state cell of each job, as printed."""
    text = render(monitor.build_table(status))
    return {ln.split()[1]: ln.split("│")[4].strip() for ln in text.splitlines() if "_fold" in ln}


def test_state_cell_says_how_earlier_attempts_ended(tmp_path: Path) -> None:
    """sacct -D rows: a node death then the requeued run (which resumed once, progress.json), a task
    requeued after a node death and waiting, a task preempted twice; a task run once says nothing more."""
    make_experiment(tmp_path)
    write_json(tmp_path / "outputs" / EXP / "cat_fold3" / "progress.json", progress("training", restarts=1))
    attempts = """\
123_0|COMPLETED|node1|00:05:00|0:0
123_2|NODE_FAIL|node[1-2]|00:01:10|0:0
123_2.batch|CANCELLED|node1|00:01:10|0:15
123_2|RUNNING|node[1-2]|00:00:30|0:0
123_3|NODE_FAIL|node2|00:00:40|0:0
123_3|PENDING|None assigned|00:00:00|0:0
123_4|REQUEUED|node1|00:00:20|0:0
123_4|REQUEUED|node2|00:00:25|0:0
123_4|RUNNING|node1|00:00:02|0:0
"""
    cells = state_cells(collect(tmp_path, FakeSlurm(sacct=attempts)))
    assert cells["cat_fold3"] == "RUNNING (after NODE_FAIL; restarts 1)"
    assert cells["cat_fold4"] == "PENDING (after NODE_FAIL)"
    assert cells["align_fold1"] == "RUNNING (after REQUEUED x2)"
    assert cells["cat_fold1"] == "COMPLETED"


def test_state_cell_without_accounting_is_the_current_state_and_restarts(tmp_path: Path) -> None:
    make_experiment(tmp_path)
    write_json(tmp_path / "outputs" / EXP / "cat_fold3" / "progress.json", progress("training", restarts=1))
    cells = state_cells(collect(tmp_path, FakeSlurm(sacct=None)))  # squeue: 123_2 RUNNING, no attempts
    assert cells["cat_fold3"] == "RUNNING (restarts 1)"


def test_overview_makes_one_query_for_every_experiment(tmp_path: Path) -> None:
    make_experiment(tmp_path, "cv")
    make_experiment(tmp_path, "other", array="123", aggregate=None)
    fake = FakeSlurm()
    statuses = monitor.collect_all(tmp_path / "jobs", tmp_path / "outputs", fake)
    assert len(fake.calls) == 1 and [s.experiment for s in statuses] == ["cv", "other"]
    text = render(monitor.overview_renderable(statuses))
    row = next(ln for ln in text.splitlines() if ln.strip("│ ").startswith("cv "))
    cells = [c.strip() for c in row.strip("│").split("│")]
    assert cells[:3] == ["cv", "8", "1"] and cells[-1] == "sacct"  # experiment, jobs, COMPLETED ...
    assert "other" in text and "PENDING" in text
    assert "no experiments" in render(monitor.overview_renderable([], "jobs"))


def test_fmt_duration() -> None:
    assert monitor.fmt_duration(3725) == "1:02:05"
    assert monitor.fmt_duration(2 * 86400 + 5) == "2d 0:00:05"
    assert monitor.fmt_duration(None) == "-" and monitor.fmt_duration(float("nan")) == "-"


# --------------------------------------------------------------------------- logs and cancel


def test_logs_by_name_or_slurm_id(tmp_path: Path) -> None:
    make_experiment(tmp_path)
    for job in ("cat_fold4", "123_3"):
        logs = dict((s, body) for s, _, body in experiment_files.job_logs(EXP, job, tmp_path / "jobs", tmp_path / "outputs", 2))
        assert logs == {"stdout": ["epoch 1", "epoch 2"], "stderr": ["Traceback (most recent call last):", "RuntimeError: boom"]}
    with pytest.raises(ConfigError, match="no job 'cat_fold9'"):
        experiment_files.job_logs(EXP, "cat_fold9", tmp_path / "jobs", tmp_path / "outputs")


def test_cancel_one_task(tmp_path: Path) -> None:
    make_experiment(tmp_path)
    fake = FakeSlurm()
    lines = monitor.cancel_experiment(EXP, "cat_fold3", tmp_path / "jobs", tmp_path / "outputs", fake)
    assert fake.calls == [["scancel", "123_2"]] and lines == ["cancelled cat_fold3 (123_2)"]


def test_cancel_whole_experiment_cancels_arrays_and_aggregate(tmp_path: Path) -> None:
    make_experiment(tmp_path)
    fake = FakeSlurm()
    lines = monitor.cancel_experiment(EXP, None, tmp_path / "jobs", tmp_path / "outputs", fake)
    assert fake.calls[-1] == ["scancel", "123", "124"] and len(fake.calls) == 2  # one query, one scancel
    assert lines == ["cancelled job array 123", "cancelled aggregate job 124"]


def test_cancel_skips_what_has_ended(tmp_path: Path) -> None:
    make_experiment(tmp_path)
    done = "\n".join(f"123_{i}|COMPLETED|n|00:01:00|0:0" for i in range(8)) + "\n124|CANCELLED by 0|n|0|0:0\n"
    fake = FakeSlurm(sacct=done)
    assert monitor.cancel_experiment(EXP, None, tmp_path / "jobs", tmp_path / "outputs", fake) == ["nothing to cancel: every SLURM job has ended"]
    assert all(c[0] != "scancel" for c in fake.calls)


def test_cancel_errors(tmp_path: Path) -> None:
    make_experiment(tmp_path, mode="local")
    with pytest.raises(ConfigError, match="local run"):
        monitor.cancel_experiment(EXP, "cat_fold1", tmp_path / "jobs", tmp_path / "outputs", FakeSlurm())
    with pytest.raises(ConfigError, match="no SLURM jobs"):
        monitor.cancel_experiment(EXP, None, tmp_path / "jobs", tmp_path / "outputs", FakeSlurm())
    make_experiment(tmp_path, "s")

    def refuse(cmd: Sequence[str]) -> subprocess.CompletedProcess:
        return subprocess.CompletedProcess(list(cmd), 1, "", "scancel: error: Kill job error on job id 123_2\n")

    with pytest.raises(SubmissionError, match="Kill job error"):
        monitor.cancel_experiment("s", "cat_fold3", tmp_path / "jobs", tmp_path / "outputs", refuse)


def test_a_pending_task_camvis_cancelled_reads_cancelled(tmp_path: Path) -> None:
    """SLURM keeps no row for a pending array task cancelled: camvis's record in the manifest says it."""
    make_experiment(tmp_path)
    monitor.cancel_experiment(EXP, "align_fold2", tmp_path / "jobs", tmp_path / "outputs", FakeSlurm())  # task 123_5
    manifest = json.loads((tmp_path / "jobs" / EXP / "manifest.json").read_text())
    assert manifest["cancelled"]["123_5"]["by"] == "camvis-status --cancel"
    after = SACCT.replace("123_[4-7%2]", "123_[4,6-7%2]")  # what sacct shows then: no 123_5 at all
    status = collect(tmp_path, FakeSlurm(sacct=after))
    by_name = {j.info.name: j for j in status.jobs}
    assert (by_name["align_fold2"].state, by_name["align_fold2"].source) == ("CANCELLED", "manifest")
    assert {by_name[f"align_fold{k}"].state for k in (1, 3, 4)} == {"PENDING"}
    line = next(ln for ln in render(monitor.build_table(status)).splitlines() if "align_fold2" in ln)
    assert "CANCELLED" in line and "camvis cancelled it (manifest)" in line


def test_a_whole_experiment_camvis_cancelled_reads_cancelled(tmp_path: Path) -> None:
    make_experiment(tmp_path)
    monitor.cancel_experiment(EXP, None, tmp_path / "jobs", tmp_path / "outputs", FakeSlurm())
    forgotten = "123_0|COMPLETED|node1|00:05:00|0:0\n"  # only the finished task is still known
    status = collect(tmp_path, FakeSlurm(sacct=forgotten, squeue=None, squeue_err="Invalid job id specified"))
    states = {j.info.name: j.state for j in status.jobs}
    assert states["cat_fold1"] == "COMPLETED" and states["align_fold3"] == "CANCELLED"
    assert status.aggregate == [("124", "CANCELLED")] and not status.active


def _earlier_run(folder: Path, scores: bool = True) -> None:
    """A finished run's files, written long before the manifest's submission time (2026-01-01)."""
    write_json(folder / "progress.json", progress("done", 100))
    if scores:
        write_json(folder / "scores.json", {"config_hash": "h1", "metrics": {"acc": 0.9}})
    (folder / "error.txt").write_text("RuntimeError: an earlier failure\n")
    old = time.mktime((2025, 6, 1, 0, 0, 0, 0, 0, -1))
    for f in folder.iterdir():
        os.utime(f, (old, old))


def test_a_relaunched_job_shows_none_of_an_earlier_runs_files(tmp_path: Path) -> None:
    make_experiment(tmp_path)
    _earlier_run(tmp_path / "outputs" / EXP / "align_fold1")
    status = collect(tmp_path, FakeSlurm())  # 123_4 PENDING in sacct
    job = next(j for j in status.jobs if j.info.name == "align_fold1")
    assert (job.state, job.progress, job.finished, job.error) == ("PENDING", None, False, None)
    assert job.hidden == {"progress.json", "scores.json", "error.txt"}
    assert monitor.progress_cells(job) == ("-", "-", "-", "-")
    text = render(monitor.status_renderable(status))
    assert "not shown: an earlier run's files in the folders of align_fold1" in text
    # without SLURM the files decide, and an earlier run's do not: queued, not COMPLETED nor FAILED
    offline = {j.info.name: j.state for j in collect(tmp_path).jobs}
    assert offline["align_fold1"] == "PENDING"
    # files this run wrote (after its submission) are its own
    (tmp_path / "outputs" / EXP / "align_fold1" / "progress.json").write_text(json.dumps(progress("training", 3)))
    job = next(j for j in collect(tmp_path, FakeSlurm()).jobs if j.info.name == "align_fold1")
    assert job.progress["epoch"] == 3 and job.hidden == {"scores.json", "error.txt"}


# --------------------------------------------------------------------------- watch and CLI


def test_watch_ends_when_nothing_is_active_or_on_ctrl_c(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    make_experiment(tmp_path, mode="local")
    out = Console(record=True, width=200)
    sleeps: list[float] = []

    def interrupt(seconds: float) -> None:
        sleeps.append(seconds)
        raise KeyboardInterrupt

    monkeypatch.setattr(monitor.time, "sleep", interrupt)
    monitor.show(EXP, tmp_path / "jobs", tmp_path / "outputs", console=out, watch=7)  # active: waits, then Ctrl-C
    assert sleeps == [7]
    for job in ("cat_fold2", "cat_fold3", "align_fold1", "align_fold2", "align_fold3", "align_fold4"):
        write_json(tmp_path / "outputs" / EXP / job / "scores.json", {"config_hash": "h1"})
    monitor.show(EXP, tmp_path / "jobs", tmp_path / "outputs", console=out, watch=7)  # nothing active: no wait
    assert sleeps == [7] and "COMPLETED 7" in out.export_text()


def test_default_console_is_wide_when_not_a_terminal(monkeypatch: pytest.MonkeyPatch) -> None:
    from camvis.console import NON_TERMINAL_WIDTH, default_console

    for name in ("COLUMNS", "FORCE_COLOR", "TTY_COMPATIBLE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setattr(sys, "stdout", io.StringIO())  # piped: not a terminal
    monkeypatch.setattr(sys, "stderr", io.StringIO())
    console = default_console()
    assert not console.is_terminal and console.width == NON_TERMINAL_WIDTH == 160
    assert default_console(100).width == 100 and default_console(stderr=True).stderr
    monkeypatch.setenv("COLUMNS", "250")
    assert default_console().width == 250  # a wider $COLUMNS wins
    assert monitor.default_console is default_console  # the status command's console


def test_cli(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    make_experiment(tmp_path)
    dirs = ["--jobs-dir", str(tmp_path / "jobs"), "--outputs", str(tmp_path / "outputs")]
    assert cli.main([EXP, *dirs]) == 0
    out = capsys.readouterr().out
    assert "cat_fold3" in out and "SLURM is not reachable" in out
    assert cli.main(dirs) == 0 and EXP in capsys.readouterr().out
    assert cli.main([EXP, "--logs", "cat_fold4", "--lines", "1", *dirs]) == 0
    assert "RuntimeError: boom" in capsys.readouterr().out
    assert cli.main(["nope", *dirs]) == 2 and "error: unknown experiment" in capsys.readouterr().err
    assert cli.main([EXP, "--cancel", *dirs]) == 2  # no scancel on this PATH
    assert "scancel is not on PATH" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        cli.main(["--logs", "cat_fold4", *dirs])


# --------------------------------------------------------------------------- the real cluster


@pytest.mark.slurm
@pytest.mark.skipif(os.environ.get("CAMVIS_SLURM") != "1", reason="set CAMVIS_SLURM=1 with the local cluster up (slurm/)")
def test_batched_query_against_the_real_cluster(tmp_path: Path) -> None:
    def sbatch(*args: str) -> str:
        out = subprocess.run(["sbatch", "--parsable", "--time=2", "--mem=100M", f"--output={tmp_path}/%j.out",
                              *args], check=True, capture_output=True, text=True).stdout  # fmt: skip
        return out.strip().split(";")[0]

    array = sbatch("--array=0-3%1", "--wrap", "sleep 30")
    single = sbatch("--wrap", "true")
    ids = [f"{array}_{i}" for i in range(4)] + [single]
    deadline = time.time() + 60
    while True:
        result = slurm_query.query(ids)
        assert result.source in ("sacct", "squeue")
        if all(i in result.rows for i in ids[:4]):
            break
        assert time.time() < deadline, f"tasks not all visible: {sorted(result.rows)}"
        time.sleep(1)
    assert {result.rows[i].state for i in ids[:4]} <= {"PENDING", "RUNNING"}
    slurm_query.scancel([array])
    deadline = time.time() + 60
    while time.time() < deadline:
        rows = slurm_query.query(ids[:4]).rows
        if all(rows.get(i) is None or rows[i].state == "CANCELLED" for i in ids[:4]):
            break
        time.sleep(1)
    else:
        pytest.fail(f"array {array} not cancelled: {rows}")



@pytest.mark.slurm
@pytest.mark.skipif(os.environ.get("CAMVIS_SLURM") != "1", reason="set CAMVIS_SLURM=1 with the local cluster up (slurm/)")
def test_query_without_accounting_falls_back_on_the_real_squeue(tmp_path: Path) -> None:
    """A cluster without slurmdbd: sacct fails as it does there, the real squeue answers instead."""
    def no_accounting(cmd):
        if cmd[0] == "sacct":
            return subprocess.CompletedProcess(cmd, 1, "", "sacct: error: Slurm accounting storage is disabled\n")
        return subprocess.run(cmd, capture_output=True, text=True)

    out = subprocess.run(["sbatch", "--parsable", "--time=2", "--mem=100M", f"--output={tmp_path}/%j.out",
                          "--array=0-1%1", "--wrap", "sleep 20"], check=True, capture_output=True, text=True).stdout
    array = out.strip().split(";")[0]
    try:
        ids = [f"{array}_0", f"{array}_1"]
        deadline = time.time() + 60
        while True:
            result = slurm_query.query(ids, runner=no_accounting)
            assert result.source == "squeue"
            if all(i in result.rows for i in ids):
                break
            assert time.time() < deadline, f"tasks not visible through squeue: {sorted(result.rows)}"
            time.sleep(1)
        assert {result.rows[i].state for i in ids} <= {"PENDING", "RUNNING"}
    finally:
        slurm_query.scancel([array])

def test_status_and_aggregate_never_import_torch() -> None:
    code = ("import sys, camvis.bookkeeping.experiment_files, camvis.cluster.monitor, camvis.results.aggregate, camvis.results.stats, camvis.bookkeeping.slurm_query, "
            "camvis.plots.aggregate, camvis.cli.status, camvis.cli.aggregate; print('torch' in sys.modules)")  # fmt: skip
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "False"


def test_watch_piped_prints_one_snapshot_per_refresh(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    make_experiment(tmp_path, mode="local")  # jobs still running: --watch would go on without --count
    assert cli.main([EXP, "--watch", "--interval", "0.01", "--count", "3", "--jobs-dir", str(tmp_path / "jobs"),
                     "--outputs", str(tmp_path / "outputs")]) == 0
    out = capsys.readouterr().out
    assert [line.split("snapshot ")[1].split()[0] for line in out.splitlines() if " snapshot " in line] == ["1", "2", "3"]
    assert out.count(f"{EXP}: 8 jobs") == 3 and out.count("RUNNING") >= 3
    assert max(len(line) for line in out.splitlines()) > 80  # a wide table: not wrapped at 80 columns


def test_follow_prints_new_lines_and_follows_a_restarted_log(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    make_experiment(tmp_path, mode="local")
    log = tmp_path / "jobs" / EXP / "logs" / "cat_fold3.out"
    log.write_text("epoch 1\n")
    steps = iter([lambda: log.write_text("epoch 1\nepoch 2\npart"),  # a line still being written waits
                  lambda: log.write_text("again 3\n")])  # a run that starts the log again (shorter)
    monkeypatch.setattr(monitor.time, "sleep", lambda s: next(steps)())
    out: list[str] = []
    monitor.follow_log(EXP, "cat_fold3", tmp_path / "jobs", tmp_path / "outputs", every=1, count=3, write=out.append)
    text = "".join(out)
    assert text.startswith("epoch 1\nepoch 2\n--- cat_fold3: log now") and text.endswith("again 3\n")
    assert "part" not in text


def test_follow_moves_to_a_relaunched_jobs_new_log(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    make_experiment(tmp_path, mode="local")
    manifest_path = tmp_path / "jobs" / EXP / "manifest.json"
    new_log = tmp_path / "jobs" / EXP / "logs" / "cat_fold3.relaunched.out"
    new_log.write_text("second run\n")

    def relaunch(seconds: float) -> None:
        manifest = json.loads(manifest_path.read_text())
        manifest["jobs"]["cat_fold3"]["stdout"] = str(new_log)
        manifest_path.write_text(json.dumps(manifest))

    monkeypatch.setattr(monitor.time, "sleep", relaunch)
    out: list[str] = []
    monitor.follow_log(EXP, "cat_fold3", tmp_path / "jobs", tmp_path / "outputs", every=1, count=2, write=out.append)
    assert out == [f"--- cat_fold3: log now {new_log} (requeued or relaunched) ---\n", "second run\n"]


def test_follow_stops_once_the_job_has_ended(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    make_experiment(tmp_path, mode="local")
    (tmp_path / "jobs" / EXP / "logs" / "cat_fold1.out").write_text("done\n")
    monkeypatch.setattr(monitor.time, "sleep", lambda s: pytest.fail("slept after the job had ended"))
    out: list[str] = []
    monitor.follow_log(EXP, "cat_fold1", tmp_path / "jobs", tmp_path / "outputs", write=out.append)
    assert out == ["done\n"]


def test_every_command_has_version() -> None:
    import importlib

    for name in ("aggregate", "data", "demo", "evaluate", "export", "launch", "model", "predict", "status", "train"):
        parser = importlib.import_module(f"camvis.cli.{name}")
        with pytest.raises(SystemExit) as info:
            parser.main(["--version"])
        assert info.value.code == 0, name


def test_plural() -> None:
    from camvis.console import plural

    assert (plural(1, "job"), plural(2, "job"), plural(0, "job")) == ("1 job", "2 jobs", "0 jobs")


def test_node_list_of_a_multi_node_job_is_expanded():
    from camvis.cluster.monitor import node_list

    assert node_list("n[1-2]") == ["n1", "n2"]
    assert node_list("gpu[01-03,7],cpu5") == ["gpu01", "gpu02", "gpu03", "gpu7", "cpu5"]
    assert node_list("vm") == ["vm"]
