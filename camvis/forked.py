"""Independent calls run at once in forked child processes, each one's result or exception sent back.

Why: matplotlib draws under the GIL, so an aggregate's figures (their drawing and PNG encoding, most of
its time) only run side by side as processes. A fork shares the parent's imports and data: nothing
is pickled on the way in, only the (small) result on the way out. Serial where a fork cannot help or
is unsafe: one usable core, one call, or other threads running (a thread may hold a lock at the fork).

`Prefork` goes one step further for a command that starts cold: forked before the command's own heavy
imports, its child imports the drawing modules (matplotlib: a third of a cold aggregate) while the
parent imports pandas and computes; the parent then sends it named calls, which it runs as above.
"""

from __future__ import annotations

import functools
import importlib
import os
import pickle
import selectors
import signal
import sys
import threading
from collections.abc import Callable, Sequence
from typing import Any, NoReturn

from camvis.errors import CamvisError
from camvis.host import usable_cpus

NamedCall = tuple[str, str, tuple, dict]
"""(module, function, args, kwargs): a call that can cross to a process that has not imported it yet."""


def run_forked(calls: Sequence[Callable[[], Any]], labels: Sequence[str] | None = None,
               workers: int | None = None) -> list[Any]:
    """[call() for call in calls], at most `workers` (default: the usable cores) at a time. The first
    failure (in call order) is raised as itself, or as a CamvisError naming its label when it cannot be
    sent back; a child that dies without an answer (a kill, an OOM) is a CamvisError with its signal."""
    labels = list(labels) if labels is not None else [f"call {i}" for i in range(len(calls))]
    workers = min(workers or usable_cpus(), len(calls))
    if not _can_fork(workers):
        return [call() for call in calls]
    return [_answer(data, status, label) for (data, status), label in zip(_run_raw(calls, workers), labels)]


def run_named(calls: Sequence[NamedCall], labels: Sequence[str], prefork: Prefork | None = None) -> list[Any]:
    """The named calls, in `prefork`'s warmed child when given (and forked), else run_forked here."""
    if prefork is not None and prefork.pid is not None:
        return prefork.run(calls, labels)
    return run_forked([_resolve(call) for call in calls], labels)


class Prefork:
    """A child forked now that imports `modules` while the parent goes on; `run` then hands it named calls.

    Use as a context manager: a parent that fails before `run` ends the child at once. A parent killed
    outright closes the pipe, and the child, reading no request, exits. Not forked (`pid` None) where
    run_forked would not fork either."""

    def __init__(self, modules: Sequence[str]) -> None:
        self.pid: int | None = None
        if not _can_fork(usable_cpus()):
            return
        request_read, self._requests = os.pipe()
        self._answers, answer_write = os.pipe()
        _flush()
        pid = os.fork()
        if pid == 0:
            os.close(self._requests)
            os.close(self._answers)
            _serve(modules, request_read, answer_write)  # never returns
        os.close(request_read)
        os.close(answer_write)
        self.pid = pid

    def run(self, calls: Sequence[NamedCall], labels: Sequence[str]) -> list[Any]:
        assert self.pid is not None, "Prefork.run: not forked (run_named runs the calls here)"
        pid, self.pid = self.pid, None  # from here on run, not close, owns the child and the pipes
        answers = os.fdopen(self._answers, "rb")
        try:
            try:
                with os.fdopen(self._requests, "wb") as out:
                    out.write(pickle.dumps((list(calls), min(usable_cpus(), len(calls)))))
            except BrokenPipeError:
                pass  # the child is gone: its wait status below says how
            data = answers.read()
        except BaseException:
            os.kill(pid, signal.SIGINT)  # interrupted: the child stops its own drawing children, then exits
            raise
        finally:
            answers.close()
            status = os.waitpid(pid, 0)[1]
        raw = _decode(data, status, "the drawing process")
        return [_answer(part, code, label) for (part, code), label in zip(raw, labels)]

    def close(self) -> None:
        if self.pid is not None:  # unused (the command failed first): no need to wait for its imports
            os.kill(self.pid, signal.SIGTERM)
            os.close(self._requests)
            os.close(self._answers)
            os.waitpid(self.pid, 0)
            self.pid = None

    def __enter__(self) -> Prefork:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _serve(modules: Sequence[str], requests: int, answers: int) -> NoReturn:
    """The prefork child: import, wait for the calls, run them in children of its own, send the raw answers."""
    try:
        for module in modules:
            try:
                importlib.import_module(module)
            except Exception:  # noqa: BLE001 - the call that needs it fails with the reason
                pass
        with os.fdopen(requests, "rb") as incoming:
            request = incoming.read()
        if not request:
            os._exit(0)
        calls, workers = pickle.loads(request)  # our parent's bytes, through a pipe only it and we hold
        payload = pickle.dumps(_run_raw([_resolve(call) for call in calls], max(workers, 1)))
    except BaseException:  # noqa: BLE001 - the parent sees no answer and reports how this process ended
        os._exit(1)
    _reply(answers, payload)


