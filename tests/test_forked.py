"""camvis.forked.run_forked: calls side by side in forked processes, results and failures sent back."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

import camvis.forked
from camvis.errors import CamvisError, DiskFullError
from camvis.forked import run_forked

TEST_PROCESS = os.getpid()
CAN_FORK = camvis.forked._can_fork


@pytest.fixture(autouse=True)
def _fork_despite_the_suites_threads(monkeypatch: pytest.MonkeyPatch) -> None:
    """Earlier tests leave threads in this process (zarr's I/O loop), where camvis stays serial (see
    test_other_threads_keep_the_calls_here): these tests are about the forked path itself."""
    monkeypatch.setattr(camvis.forked, "_can_fork", lambda workers: workers > 1)


def test_other_threads_keep_the_calls_here(monkeypatch: pytest.MonkeyPatch) -> None:
    import threading

    monkeypatch.setattr(camvis.forked, "_can_fork", CAN_FORK)
    release = threading.Event()
    thread = threading.Thread(target=release.wait, daemon=True)
    thread.start()
    try:
        assert run_forked([os.getpid, os.getpid], workers=2) == [TEST_PROCESS] * 2
    finally:
        release.set()
        thread.join()


def test_results_come_back_in_call_order_from_other_processes() -> None:
    calls = [lambda i=i: (i * i, os.getpid()) for i in range(5)]
    answers = run_forked(calls, workers=2)
    assert [value for value, _ in answers] == [0, 1, 4, 9, 16]
    assert os.getpid() not in {pid for _, pid in answers}


def meets(me: Path, other: Path, wait_s: float = 20.0) -> bool:
    """Leave a mark, then wait for the other call's: True only when both ran at the same time."""
    me.touch()
    end = time.monotonic() + wait_s
    while time.monotonic() < end:
        if other.exists():
            return True
        time.sleep(0.01)
    return False


def test_two_workers_run_two_calls_at_the_same_time(tmp_path: Path) -> None:
    a, b = tmp_path / "a", tmp_path / "b"
    assert run_forked([lambda: meets(a, b), lambda: meets(b, a)], workers=2) == [True, True]


def test_one_worker_runs_the_calls_here_one_after_the_other(tmp_path: Path) -> None:
    a, b = tmp_path / "a", tmp_path / "b"
    answers = run_forked([lambda: (meets(a, b, wait_s=0.2), os.getpid()), lambda: (a.exists(), os.getpid())],
                         workers=1)
    assert answers == [(False, os.getpid()), (True, os.getpid())]


def test_a_large_result_comes_back_whole() -> None:
    big = os.urandom(3 << 20)  # far more than a pipe holds: read while the child writes
    assert run_forked([lambda: big, lambda: big[::-1]], workers=2) == [big, big[::-1]]


def test_a_failure_is_raised_as_itself_and_the_first_in_call_order_wins() -> None:
    def full() -> None:
        raise DiskFullError("outputs/x/acc.png: no space left (1.2 MB)")

    def later() -> None:
        raise ValueError("second")

    with pytest.raises(DiskFullError, match="acc.png: no space left"):
        run_forked([lambda: 1, full, later], workers=2)


class Unpicklable(Exception):
    def __reduce__(self) -> None:
        raise TypeError("no pickling")


def test_an_exception_that_cannot_travel_sends_its_text_with_the_label() -> None:
    def fail() -> None:
        raise Unpicklable("the drawing failed")

    with pytest.raises(CamvisError, match=r"^figure acc: Unpicklable: the drawing failed$"):
        run_forked([lambda: 1, fail], labels=["figure loss", "figure acc"], workers=2)


def test_a_child_killed_without_an_answer_is_named_with_its_signal() -> None:
    def killed() -> None:
        assert os.getpid() != TEST_PROCESS, "ran in the test process itself"
        os.kill(os.getpid(), signal.SIGKILL)

    with pytest.raises(CamvisError, match=r"figure posterior: its process ended \(signal 9\) without a result"):
        run_forked([lambda: 1, killed], labels=["figure acc", "figure posterior"], workers=2)


