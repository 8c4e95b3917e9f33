"""benchmarks/gpu_check.py runs without a GPU too (reduced mode), so that `make gpu-check` cannot rot."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[2]
PARTS = ("gpu_tests", "training", "batch_path", "nccl")


def test_gpu_check_runs_reduced_and_writes_one_json(tmp_path):
    out = tmp_path / "gpu_check.json"
    env = {**os.environ, "PYTHONPATH": str(ROOT), "CAMVIS_CACHE_DIR": str(tmp_path / "cache")}
    run = subprocess.run([sys.executable, str(ROOT / "benchmarks/gpu_check.py"), "--reduced", "--no-tests",
                          "--out", str(out)], cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stderr[-2000:]
    report = json.loads(out.read_text())
    assert set(PARTS) <= set(report)
    assert report["verdict"]["status"].startswith("skipped"), "a reduced run records no verdict for jobs"
    assert not (tmp_path / "cache" / "speedups").exists()
    if torch.cuda.is_available():
        assert all(not report[p]["status"].startswith("failed") for p in PARTS)
        return
    assert all(report[p]["status"] == "skipped: no CUDA" for p in PARTS)
    smoke = report["cpu_smoke"]
    assert smoke["training"]["variants"]["eager"]["samples_per_s"] > 0
    assert smoke["batch_path"]["max_abs_difference"] == 0.0
    assert not list(tmp_path.glob("*.tmp"))


def test_peak_is_read_from_the_device_name():
    sys.path.insert(0, str(ROOT / "benchmarks"))
    import gpu_check

    assert gpu_check.peak_tflops("NVIDIA H100 PCIe") == 756.0
    assert gpu_check.peak_tflops("NVIDIA H100 80GB HBM3") == 989.0
    assert gpu_check.peak_tflops("NVIDIA H200") == 989.0
    assert gpu_check.peak_tflops("Some Future GPU") is None


def test_the_training_part_becomes_the_verdict_jobs_read(tmp_path, monkeypatch):
    """What the check writes after its training part is what camvis.job.speedups.choose reads."""
    sys.path.insert(0, str(ROOT / "benchmarks"))
    import gpu_check

    from camvis.config import load_job_config
    from camvis.job import speedups

    monkeypatch.setenv("CAMVIS_CACHE_DIR", str(tmp_path))
    training = {"status": "ok", "device": "NVIDIA H200", "fastest": "eager_fused_adam",
                "variants": {"eager": {"samples_per_s": 1000.0}, "eager_fused_adam": {"samples_per_s": 1100.0},
                             "compiled": {"status": "failed: RuntimeError: x"}}}
    args = gpu_check.parse_args(["--no-tests"])
    result = gpu_check.guarded(lambda: gpu_check.verdict(training, args))
    assert result["status"] == "ok" and result["chosen"] == {"compile": False, "fused_adam": True}
    assert result["path"] == str(speedups.verdict_path("NVIDIA H200"))
    chosen = speedups.choose(load_job_config(None), torch.device("cuda"), "NVIDIA H200")
    assert chosen == speedups.Speedups(False, True, "verdict")
    for flags in (["--no-verdict"], ["--reduced"]):
        assert gpu_check.verdict(training, gpu_check.parse_args(flags))["status"].startswith("skipped")
