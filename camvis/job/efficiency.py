"""What a job cost and how well it used what it was given, for progress.json (every epoch) and scores.json
(at the end): wall time per phase (this attempt's: a requeued job's earlier attempts are not added), peak host
memory, the process's CPU time and CPU efficiency, the model's achieved FLOP/s in training and, on CUDA, peak
device memory and the mean GPU utilisation sampled during training.

Rank 0's figures: its own process, its own GPU. FLOP/s count the whole job (samples/s of every rank).
scores.json is rewritten atomically with the extra keys: the file is complete at every moment, and its presence
still means the job is finished.
"""

from __future__ import annotations

import resource
import sys
import threading
import time
from pathlib import Path
from typing import Any, Sequence

from camvis.io import write_json
from camvis.bookkeeping.jobfolder import SCORES

GPU_SAMPLE_EVERY_S = 1.0  # NVML's utilisation is the busy share of its last sample period (1/6 s to 1 s)


def peak_host_mem_gb() -> float:
    """This process's peak resident memory (ru_maxrss: KiB on Linux, bytes on macOS)."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / 1e9 if sys.platform == "darwin" else peak * 1024 / 1e9


def peak_device_mem_gb(device: Any) -> float | None:
    import torch

    if getattr(device, "type", None) != "cuda":
        return None
    return torch.cuda.max_memory_allocated(device) / 1e9


def cpu_seconds() -> float:
    """User + system CPU time of this process and its waited-for children (what sacct's TotalCPU adds up)."""
    usage = [resource.getrusage(who) for who in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN)]
    return sum(u.ru_utime + u.ru_stime for u in usage)


def significant(value: float | None, digits: int = 4) -> float | None:
    """Rounded to `digits` significant digits (a CPU job's TFLOP/s is 0.0012, not 0.0)."""
    return None if value is None else float(f"{value:.{digits}g}")


def harmonic_mean(rates: Sequence[float]) -> float | None:
    """Samples/s over epochs of equal size: total samples / total time."""
    rates = [r for r in rates if isinstance(r, (int, float)) and r > 0]
    return len(rates) / sum(1.0 / r for r in rates) if rates else None


def model_flops(model: Any) -> int:
    """Forward + backward FLOPs of one training sample, from the architecture alone.

    The count camvis.model.flops_per_sample measures with FlopCounterMode (2 FLOPs per multiply-add of the
    convolutions and linear layers; a layer's backward: its weight gradient, plus its input gradient when its
    input needs one, i.e. not for the first convolution a level's pixels meet), without running the model:
    that measure's first pass on the meta device costs seconds of one-off start-up in every job.
    tests/job/test_efficiency.py checks the two agree on every variant.
    """
    c, h, p, levels = model.num_channels, model.size_hidden, model.patch_size, model.num_levels

    def conv(cin: int, side: int, grad: bool) -> int:  # a 3 x 3 "same" conv to h channels
        return 2 * cin * 9 * h * side * side * (3 if grad else 2)

    def encoder(cin: int, grad: bool) -> int:  # blocks 1..n, each halving the side, to 1 x 1
        return conv(cin, p, grad) + sum(conv(h, p >> k, True) for k in range(1, model.num_blocks))

    if model.align_features:  # level 0's block sees its own pixels only; later levels also the encoding
        total = sum(conv(c if i == 0 else c + h, p, i > 0) for i in range(levels - 1))
        total += encoder(c if levels == 1 else c + h, levels > 1)
        size_in = h
    else:
        total = levels * encoder(c, False)
        size_in = levels * h
    head = size_in * h + h if model.use_mlp else size_in  # fc1, fc2 or the 1 x 1 conv, one output
    return total + 2 * head * 3


class GpuSampler:
    """The GPU's utilisation (%), asked of NVML every `every` s by a daemon thread between start() and stop().

    torch.cuda.utilization needs pynvml (the nvidia-ml-py package); without it, or without NVML (no driver
    library, a container that hides it), start() returns False and nothing is recorded: a missing figure,
    never a failed job.
    """

    def __init__(self, device: Any, every: float = GPU_SAMPLE_EVERY_S) -> None:
        self.device, self.every = device, every
        self.samples: list[float] = []
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def read(self) -> float | None:
        import torch

        try:
            return float(torch.cuda.utilization(self.device))
        except Exception:  # ModuleNotFoundError (no pynvml), NVML errors: utilisation unknown
            return None

    def start(self) -> bool:
        if self._thread is not None or self.read() is None:
            return self._thread is not None
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name="camvis-gpu-sampler", daemon=True)
        self._thread.start()
        return True

    def _run(self) -> None:
        while not self._stop.wait(self.every):
            value = self.read()
            if value is not None:
                self.samples.append(value)

    def stop(self) -> None:
        if self._thread is not None:
            self._stop.set()
            self._thread.join()
            self._thread = None

    @property
    def last(self) -> float | None:
        return self.samples[-1] if self.samples else None

    @property
    def mean(self) -> float | None:
        return sum(self.samples) / len(self.samples) if self.samples else None


