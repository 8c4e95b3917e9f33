"""benchmarks/bench_paper_scale.py end to end at a tiny size: every stage runs and lands in its JSON.

The --local test runs the real commands (synth, build, camvis-launch --local, camvis-aggregate) as
fresh processes: about 30 s on a quiet 2-core machine (marked slow: several torch imports). The SLURM
test goes the cluster's way (pilot job, its measured memory sizing the grid, sacct) and is marked slurm.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "benchmarks" / "bench_paper_scale.py"
TINY = ["--views", "2", "--images-per-view", "1", "--size", "64x96", "--patch-size", "16", "--patches-per-image", "8",
        "--build-workers", "1", "--epoch-patches", "4", "--bootstrap", "10", "--archs", "type_2",
        "--set", "model.size_hidden=4", "--set", "eval.figures=false"]


def run_bench(tmp_path: Path, *extra: str) -> dict:
    out = tmp_path / "paper_scale.json"
    work = tmp_path / "work"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, (str(ROOT), os.environ.get("PYTHONPATH"))))}
    proc = subprocess.run([sys.executable, str(SCRIPT), *TINY, *extra, "--workdir", str(work), "--json", str(out)],
                          capture_output=True, text=True, env=env, timeout=900)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert not work.exists(), "the workdir is removed without --keep"
    for title in ("paper scale: stages", "paper scale: jobs", "paper scale: extrapolation"):
        assert title in proc.stdout
    return json.loads(out.read_text())


def check_common(result: dict, jobs: int) -> None:
    assert len(result["jobs"]) == jobs and all(j["state"] == "COMPLETED" for j in result["jobs"])
    for job in result["jobs"]:
        assert job["peak_host_mem_gb"] > 0 and job["train_s"] > 0 and job["evaluate_s"] > 0
        assert job["startup_s"] is not None and job["startup_s"] >= job["load_s"] - 1  # 1 s resolution
    assert result["stages"]["aggregate"]["summary"].endswith("summary.md")
    x = result["extrapolation"]
    # the paper's model and data, whatever this run's size: 8 groups, 72 jobs, 121 images of 4140 x 6198
    assert len(x["gpu"]["per_group"]) == 8 and x["gpu"]["jobs"] == 72 and x["gpu"]["grid_gpu_h"] > 0
    assert x["flops"]["type_2"]["gflop_train"] == pytest.approx(25.7, rel=0.01)  # docs/job.md: camvis-model summary
    assert x["memory"]["paper_pyramid_gib"] == pytest.approx(3.68, abs=0.01)  # docs/benchmarks.md, Memory: 3.7 GiB
    assert any(row[0] == "paper grid, 72 jobs" for row in x["rows"])


@pytest.mark.slow
def test_local_run_has_every_stage(tmp_path):
    result = run_bench(tmp_path, "--local", "--folds", "1")
    assert set(result["stages"]) == {"synth", "build", "jobs", "aggregate"}
    assert result["stages"]["build"]["images"] == 2 and result["stages"]["build"]["s_per_image"] > 0
    assert result["budget"]["mode"] == "local"
    check_common(result, jobs=1)


@pytest.mark.slurm
@pytest.mark.slow
def test_slurm_run_sizes_the_grid_from_a_pilot(tmp_path):
    if not (os.environ.get("CI") == "true" or os.environ.get("CAMVIS_SLURM") == "1"):
        pytest.skip("SLURM: run `make test` or set CAMVIS_SLURM=1 with the local cluster up")
    sinfo = subprocess.run(["sinfo", "-h", "-o", "%T"], capture_output=True, text=True)
    assert "idle" in sinfo.stdout or "mixed" in sinfo.stdout, "CAMVIS_SLURM=1 but no SLURM node is up"
    result = run_bench(tmp_path, "--folds", "1", "2", "--cpus-per-task", "1", "--pilot-mem-gb", "2")
    assert set(result["stages"]) == {"synth", "build", "pilot", "launch", "jobs", "aggregate_job", "aggregate"}
    assert result["stages"]["aggregate_job"]["state"] == "COMPLETED"
    pilot = [j for j in result["jobs"] if j["pilot"]]
    assert len(pilot) == 1 and pilot[0]["fold"] == 1
    assert result["stages"]["launch"]["mem_gb"] >= 1  # from the pilot's measured peak + 30 %
    check_common(result, jobs=2)
    assert all(j["queue_s"] is not None and j["node"] for j in result["jobs"])
