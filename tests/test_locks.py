"""camvis.locks on real files and processes: exclusive across processes and threads, dropped when
the holder dies, who holds it; and the job lock: a second runner of one job fails at once."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from camvis import locks
from camvis.io import host

ROOT = Path(__file__).resolve().parents[1]
ENV = {**os.environ, "PYTHONPATH": str(ROOT)}


def hold(path: Path, what: str = "a test holder") -> subprocess.Popen:
    code = ("import sys, time; from camvis import locks; locks.acquire(sys.argv[1], sys.argv[2]); "
            "print('held', flush=True); time.sleep(120)")
    proc = subprocess.Popen([sys.executable, "-c", code, str(path), what], stdout=subprocess.PIPE, text=True, env=ENV)
    assert proc.stdout.readline().strip() == "held"
    return proc


def test_another_process_holds_it_until_it_dies(tmp_path: Path) -> None:
    path = tmp_path / "sub" / "x.lock"
    holder = hold(path)
    try:
        waited: list[str] = []
        with pytest.raises(TimeoutError, match=rf"pid {holder.pid} on .*, a test holder"):
            locks.acquire(path, "me", timeout_s=0.5, on_wait=waited.append)
        assert len(waited) == 1 and f"pid {holder.pid}" in waited[0]  # told once, not per poll
    finally:
        holder.kill()
        holder.wait()
    release = locks.acquire(path, "me", timeout_s=5)  # SIGKILL left no stale lock behind
    assert locks.holder(path).startswith(f"pid {os.getpid()} on ") and locks.holder(path).endswith(", me")
    release()


def test_threads_of_one_process_exclude_each_other(tmp_path: Path) -> None:
    path, inside, overlaps = tmp_path / "x.lock", [], []

    def work() -> None:
        with locks.exclusive(path, "thread"):
            inside.append(1)
            if len(inside) > 1:
                overlaps.append(len(inside))
            time.sleep(0.05)
            inside.pop()

    threads = [threading.Thread(target=work) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert overlaps == []
    with pytest.raises(TimeoutError):  # and a held lock is held for this process's other threads too
        with locks.exclusive(path, "outer"):
            result: list[BaseException] = []
            t = threading.Thread(target=lambda: _catch(result, lambda: locks.acquire(path, "inner", timeout_s=0.2)))
            t.start()
            t.join()
            raise result[0]


def _catch(into: list[BaseException], fn) -> None:  # type: ignore[no-untyped-def]
    try:
        fn()
    except BaseException as e:  # noqa: BLE001 - handed to the main thread
        into.append(e)


def test_job_lock_fails_fast_with_the_holder(tmp_path: Path) -> None:
    path = locks.job_lock_path(tmp_path / "exp" / "cat_fold1")
    assert path == tmp_path / "exp" / ".cat_fold1.lock"  # beside the folder, never moved with it
    holder = hold(path, "running job cat_fold1 (SLURM job 77)")
    try:
        with pytest.raises(locks.JobLockedError, match=r"job cat_fold1 is already running \(pid \d+ on .*SLURM job 77"):
            with locks.job_lock(path, "cat_fold1"):
                pytest.fail("entered a job another process runs")
    finally:
        holder.kill()
        holder.wait()
    with locks.job_lock(path, "cat_fold1"):
        assert "running job cat_fold1" in locks.holder(path)


def test_launch_wait_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CAMVIS_LAUNCH_WAIT_S", "2.5")
    assert locks.launch_wait_s() == 2.5
    for bad in ("soon", "-1", "inf", "nan"):
        monkeypatch.setenv("CAMVIS_LAUNCH_WAIT_S", bad)
        with pytest.raises(locks.SubmissionError, match="CAMVIS_LAUNCH_WAIT_S"):
            locks.launch_wait_s()


TRAIN = ["experiment=locks", "name=cat_fold1", "data.factors=[2,4,8]", "model.size_hidden=4", "train.batch_size=16",
         "train.epoch_patches=32", "train.device=cpu", "eval.bootstrap=10", "eval.figures=false"]
ENDLESS = ["train.max_epochs=100000", "train.min_lr=0", "train.plateau_patience=100000"]


def settled_files(folder: Path, writer_pid: int) -> dict[str, int]:
    """Each file's mtime, but progress.json (rewritten every few steps) and the running writer's
    in-flight temporaries (.NAME.<host>.<pid>.*.tmp, renamed away at any moment)."""
    in_flight = re.compile(rf"\..+\.{re.escape(host())}\.{writer_pid}\.[a-z0-9_]+\.tmp")
    return {p.name: p.stat().st_mtime_ns for p in folder.iterdir()
            if p.name != "progress.json" and not in_flight.fullmatch(p.name)}


@pytest.mark.slow
def test_a_second_run_of_one_job_fails_fast_and_touches_nothing(synth_store, tmp_path: Path) -> None:
    args = [sys.executable, "-m", "camvis.cli.train", "--outputs", str(tmp_path / "outputs"),
            f"data.store={synth_store.path}", *TRAIN]
    first = subprocess.Popen([*args, *ENDLESS], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=ENV)
    folder = tmp_path / "outputs" / "locks" / "cat_fold1"
    try:
        end = time.monotonic() + 300
        while not (folder / "checkpoint.pt").exists():  # the first run is training
            assert first.poll() is None, first.communicate()
            assert time.monotonic() < end, "the first run never wrote a checkpoint"
            time.sleep(0.5)
        before = settled_files(folder, first.pid)
        second = subprocess.run([*args, "train.max_epochs=1"], capture_output=True, text=True, env=ENV, timeout=300)
        assert second.returncode == 2, second.stderr
        lines = second.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith(f"error: job cat_fold1 is already running (pid {first.pid} on ")
        assert not (folder / "error.txt").exists() and not (folder / "scores.json").exists()
        assert json.loads((folder / "progress.json").read_text())["max_epochs"] == 100000  # still the first run's
        after = settled_files(folder, first.pid)
        assert set(after) >= set(before) and after.get("config.yaml") == before.get("config.yaml")
        assert not [name for name in after if name.endswith(".tmp")], after  # the second run left none
    finally:
        first.kill()
        first.wait()