def test_buffered_output_of_the_parent_is_written_once() -> None:
    """A child must not flush the parent's buffered stdout a second time (block-buffered into a pipe)."""
    code = ("import sys; from camvis.forked import run_forked\n"
            "sys.stdout.write('before\\n')\n"
            "print(run_forked([lambda: 1, lambda: 2], workers=2))\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out == "before\n[1, 2]\n"


# --------------------------------------------------------------------------- Prefork: a child warmed before the imports

PREFORK_SCRIPT = """
import sys
from camvis.forked import Prefork, run_named
def loaded(name):
    return name in sys.modules
with Prefork(["wave"]) as prefork:
    forked = prefork.pid is not None
    answers = run_named([("__main__", "loaded", ("wave",), {}), ("json", "dumps", ([1, 2],), {})], ["a", "b"], prefork)
print(forked, answers, "wave" in sys.modules)
"""


def test_a_prefork_imports_in_its_child_and_runs_the_named_calls_there() -> None:
    out = subprocess.run([sys.executable, "-c", PREFORK_SCRIPT], capture_output=True, text=True, check=True).stdout
    assert out == "True [True, '[1, 2]'] False\n"  # imported where the calls ran, never in the parent


def test_a_prefork_raises_the_first_failure_as_itself() -> None:
    from camvis.forked import Prefork, run_named

    with Prefork(["json"]) as prefork:
        assert prefork.pid is not None
        with pytest.raises(FileNotFoundError, match="nonexistent"):
            run_named([("json", "dumps", (1,), {}), ("builtins", "open", ("/nonexistent/x",), {})], ["a", "b"], prefork)


def test_a_killed_prefork_is_one_error_and_an_unused_one_leaves_no_process() -> None:
    from camvis.forked import Prefork, run_named
    from camvis.host import pid_alive

    with Prefork(["json"]) as prefork:
        os.kill(prefork.pid, signal.SIGKILL)
        with pytest.raises(CamvisError, match=r"the drawing process: its process ended \(signal 9\)"):
            run_named([("json", "dumps", (1,), {})], ["a"], prefork)
    with Prefork(["json"]) as unused:
        pid = unused.pid
    assert pid is not None and not pid_alive(pid)  # reaped, not a zombie


def test_on_one_core_a_prefork_does_not_fork_and_the_calls_run_here(monkeypatch: pytest.MonkeyPatch) -> None:
    import camvis.forked
    from camvis.forked import Prefork, run_named

    monkeypatch.setattr(camvis.forked, "usable_cpus", lambda: 1)
    with Prefork(["json"]) as prefork:
        assert prefork.pid is None
        assert run_named([("os", "getpid", (), {})], ["pid"], prefork) == [os.getpid()]


def test_an_interrupted_prefork_run_stops_its_child_and_the_childs_children(tmp_path: Path) -> None:
    """Ctrl-C while the figures are drawn: no process is left drawing."""
    script = f"""
import os, signal, sys, time
from camvis.forked import Prefork, run_named
signal.signal(signal.SIGINT, signal.default_int_handler)  # a shell's background job starts with SIGINT ignored
def slow(path):
    open(path + "." + str(os.getpid()), "w").close()
    time.sleep(60)
with Prefork(["json"]) as prefork:
    print(prefork.pid, flush=True)
    run_named([("__main__", "slow", ({str(tmp_path / 'drawer')!r},), {{}})] * 2, ["a", "b"], prefork)
"""
    proc = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    child = int(proc.stdout.readline())
    end = time.monotonic() + 30
    while len(list(tmp_path.glob("drawer.*"))) < 2 and time.monotonic() < end:
        time.sleep(0.05)
    drawers = [int(p.suffix[1:]) for p in tmp_path.glob("drawer.*")]
    assert len(drawers) == 2
    proc.send_signal(signal.SIGINT)  # the parent only, as `kill -INT`: it must pass the interrupt on
    assert proc.wait(timeout=30) != 0 and "KeyboardInterrupt" in proc.stderr.read()
    from camvis.host import pid_alive

    end = time.monotonic() + 10
    while any(pid_alive(p) for p in (child, *drawers)) and time.monotonic() < end:
        time.sleep(0.05)
    assert not any(pid_alive(p) for p in (child, *drawers))