class Meter:
    """One job's efficiency figures, from its start (created before the store loads) to its end."""

    def __init__(self, device: Any, sample_gpu: bool = True, device_info: dict[str, Any] | None = None) -> None:
        import torch

        self.device = device
        self.device_info = device_info  # camvis.job.device.describe: what the job trains on
        self.threads = torch.get_num_threads()  # the allotted CPUs: camvis.job.task limits them first
        self.flops_per_sample: int | None = None
        self.samples_per_s: float | None = None  # the last epoch's, all ranks
        self.speedups: dict[str, Any] | None = None  # what training runs with (camvis.job.speedups)
        self._wall0, self._cpu0 = time.perf_counter(), cpu_seconds()
        on_cuda = getattr(device, "type", None) == "cuda"
        self.gpu = GpuSampler(device) if on_cuda and sample_gpu else None

    def measure_model(self, model: Any) -> None:
        """The bare model's forward + backward FLOPs per training sample (model_flops)."""
        self.flops_per_sample = model_flops(model)

    def start_training(self) -> None:
        if self.gpu is not None:
            self.gpu.start()

    def stop_training(self) -> None:
        if self.gpu is not None:
            self.gpu.stop()

    def cpu_efficiency(self) -> float | None:
        """CPU time / (wall time x allotted threads) since the job started: 1.0 keeps every CPU busy."""
        wall = time.perf_counter() - self._wall0
        return (cpu_seconds() - self._cpu0) / (wall * self.threads) if wall > 0 and self.threads else None

    def tflops(self, samples_per_s: float | None) -> float | None:
        if self.flops_per_sample is None or not samples_per_s:
            return None
        return self.flops_per_sample * samples_per_s / 1e12

    def progress_fields(self, samples_per_s: float | None = None) -> dict[str, Any]:
        """For progress.json, every epoch (its samples/s) and at each phase: the figures so far."""
        self.samples_per_s = samples_per_s or self.samples_per_s
        fields = {"threads": self.threads, "cpu_efficiency": significant(self.cpu_efficiency(), 3),
                  "peak_host_mem_gb": round(peak_host_mem_gb(), 4),
                  "train_tflops": significant(self.tflops(self.samples_per_s)), "speedups": self.speedups,
                  "device": self.device_info}
        if self.gpu is not None and self.gpu.samples:
            fields.update(gpu_util=self.gpu.last, gpu_util_mean=round(self.gpu.mean or 0.0, 1))
        return {k: v for k, v in fields.items() if v is not None}

    def score_fields(self, history: Sequence[dict[str, Any]]) -> dict[str, Any]:
        """For scores.json: CPU time and efficiency of this attempt, FLOP/s over every epoch trained."""
        rate = harmonic_mean([h.get("samples_per_s") for h in history])
        fields = {"threads": self.threads, "cpu_time_s": round(cpu_seconds() - self._cpu0, 3),
                  "cpu_efficiency": significant(self.cpu_efficiency(), 3),
                  "model_gflop_per_sample": significant(None if self.flops_per_sample is None
                                                        else self.flops_per_sample / 1e9),
                  "train_samples_per_s": significant(rate), "train_tflops": significant(self.tflops(rate)),
                  "speedups": self.speedups, "device": self.device_info}
        if self.gpu is not None and self.gpu.samples:
            fields.update(gpu_util_mean=round(self.gpu.mean or 0.0, 1), gpu_util_samples=len(self.gpu.samples))
        return {k: v for k, v in fields.items() if v is not None}


def record(job_dir: Path, scores: dict[str, Any], seconds: dict[str, float], device: Any,
           meter: Meter | None = None, history: Sequence[dict[str, Any]] = (),
           startup: dict[str, Any] | None = None) -> dict[str, Any]:
    """`scores` with `timing` ({load_s, train_s, evaluate_s}), the peak memories, the meter's figures and
    `startup` (the start's phases, camvis.job.startup), written to scores.json."""
    extra: dict[str, Any] = {"timing": {k: round(v, 3) for k, v in seconds.items()},
                             "peak_host_mem_gb": round(peak_host_mem_gb(), 4)}
    if startup is not None:
        extra["startup"] = {k: round(v, 3) if isinstance(v, float) else v for k, v in startup.items()}
    device_gb = peak_device_mem_gb(device)
    if device_gb is not None:
        extra["peak_device_mem_gb"] = round(device_gb, 4)
    if meter is not None:
        extra.update(meter.score_fields(history))
    scores = {**scores, **extra}
    write_json(Path(job_dir) / SCORES, scores)
    return scores
