"""The paths the launch records per array task (submitted pickle, stdout, stderr): camvis's copy of
submitit's rule (camvis.bookkeeping.tasks_file.task_paths, after camvis.adapters.submitit_api.task_path) against submitit's public JobPaths.

    .venv/bin/python benchmarks/bench_task_paths.py                   # 5,000 tasks, 5 repeats
    .venv/bin/python benchmarks/bench_task_paths.py --json benchmarks/results/task_paths.json

Median CPU seconds for all the tasks' paths, and the load average beside them.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

from submitit.core.utils import JobPaths

from camvis.cluster.array_submit import task_paths

TEMPLATE = "/cluster/home/user/camvis/jobs/experiment/%j"


NEEDS = """needs: nothing: it makes the paths of 5,000 fabricated array tasks in memory (submitit installed)."""

def copied_rule(n: int) -> None:
    for i in range(n):
        task_paths(TEMPLATE, f"123456_{i}")


def public_jobpaths(n: int) -> None:
    for i in range(n):
        paths = JobPaths(TEMPLATE, job_id=f"123456_{i}", task_id=0)
        str(paths.submitted_pickle), str(paths.stdout), str(paths.stderr)


def main() -> None:
    ap = argparse.ArgumentParser(epilog=NEEDS, description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--tasks", type=int, default=5000)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()
    load = os.getloadavg()
    cpu: dict[str, list[float]] = {}
    for _ in range(args.repeats):  # alternating
        for name, way in (("copied_rule", copied_rule), ("public_jobpaths", public_jobpaths)):
            start = time.process_time()
            way(args.tasks)
            cpu.setdefault(name, []).append(time.process_time() - start)
    medians = {name: statistics.median(v) for name, v in cpu.items()}
    for name, value in medians.items():
        print(f"{name:16s}: {value:.3f} s CPU for {args.tasks} tasks")
    print(f"load average {load[0]:.2f}")
    if args.json:
        from camvis.io import write_json

        write_json(args.json, {"benchmark": "array task paths: copied rule vs submitit's JobPaths",
                               "command": " ".join(["python", *sys.argv]), "tasks": args.tasks,
                               "median_cpu_s": medians, "cpu_s": cpu, "load_avg": load})


if __name__ == "__main__":
    main()
