"""The command an array's sbatch script runs on the node (camvis.cluster.array_submit.runner_command):
this task's pickle from the array's tasks file, then submitit's runner."""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

from camvis.bookkeeping.tasks_file import read_task, task_paths, tasks_file
from camvis.io import write_bytes

WAIT_S = 60  # submitit's runner waits as long for its pickle


def run_task(folder: str) -> None:
    """This array task (SLURM_ARRAY_JOB_ID, SLURM_ARRAY_TASK_ID) through submitit's runner, its pickle
    first copied from the array's tasks file unless already there (a requeue's checkpoint). Every
    rank of a multi-task job may copy it: the same bytes, renamed into place atomically."""
    from submitit.core.submission import process_job

    array_id, index = os.environ["SLURM_ARRAY_JOB_ID"], int(os.environ["SLURM_ARRAY_TASK_ID"])
    pickle_path = Path(task_paths(folder, f"{array_id}_{index}").submitted_pickle)
    if not pickle_path.exists():
        write_bytes(pickle_path, read_task(_wait_for(tasks_file(folder, array_id)), index))
    process_job(folder)


def _wait_for(path: Path) -> Path:
    """The tasks file, once the launch has renamed it into place (a task can start before that)."""
    end = time.monotonic() + WAIT_S
    while not path.exists():
        if time.monotonic() > end:
            raise RuntimeError(f"waited {WAIT_S} s for this array's tasks file {path}: the launch that "
                               f"submitted it did not finish (killed?); launch the grid again")
        time.sleep(0.5)
    return path


if __name__ == "__main__":
    run_task(sys.argv[1])
