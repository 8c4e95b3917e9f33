"""camvis-status's efficiency column and its warnings, from sacct's accounting or the jobs' own figures."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Sequence

import pytest
from rich.console import Console

from camvis.bookkeeping import slurm_query
from camvis.cluster import efficiency_view, monitor

EXP = "eff"
FIELDS = slurm_query.SACCT_FIELDS.split(",")


@pytest.fixture(autouse=True)
def _no_real_slurm(monkeypatch: pytest.MonkeyPatch) -> None:
    # fabricated ids must never reach the real sacct: without a runner, behave as on a machine without SLURM
    monkeypatch.setattr(slurm_query, "tool_on_path", lambda name: False)


def sacct_line(job_id: str, state: str, elapsed: str, total_cpu: str, cpus: int, req_mem: str,
               max_rss: str = "", tres: str = "") -> str:
    """One job row and its .0 step, in SACCT_FIELDS' order (MaxRSS on the step, as sacct writes it)."""
    job = {"JobID": job_id, "State": state, "NodeList": "n1", "Elapsed": elapsed, "ExitCode": "0:0",
           "TotalCPU": total_cpu, "AllocCPUS": str(cpus), "ReqMem": req_mem, "NNodes": "1", "AllocTRES": tres}
    step = {**job, "JobID": f"{job_id}.0", "ReqMem": "", "MaxRSS": max_rss, "NTasks": "1"}
    return "\n".join("|".join(row.get(f, "") for f in FIELDS) for row in (job, step)) + "\n"


def runner(sacct: str):
    def run(cmd: Sequence[str]) -> subprocess.CompletedProcess:
        return subprocess.CompletedProcess(list(cmd), 0, sacct if cmd[0] == "sacct" else "", "")
    return run


def experiment(root: Path, names: Sequence[str], mode: str = "slurm", **resources: object) -> None:
    """A launch of `names` as tasks 900_0.. asking for `resources` per job."""
    jobs = {n: {"group": "g", "fold": i + 1, "view": "v", "axes": {}, "hash": "h", "config": {}, "mode": mode,
                "job_id": f"900_{i}" if mode == "slurm" else None, "array_id": "900" if mode == "slurm" else None,
                "task": i, "submitted": "2020-01-01T00:00:00", "stdout": None, "stderr": None}
            for i, n in enumerate(names)}
    asked = {"mode": mode, "nodes": 1, "ranks_per_node": 1, "gpus_per_node": 0, "cpus_per_task": 1,
             "mem_gb": None, "time_min": 60, **resources}
    launch = {"time": "2020-01-01T00:00:00", "mode": mode, "submitted": list(names), "skipped": {},
              "resources": asked}
    path = root / "jobs" / EXP / "manifest.json"
    path.parent.mkdir(parents=True)
    path.write_text(json.dumps({"experiment": EXP, "jobs": jobs, "launches": [launch]}))


def write_scores(root: Path, name: str, **figures: object) -> None:
    folder = root / "outputs" / EXP / name
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "scores.json").write_text(json.dumps({"config_hash": "h", "metrics": {}, **figures}))


def collect(root: Path, sacct: str | None = None) -> monitor.ExperimentStatus:
    return monitor.collect(EXP, root / "jobs", root / "outputs", runner=runner(sacct) if sacct else None)


def render(status: monitor.ExperimentStatus) -> str:
    console = Console(record=True, width=250)
    console.print(monitor.status_renderable(status))
    return console.export_text()


def test_an_over_asked_job_is_warned_from_sacct(tmp_path: Path) -> None:
    """8 GB and 4 CPUs asked; 0.9 GB and under a CPU's worth used: the column says so and two warnings name
    the settings to lower."""
    experiment(tmp_path, ["big", "fit"], mem_gb=8, cpus_per_task=4)
    sacct = (sacct_line("900_0", "COMPLETED", "01:00:00", "00:36:00", 4, "8G", "943718K")  # 0.9 GiB, 15% CPU
             + sacct_line("900_1", "COMPLETED", "01:00:00", "03:28:48", 4, "8G", "6G"))  # 87% CPU, 6 of 8 GB
    status = collect(tmp_path, sacct)
    cells = {j.info.name: efficiency_view.cell(efficiency_view.of_job(j, status.resources[j.info.name]))
             for j in status.jobs}
    assert cells == {"big": "cpu 15% · 0.9/8 GB", "fit": "cpu 87% · 6.0/8 GB"}
    assert efficiency_view.warnings(status) == ["big: asked 8 GB, used 0.9 GB: lower slurm.mem_gb",
                                                "big: CPU efficiency 15% of 4 CPUs: lower slurm.cpus_per_task"]
    text = render(status)
    assert "efficiency" in text and "cpu 87% · 6.0/8 GB" in text
    assert "warning: big: asked 8 GB, used 0.9 GB: lower slurm.mem_gb" in text


