"""A job's efficiency figures: present and plausible for a real CPU job, sampled GPU utilisation on CUDA."""

from __future__ import annotations

import json
import time

import pytest
import torch

from camvis.config import load_job_config
from camvis.job import efficiency
from camvis.job.task import run_job
from camvis.bookkeeping.jobfolder import PROGRESS
from camvis.model import ARCHITECTURES, MultiMagnificationNet, build_model, flops_per_sample

TINY = ["data.factors=[2,4,8]", "model.size_hidden=8", "train.batch_size=32", "train.epoch_patches=128",
        "eval.bootstrap=20", "eval.figures=false"]


def _cfg(store, *extra):
    return load_job_config(None, [f"data.store={store.path}", *TINY, *extra])


def test_a_cpu_job_records_plausible_efficiency(synth_store, tmp_path):
    cfg = _cfg(synth_store, "train.max_epochs=2", "experiment=e", "name=j")
    scores = run_job(cfg, tmp_path, threads=1)
    job = tmp_path / "e" / "j"
    assert scores == json.loads((job / "scores.json").read_text())
    history = torch.load(job / "checkpoint.pt", weights_only=True)["state"]["history"]
    rates = [h["samples_per_s"] for h in history]

    assert scores["threads"] == 1
    assert 0 < scores["cpu_time_s"]
    # one allotted thread: busy most of the time, never far past 1 (torch's own helper threads add a little)
    assert 0.05 < scores["cpu_efficiency"] < 2.0, scores["cpu_efficiency"]
    gflop = flops_per_sample(build_model(cfg, synth_store.patch_size)) / 1e9
    assert scores["model_gflop_per_sample"] == pytest.approx(gflop, rel=1e-3)
    assert scores["train_samples_per_s"] == pytest.approx(len(rates) / sum(1 / r for r in rates), rel=1e-3)
    assert min(rates) * 0.999 <= scores["train_samples_per_s"] <= max(rates) * 1.001
    assert scores["train_tflops"] == pytest.approx(gflop * scores["train_samples_per_s"] / 1e3, rel=1e-3)
    assert 0 < scores["train_tflops"] < 10, "a CPU thread does well under 10 TFLOP/s"
    assert not {"gpu_util_mean", "peak_device_mem_gb"} & set(scores), "no GPU figures on the CPU"
    assert scores["speedups"] == {"compile": False, "fused_adam": False, "chosen_by": "cpu"}  # auto on the CPU

    progress = json.loads((job / PROGRESS).read_text())
    assert progress["state"] == "done" and progress["threads"] == 1
    assert progress["speedups"] == scores["speedups"]
    assert 0.05 < progress["cpu_efficiency"] < 2.0 and 0.01 < progress["peak_host_mem_gb"] < 1000
    assert progress["train_tflops"] == pytest.approx(gflop * rates[-1] / 1e3, rel=1e-3)  # the last epoch's


def test_progress_has_the_figures_while_training(synth_store, tmp_path):
    """Every epoch's progress.json carries them, before the job ends (what camvis-status shows of a running job)."""
    from camvis.job import distributed
    from camvis.job.train import train

    cfg = _cfg(synth_store, "train.max_epochs=1", "experiment=e", "name=j")
    train(cfg, tmp_path / "j", distributed.setup("cpu"))
    progress = json.loads((tmp_path / "j" / PROGRESS).read_text())
    assert progress["state"] == "evaluating" and progress["epoch"] == 1
    assert {"threads", "cpu_efficiency", "peak_host_mem_gb", "train_tflops"} <= set(progress)


@pytest.mark.parametrize("arch", sorted(ARCHITECTURES))
@pytest.mark.parametrize("levels, patch, hidden", [(1, 16, 8), (3, 32, 16), (2, 8, 3)])
def test_model_flops_from_the_architecture_match_flop_counter_mode(arch, levels, patch, hidden):
    """The job's count (no model run) is FlopCounterMode's measure (camvis.model.flops_per_sample)."""
    model = MultiMagnificationNet(num_levels=levels, size_hidden=hidden, patch_size=patch,
                                  **ARCHITECTURES[arch].flags())
    assert efficiency.model_flops(model) == flops_per_sample(model)


@pytest.mark.parametrize("arch", ["type_1", "type_8"])
def test_model_flops_of_camvis2s_full_size_model(arch):
    """128 px patches, 7 blocks, 128 hidden channels, 3 levels: the paper's models."""
    model = MultiMagnificationNet(num_levels=3, **ARCHITECTURES[arch].flags())
    assert efficiency.model_flops(model) == flops_per_sample(model) > 1e9


def test_harmonic_mean_is_total_samples_over_total_time():
    # two epochs of 100 samples: 1 s at 100/s and 4 s at 25/s -> 200 samples in 5 s
    assert efficiency.harmonic_mean([100.0, 25.0]) == pytest.approx(40.0)
    assert efficiency.harmonic_mean([None, 0, 50.0]) == 50.0  # unknown or empty epochs left out
    assert efficiency.harmonic_mean([]) is None


def test_significant_keeps_small_rates():
    assert efficiency.significant(0.000123456) == 0.0001235
    assert efficiency.significant(123456.7) == 123500.0 and efficiency.significant(None) is None


class _Scripted(efficiency.GpuSampler):
    """The sampler's thread and statistics, fed known readings instead of NVML's."""

    def __init__(self, readings, every=0.005):
        super().__init__(None, every)
        self.readings = list(readings)

    def read(self):
        return self.readings.pop(0) if self.readings else 50.0


def test_gpu_sampler_averages_its_readings_until_stopped():
    sampler = _Scripted([1.0, 10.0, 40.0])  # the first reading is start()'s probe, not a sample
    assert sampler.start()
    deadline = time.time() + 30
    while len(sampler.samples) < 4 and time.time() < deadline:
        time.sleep(0.01)
    sampler.stop()
    n = len(sampler.samples)
    assert n >= 4 and sampler.samples[:2] == [10.0, 40.0] and sampler.last == 50.0
    assert sampler.mean == pytest.approx((10.0 + 40.0 + 50.0 * (n - 2)) / n)
    time.sleep(0.05)
    assert len(sampler.samples) == n, "no sample after stop()"


def test_gpu_sampler_without_nvml_records_nothing():
    class NoNvml(efficiency.GpuSampler):
        def read(self):
            return None

    sampler = NoNvml(None)
    assert not sampler.start() and sampler.mean is None and sampler.last is None
    sampler.stop()  # harmless


@pytest.mark.gpu
def test_cuda_job_records_device_memory_flops_and_utilisation(synth_store, tmp_path):
    if not torch.cuda.is_available():
        pytest.skip("needs a CUDA device (run on a lent GPU machine: pytest -m gpu)")
    cfg = _cfg(synth_store, "train.max_epochs=3", "train.epoch_patches=4096", "train.device=cuda",
               "experiment=e", "name=gpu")
    scores = run_job(cfg, tmp_path)
    assert 0 < scores["peak_device_mem_gb"] < 200 and scores["train_tflops"] > 0
    reading = efficiency.GpuSampler(torch.device("cuda")).read()
    if reading is None:  # no pynvml: nothing recorded
        assert "gpu_util_mean" not in scores
    else:  # sampled once a second while training ran
        assert 0 <= reading <= 100 and 0 <= scores.get("gpu_util_mean", 0) <= 100
