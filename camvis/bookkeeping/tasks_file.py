"""An array's tasks file, jobs/<experiment>/<array>_tasks.pkl: written on the login node by
camvis.cluster.array_submit, read on the node by camvis.node.array_task (docs/contracts.md)."""

from __future__ import annotations

import os
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

from camvis.adapters.submitit_api import task_path

MAGIC = b"camvis tasks 1\n"
COUNT = struct.Struct("<Q")


@dataclass(frozen=True)
class TaskPaths:
    """What the manifest records of a task: submitit's paths for it, as strings."""

    submitted_pickle: str
    stdout: str
    stderr: str


def tasks_file(folder: str | Path, array_id: str) -> Path:
    """Where an array's tasks file lies: beside its tasks' folders, in the folder's id-free part."""
    from submitit.core.utils import JobPaths

    return JobPaths.get_first_id_independent_folder(folder) / f"{array_id}_tasks.pkl"


def encode_tasks(pickles: Sequence[bytes]) -> bytes:
    """MAGIC, the count, count + 1 offsets into the data (little-endian uint64), the data."""
    offsets = [0]
    for data in pickles:
        offsets.append(offsets[-1] + len(data))
    return b"".join([MAGIC, COUNT.pack(len(pickles)), struct.pack(f"<{len(offsets)}Q", *offsets), *pickles])


def read_task(path: str | Path, index: int) -> bytes:
    """Task `index`'s pickle from a tasks file: two seeks, whatever the array's size."""
    with open(path, "rb") as f:
        head = f.read(len(MAGIC) + COUNT.size)
        if head[:len(MAGIC)] != MAGIC or len(head) < len(MAGIC) + COUNT.size:
            raise ValueError(f"{path}: not a camvis tasks file (it should start with {MAGIC!r})")
        (count,) = COUNT.unpack_from(head, len(MAGIC))
        if not 0 <= index < count:
            raise ValueError(f"{path}: holds tasks 0-{count - 1}, not task {index}")
        f.seek(len(head) + 8 * index)
        start, end = struct.unpack("<2Q", f.read(16))
        f.seek(len(head) + 8 * (count + 1) + start)
        data = f.read(end - start)
    if len(data) != end - start:
        raise ValueError(f"{path}: truncated: task {index} should be bytes {start}-{end} of its data")
    return data


def task_paths(template: str, job_id: str) -> TaskPaths:
    """submitit's pickle and log paths of one array task (its first rank's logs)."""
    return TaskPaths(*(task_path(os.path.join(template, name), job_id)
                       for name in ("%j_submitted.pkl", "%j_%t_log.out", "%j_%t_log.err")))