def _resolve(call: NamedCall) -> Callable[[], Any]:
    module, name, args, kwargs = call
    return functools.partial(getattr(importlib.import_module(module), name), *args, **kwargs)


def _can_fork(workers: int) -> bool:
    return workers > 1 and hasattr(os, "fork") and threading.active_count() == 1


def _flush() -> None:
    sys.stdout.flush()  # else a child would write the parent's buffered text a second time
    sys.stderr.flush()


def _run_raw(calls: Sequence[Callable[[], Any]], workers: int) -> list[tuple[bytes, int]]:
    """Each call in a forked child, `workers` at a time: (its pickled answer, its wait status), in call order."""
    answers: dict[int, bytearray] = {}
    codes: dict[int, int] = {}
    running: dict[int, tuple[int, int]] = {}  # index -> (pid, read end)
    waiting = list(range(len(calls)))
    with selectors.DefaultSelector() as selector:
        try:
            while waiting or running:
                while waiting and len(running) < workers:
                    index = waiting.pop(0)
                    running[index] = _start(calls[index])
                    selector.register(running[index][1], selectors.EVENT_READ, index)
                    answers[index] = bytearray()
                for key, _ in selector.select():
                    index = key.data
                    chunk = os.read(key.fd, 1 << 16)
                    if chunk:
                        answers[index] += chunk
                        continue
                    selector.unregister(key.fd)
                    pid, fd = running.pop(index)
                    os.close(fd)
                    codes[index] = os.waitpid(pid, 0)[1]
        finally:
            for pid, fd in running.values():  # an interrupt: no orphan keeps drawing
                os.kill(pid, signal.SIGTERM)
                os.waitpid(pid, 0)
                os.close(fd)
    return [(bytes(answers[i]), codes[i]) for i in range(len(calls))]


def _start(call: Callable[[], Any]) -> tuple[int, int]:
    read, write = os.pipe()
    _flush()
    pid = os.fork()
    if pid:
        os.close(write)
        return pid, read
    os.close(read)
    try:
        payload = pickle.dumps(("ok", call()))
    except BaseException as err:  # noqa: BLE001 - every failure goes back to the parent, which raises it
        payload = _failure(err)
    _reply(write, payload)


def _reply(fd: int, payload: bytes) -> NoReturn:
    """A forked child's last act: its answer into the pipe, then out, without atexit handlers or flushes of
    the parent's buffers. A failed write exits 1: the parent sees no answer and reports the exit status."""
    code = 0
    try:
        with os.fdopen(fd, "wb") as out:
            out.write(payload)
    except BaseException:  # noqa: BLE001
        code = 1
    os._exit(code)


def _failure(err: BaseException) -> bytes:
    """The exception pickled inside the answer, so that one the parent cannot rebuild still sends its text."""
    try:
        inner = pickle.dumps(err)
    except Exception:  # noqa: BLE001 - an unpicklable exception sends its text only
        inner = None
    return pickle.dumps(("error", inner, f"{type(err).__name__}: {err}"))


def _decode(data: bytes, status: int, label: str) -> Any:
    if not data:
        how = (f"signal {os.WTERMSIG(status)}" if os.WIFSIGNALED(status)
               else f"exit code {os.waitstatus_to_exitcode(status)}")
        raise CamvisError(f"{label}: its process ended ({how}) without a result")
    try:
        return pickle.loads(data)  # our own child's bytes, through a pipe only it and we hold
    except Exception as err:  # noqa: BLE001
        raise CamvisError(f"{label}: its result could not be read back ({err})") from None


def _answer(data: bytes, status: int, label: str) -> Any:
    kind, value, *text = _decode(data, status, label)
    if kind == "ok":
        return value
    try:
        err = pickle.loads(value) if value is not None else None
    except Exception:  # noqa: BLE001 - an exception class that cannot be rebuilt: its text
        err = None
    if isinstance(err, BaseException):
        raise err
    raise CamvisError(f"{label}: {text[0]}")
