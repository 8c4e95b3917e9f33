"""Exclusive file locks shared by launches, manifest writers and running jobs.

POSIX record locks (fcntl.lockf): the kind that NFS (v4, or v3 with lockd/NLM), Lustre mounted
with `-o flock` and GPFS hold across nodes, so two login nodes or compute nodes see each other's
locks. They belong to a process, not to an open file, so threads of one process are kept apart
by a thread lock per path first (and closing any descriptor of the file would drop the process's
lock: only this module opens lock files). The kernel drops a lock when its process dies, so a
killed launch or job never leaves a stale lock; the holder's pid and host are written into the
file only to say who is waiting for whom.
"""

from __future__ import annotations

import errno
import fcntl
import os
import socket
import threading
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Callable, Iterator

from camvis.errors import CamvisError, SubmissionError
from camvis.host import now_iso

POLL_S = 0.2
_BUSY = (errno.EACCES, errno.EAGAIN)
_THREAD_LOCKS: dict[str, threading.Lock] = {}
_GUARD = threading.Lock()


class JobLockedError(CamvisError):
    """Another process runs the same job (it holds the job's lock)."""


def _thread_lock(path: Path) -> threading.Lock:
    with _GUARD:
        return _THREAD_LOCKS.setdefault(os.path.realpath(path), threading.Lock())


def holder(path: Path) -> str:
    """'pid 123 on host, <what> since <time>' as the lock's holder wrote it; '' if unknown."""
    try:
        return Path(path).read_text().strip()
    except OSError:
        return ""


def _unsupported(path: Path, error: OSError) -> SubmissionError:
    return SubmissionError(f"{path}: the file system refuses locks ({error.strerror}); camvis needs POSIX locks "
                           f"on jobs/ and outputs/ (NFSv3: run lockd; Lustre: mount with -o flock)")


def _try_lock(fd: int, path: Path) -> bool:
    try:
        fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as e:
        if e.errno in _BUSY:
            return False
        raise _unsupported(path, e) from e
    return True


def acquire(path: str | os.PathLike, what: str, timeout_s: float | None = None,
            on_wait: Callable[[str], None] | None = None) -> Callable[[], None]:
    """Take an exclusive lock on `path` (created if missing); returns the function that releases it.

    Waits for the holder up to `timeout_s` (None: for ever; 0: not at all), calling `on_wait(holder)`
    once when it has to wait. Raises TimeoutError (with the holder's description) when it gives up.
    `what` is written into the file for whoever waits on it."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    end = None if timeout_s is None else time.monotonic() + timeout_s
    local = _thread_lock(path)
    if not local.acquire(timeout=-1 if timeout_s is None else timeout_s):
        raise TimeoutError(holder(path) or "another thread of this process")
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
    except BaseException:
        local.release()
        raise
    try:
        _wait(fd, path, end, on_wait)
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"pid {os.getpid()} on {socket.gethostname()}, {what}\n".encode(), 0)
    except BaseException:
        os.close(fd)
        local.release()
        raise

    def release() -> None:
        os.close(fd)  # drops the record lock
        local.release()
    return release


@contextmanager
def exclusive(path: str | os.PathLike, what: str, timeout_s: float | None = None,
              on_wait: Callable[[str], None] | None = None) -> Iterator[None]:
    """acquire() for the block."""
    release = acquire(path, what, timeout_s, on_wait)
    try:
        yield
    finally:
        release()


def _wait(fd: int, path: Path, end: float | None, on_wait: Callable[[str], None] | None) -> None:
    told = False
    while not _try_lock(fd, path):
        if end is not None and time.monotonic() >= end:
            raise TimeoutError(holder(path) or "an unknown process")
        if not told and on_wait is not None:
            on_wait(holder(path) or "an unknown process")
            told = True
        time.sleep(POLL_S)


def job_lock_path(directory: str | os.PathLike) -> Path:
    """outputs/<exp>/.<job>.lock: beside the job folder, not in it, so that moving the folder's
    earlier outputs aside never moves the lock."""
    directory = Path(directory)
    return directory.parent / f".{directory.name}.lock"


@contextmanager
def job_lock(path: str | os.PathLike, name: str, doing: str = "running job") -> Iterator[None]:
    """The lock a running job holds on its folder: a second runner of the same job fails at once, and so
    does any other writer of the folder (camvis-eval: `doing` "evaluating job")."""
    job_id = os.environ.get("SLURM_JOB_ID")
    what = f"{doing} {name}" + (f" (SLURM job {job_id})" if job_id else "") + f" since {now_iso()}"
    try:
        release = acquire(path, what, timeout_s=0)
    except TimeoutError as e:
        raise JobLockedError(f"job {name} is already running ({e}; lock {path}); "
                             f"two runs must not write one job folder: wait for it or cancel it") from None
    try:
        yield
    finally:
        release()


LAUNCH_LOCK = ".launch.lock"
LAUNCH_WAIT_S = 300.0
"""How long a launch waits for another launch of the same experiment ($CAMVIS_LAUNCH_WAIT_S)."""


def launch_wait_s() -> float:
    value = os.environ.get("CAMVIS_LAUNCH_WAIT_S", "")
    try:
        seconds = float(value) if value else LAUNCH_WAIT_S
    except ValueError:
        raise SubmissionError(f"CAMVIS_LAUNCH_WAIT_S: expected seconds (a number >= 0), got {value!r}") from None
    if not seconds >= 0 or seconds == float("inf"):
        raise SubmissionError(f"CAMVIS_LAUNCH_WAIT_S: expected seconds (a finite number >= 0), got {value!r}")
    return seconds


@contextmanager
def launch_lock(exp_dir: str | os.PathLike, experiment: str, mode: str, timeout_s: float | None = None,
                on_wait: Callable[[str], None] | None = None) -> Iterator[None]:
    """One launch of `experiment` at a time: what is queued, the plan, the submission and the manifest
    update are one critical section (jobs/<experiment>/.launch.lock). Waits `timeout_s` (default
    launch_wait_s()) for another launch, then gives up with a SubmissionError; never submits twice."""
    path = Path(exp_dir) / LAUNCH_LOCK
    timeout_s = launch_wait_s() if timeout_s is None else timeout_s
    try:
        release = acquire(path, f"{mode} launch of {experiment} since {now_iso()}", timeout_s, on_wait)
    except TimeoutError as e:
        raise SubmissionError(f"another launch of {experiment} holds {path} ({e}); gave up after {timeout_s:g} s: "
                              f"run again once it is done (a --local launch holds it until its jobs end)") from None
    try:
        yield
    finally:
        release()
