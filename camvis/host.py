"""This machine: its name (safe in a file name), whether a process of it is alive, its clock as camvis
writes every timestamp. Temporary names carry host and pid, so only this host's dead writers are reaped."""

from __future__ import annotations

import datetime
import os
import re
import socket


def host() -> str:
    """This machine's name, safe in a file name."""
    return re.sub(r"[^A-Za-z0-9._-]", "_", socket.gethostname()) or "unknown-host"


def pid_alive(pid: int) -> bool:
    """Whether process `pid` exists on this host (another user's counts: it may be writing)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def usable_cpus() -> int:
    """The cores this process may run on: its affinity (a SLURM allocation's or taskset's share), not the node's."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def now_iso() -> str:
    """This moment as ISO 8601 with the local UTC offset, to the second (every camvis timestamp)."""
    return datetime.datetime.now().astimezone().isoformat(timespec="seconds")
