"""sacct's accounting fields: its time and memory formats, steps' MaxRSS, and a real job's usage on the cluster."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from camvis.bookkeeping import slurm_query
from camvis.bookkeeping.usage import GIB, Usage, duration_s, gpus, job_usage, memory_bytes, step_memory

# `sacct -D -j 14,111,116,353 -P -n -o <SACCT_FIELDS>` as the local 2-node cluster wrote it: 14_0 polled once
# (MaxRSS on its steps), 14_1 and 353_0 too short for a poll (no MaxRSS), 111 requeued (its first attempt's
# MaxRSS is not the current attempt's), 116 on two nodes (ReqMem is the job's total) then cancelled pending.
SACCT = """\
14_0|COMPLETED|vm|00:00:36|0:0|00:08.420|1|2G||1||billing=1,cpu=1,mem=2G,node=1
14_0.batch|COMPLETED|vm|00:00:36|0:0|00:00.015|1||12064K|1|1|cpu=1,mem=2G,node=1
14_0.0|COMPLETED|vm|00:00:35|0:0|00:08.405|1||406784K|1|1|cpu=1,mem=2G,node=1
14_1|COMPLETED|vm|00:00:29|0:0|00:07.482|1|2G||1||billing=1,cpu=1,mem=2G,node=1
14_1.batch|COMPLETED|vm|00:00:29|0:0|00:00.021|1|||1|1|cpu=1,mem=2G,node=1
14_1.0|COMPLETED|vm|00:00:29|0:0|00:07.460|1|||1|1|cpu=1,mem=2G,node=1
111|REQUEUED|n1|00:01:18|0:0|00:32.901|1|2G||1||billing=1,cpu=1,mem=2G,node=1
111.batch|CANCELLED|n1|00:01:18|0:15|00:00.004|1||12028K|1|1|cpu=1,mem=2G,node=1
111.0|FAILED|n1|00:01:21|127:0|00:32.897|1||382240K|1|1|cpu=1,mem=2G,node=1
111|CANCELLED by 0|n1|00:00:16|0:0|00:07.376|1|2G||1||billing=1,cpu=1,mem=2G,node=1
111.batch|CANCELLED|n1|00:00:16|0:15|00:00.003|1|||1|1|cpu=1,mem=2G,node=1
111.0|CANCELLED|n1|00:00:20|0:9|00:07.373|1|||1|1|cpu=1,mem=2G,node=1
116|NODE_FAIL|n[1-2]|00:00:13|0:0|00:00.023|2|5724M||2||billing=2,cpu=2,mem=5724M,node=2
116.batch|FAILED|n1|00:00:13|15:0|00:00.020|1|||1|1|cpu=1,mem=2862M,node=1
116.0|CANCELLED|n[1-2]|00:00:13|0:15|00:00.003|2|||2|2|cpu=2,mem=5724M,node=2
116|CANCELLED by 0|None assigned|00:00:00|0:0|00:00:00|2|5724M||2||
353_0|COMPLETED|n1|00:00:05|0:0|00:04.999|1|2862M||1||billing=1,cpu=1,mem=2862M,node=1
353_0.batch|COMPLETED|n1|00:00:05|0:0|00:00.012|1|||1|1|cpu=1,mem=2862M,node=1
353_0.0|COMPLETED|n1|00:00:05|0:0|00:04.986|1|||1|1|cpu=1,mem=2862M,node=1
"""


@pytest.mark.parametrize("text, seconds", [
    ("00:00:36", 36.0), ("1-02:03:04", 93784.0), ("00:08.420", 8.42), ("12:30", 750.0), ("01:02:03.5", 3723.5),
    ("10-00:00:00", 864000.0), ("", None), ("INVALID", None), ("UNLIMITED", None), ("1:2:3:4", None),
    ("x-01:00:00", None), (None, None)])  # fmt: skip
def test_sacct_times(text: str | None, seconds: float | None) -> None:
    assert duration_s(text) == (pytest.approx(seconds) if seconds is not None else None)


@pytest.mark.parametrize("text, default, expected", [
    ("406784K", "", (406784 * 1024, "")), ("2G", "M", (2 * GIB, "")), ("2862M", "M", (2862 * 1024**2, "")),
    ("1.5G", "", (1.5 * GIB, "")), ("4Gn", "M", (4 * GIB, "n")), ("500Mc", "M", (500 * 1024**2, "c")),
    ("2048", "M", (2048 * 1024**2, "")), ("0", "", (0.0, "")), ("", "", None), ("12X", "", None)])  # fmt: skip
def test_sacct_memory(text: str, default: str, expected: tuple[float, str] | None) -> None:
    assert memory_bytes(text, default) == expected


def test_gpus_of_alloc_tres() -> None:
    assert gpus("billing=8,cpu=8,gres/gpu=2,mem=64G,node=1") == 2
    assert gpus("cpu=8,gres/gpu:a100=4,gres/gpu=4,node=1") == 4
    assert gpus("billing=1,cpu=1,mem=2G,node=1") == 0 and gpus("") == 0


def test_memory_per_node_from_old_and_new_reqmem() -> None:
    base = {"AllocCPUS": "8", "NNodes": "2", "Elapsed": "01:00:00", "TotalCPU": "04:00:00"}
    assert job_usage({**base, "ReqMem": "16G"}).mem_asked == 8 * GIB  # 21.08+: the job's total
    assert job_usage({**base, "ReqMem": "8Gn"}).mem_asked == 8 * GIB  # older: per node
    assert job_usage({**base, "ReqMem": "1Gc"}).mem_asked == 4 * GIB  # older: per CPU, 8 CPUs over 2 nodes
    assert job_usage({**base, "ReqMem": "16G"}).cpu_efficiency == pytest.approx(0.5)
    # a step's largest task times its tasks per node: 4 ranks over 2 nodes, 1 GiB each -> 2 GiB a node
    assert step_memory("1048576K", "4", "2") == 2 * GIB
    assert step_memory("", "1", "1") is None and step_memory("0") is None


def test_parse_sacct_attaches_each_attempts_steps() -> None:
    rows = slurm_query.parse_sacct(SACCT)
    assert sorted(rows) == ["111", "116", "14_0", "14_1", "353_0"]
    done = rows["14_0"].usage
    assert done == Usage(elapsed_s=36.0, total_cpu_s=8.42, cpus=1, nodes=1, gpus=0, mem_asked=2 * GIB,
                         mem_used=406784 * 1024)
    assert done.cpu_efficiency == pytest.approx(8.42 / 36)
    assert rows["14_1"].usage.mem_used is None and rows["353_0"].usage.mem_used is None  # never polled
    requeued = rows["111"]
    assert requeued.history == ("REQUEUED",) and requeued.usage.elapsed_s == 16.0
    assert requeued.usage.mem_used is None, "the first attempt's MaxRSS is not the current attempt's"
    pending = rows["116"].usage
    assert pending.mem_asked == 2862 * 1024**2 and pending.nodes == 2 and pending.cpu_efficiency is None


def test_squeue_rows_have_no_usage() -> None:
    rows = slurm_query.parse_squeue("44|PENDING||0:00\n61|RUNNING|n1|0:11\n")
    assert rows["61"].usage is None


# --------------------------------------------------------------------------- the real cluster

BUSY = ("import time; block = b'x' * (300 * 2**20); end = time.time() + 45\n"
        "while time.time() < end: pass\n"
        "print(len(block))")  # 300 MiB held and one CPU busy for 45 s: longer than one accounting poll (30 s)


@pytest.mark.slurm
@pytest.mark.slow
@pytest.mark.skipif(os.environ.get("CAMVIS_SLURM") != "1", reason="set CAMVIS_SLURM=1 with the local cluster up (slurm/)")
def test_a_real_jobs_maxrss_and_cpu_time(tmp_path: Path) -> None:
    from camvis.cluster import efficiency_view, monitor

    script = tmp_path / "busy.py"
    script.write_text(BUSY)
    out = subprocess.run(["sbatch", "--parsable", "--time=3", "--mem=2G", "--cpus-per-task=1",
                          f"--output={tmp_path}/%j.out", "--wrap", f"{sys.executable} {script}"],
                         check=True, capture_output=True, text=True).stdout
    job_id = out.strip().split(";")[0]
    try:
        deadline = time.time() + 300
        while True:
            row = slurm_query.query([job_id]).rows.get(job_id)
            if row is not None and row.state in slurm_query.TERMINAL_STATES and row.usage and row.usage.mem_used:
                break
            assert time.time() < deadline, f"job {job_id} not accounted: {row}"
            time.sleep(2)
    finally:
        slurm_query.scancel([job_id])
    usage = row.usage
    assert row.state == "COMPLETED" and usage.cpus == 1 and usage.mem_asked == 2 * GIB
    assert 290 * 1024**2 < usage.mem_used < 1.5 * GIB, usage  # the 300 MiB block and the interpreter
    assert 44 <= usage.elapsed_s < 120 and 0 < usage.total_cpu_s <= usage.elapsed_s * 1.05, usage
    assert 0 < usage.cpu_efficiency <= 1.05  # a busy loop; under load the CPU is shared

    # camvis-status on the same job: the column and the warning for asking 2 GB and using 0.3
    jobs, outputs = tmp_path / "jobs", tmp_path / "outputs"
    (jobs / "e").mkdir(parents=True)
    (jobs / "e" / "manifest.json").write_text(monitor_manifest(job_id))
    status = monitor.collect("e", jobs, outputs)
    job = status.jobs[0]
    assert job.state == "COMPLETED" and job.slurm.usage == usage
    cell = efficiency_view.cell(efficiency_view.of_job(job, status.resources.get("busy")))
    assert cell.startswith("cpu ") and cell.endswith("/2 GB"), cell
    assert efficiency_view.warnings(status) == [
        f"busy: asked 2 GB, used {usage.mem_used / GIB:.1f} GB: lower slurm.mem_gb"]


def monitor_manifest(job_id: str) -> str:
    import json

    entry = {"group": "g", "fold": 1, "view": "v", "axes": {}, "hash": "h", "config": {}, "mode": "slurm",
             "job_id": job_id, "array_id": None, "task": 0, "submitted": "2020-01-01T00:00:00",
             "stdout": None, "stderr": None}
    launch = {"time": "2020-01-01T00:00:00", "mode": "slurm", "submitted": ["busy"], "skipped": {},
              "resources": {"mode": "slurm", "nodes": 1, "ranks_per_node": 1, "gpus_per_node": 0,
                            "cpus_per_task": 1, "mem_gb": 2, "time_min": 3}}
    return json.dumps({"experiment": "e", "jobs": {"busy": entry}, "launches": [launch]})