def test_a_running_job_uses_its_progress_and_is_not_warned_about_memory(tmp_path: Path) -> None:
    """sacct adds up CPU time and MaxRSS as steps end: a running job's figures are its own, and its memory
    may still grow, so only its idle CPUs or GPU are warned about."""
    experiment(tmp_path, ["run"], mem_gb=8, cpus_per_task=4, gpus_per_node=1)
    progress = tmp_path / "outputs" / EXP / "run" / "progress.json"
    progress.parent.mkdir(parents=True)
    progress.write_text(json.dumps({"state": "training", "epoch": 3, "cpu_efficiency": 0.2,
                                    "peak_host_mem_gb": 0.5, "gpu_util": 9, "gpu_util_mean": 12.5}))
    status = collect(tmp_path, sacct_line("900_0", "RUNNING", "00:10:00", "00:00:00", 4, "8G",
                                          tres="cpu=4,gres/gpu=1,mem=8G,node=1"))
    job = status.jobs[0]
    assert efficiency_view.cell(efficiency_view.of_job(job, status.resources["run"])) == "gpu 12% · cpu 20% · 0.5/8 GB"
    assert efficiency_view.warnings(status) == [
        "run: GPU idle, mean utilisation 12%: raise train.batch_size, or train on CPUs (slurm.gpus_per_node=0)",
        "run: CPU efficiency 20% of 4 CPUs: lower slurm.cpus_per_task"]


def test_without_accounting_the_jobs_own_figures_are_used(tmp_path: Path) -> None:
    """A finished job SLURM no longer reports (or a cluster without slurmdbd): scores.json's figures."""
    experiment(tmp_path, ["done"], mem_gb=16, cpus_per_task=2)
    write_scores(tmp_path, "done", cpu_efficiency=0.91, peak_host_mem_gb=1.0, threads=2)
    status = collect(tmp_path)  # no SLURM on this PATH in unit tests
    job = status.jobs[0]
    assert job.state == "COMPLETED" and job.slurm is None
    e = efficiency_view.of_job(job, status.resources["done"])
    assert e.mem_used_gb == pytest.approx(1e9 / 1024**3) and efficiency_view.cell(e) == "cpu 91% · 0.9/16 GB"
    assert efficiency_view.warnings(status) == ["done: asked 16 GB, used 0.9 GB: lower slurm.mem_gb"]


def test_a_local_run_asked_slurm_for_nothing(tmp_path: Path) -> None:
    experiment(tmp_path, ["loc"], mode="local", mem_gb=64)
    write_scores(tmp_path, "loc", cpu_efficiency=0.5, peak_host_mem_gb=0.2, threads=1)
    status = collect(tmp_path)
    assert efficiency_view.cell(efficiency_view.of_job(status.jobs[0], status.resources["loc"])) == "cpu 50% · 0.2 GB"
    assert efficiency_view.warnings(status) == []


def test_many_jobs_with_one_warning_make_one_line(tmp_path: Path) -> None:
    names = [f"j{i}" for i in range(6)]
    experiment(tmp_path, names, mem_gb=8)
    sacct = "".join(sacct_line(f"900_{i}", "COMPLETED", "00:10:00", "00:09:00", 1, "8G", f"{100 + 100 * i}M")
                    for i in range(6))
    status = collect(tmp_path, sacct)
    assert efficiency_view.warnings(status) == [
        "6 jobs (j0, j1, j2 and 3 more): asked 8 GB, used at most 0.6 GB: lower slurm.mem_gb"]


def test_a_job_that_failed_early_is_not_told_to_ask_for_less(tmp_path: Path) -> None:
    experiment(tmp_path, ["oom", "slow"], mem_gb=8, cpus_per_task=4)
    sacct = (sacct_line("900_0", "FAILED", "00:01:00", "00:00:10", 4, "8G", "100M")
             + sacct_line("900_1", "TIMEOUT", "01:00:00", "00:10:00", 4, "8G", "200M"))
    status = collect(tmp_path, sacct)
    assert [j.state for j in status.jobs] == ["FAILED", "TIMEOUT"]
    assert efficiency_view.cell(efficiency_view.of_job(status.jobs[0], status.resources["oom"])) == "cpu 4% · 0.1/8 GB"
    assert efficiency_view.warnings(status) == []


def test_nothing_known_is_a_dash(tmp_path: Path) -> None:
    experiment(tmp_path, ["p"], mem_gb=8)
    status = collect(tmp_path, sacct_line("900_0", "PENDING", "00:00:00", "00:00:00", 1, "8G"))
    assert efficiency_view.cell(efficiency_view.of_job(status.jobs[0], status.resources["p"])) == "-"
    assert efficiency_view.warnings(status) == []
