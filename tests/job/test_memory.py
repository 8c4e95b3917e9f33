"""A job that would not fit its memory allocation fails at start, naming what it needs."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from camvis.config import load_job_config
from camvis.job import memory
from camvis.job.train import open_inputs

GIB = 1 << 30


def test_allocation_reads_slurm_and_the_cgroup(tmp_path: Path) -> None:
    none = tmp_path / "none"
    assert memory.allocation({}, none) is None
    assert memory.allocation({"SLURM_MEM_PER_NODE": "2048"}, none) == (2 * GIB, "SLURM_MEM_PER_NODE=2048")
    per_cpu = memory.allocation({"SLURM_MEM_PER_CPU": "1024", "SLURM_CPUS_PER_TASK": "3"}, none)
    assert per_cpu is not None and per_cpu[0] == 3 * GIB
    (tmp_path / "memory.max").write_text("max\n")
    assert memory.allocation({}, tmp_path) is None
    (tmp_path / "memory.max").write_text(f"{GIB}\n")
    assert memory.allocation({"SLURM_MEM_PER_NODE": "4096"}, tmp_path) == (GIB, f"the cgroup limit {tmp_path / 'memory.max'}")


def test_a_job_larger_than_its_allocation_fails_at_start(synth_store, monkeypatch, tmp_path) -> None:
    cfg = load_job_config(None, [f"data.store={synth_store.path}", "data.factors=[2,4,8]"])
    monkeypatch.setattr(memory, "CGROUP", tmp_path)  # this machine's own limit left out
    monkeypatch.setenv("SLURM_MEM_PER_NODE", "512")  # MiB: less than the process alone
    with pytest.raises(memory.MemoryAllocationError, match=r"needs about 1\.0 GiB.*SLURM_MEM_PER_NODE=512.*mem_gb"):
        open_inputs(cfg, torch.device("cpu"))
    monkeypatch.setenv("SLURM_MEM_PER_NODE", "4096")
    assert len(open_inputs(cfg, torch.device("cpu")).train_idx) > 0


def test_the_paper_pyramid_is_counted_on_the_host_only_on_the_cpu() -> None:
    shapes = [(4140 // f + 128, 6198 // f + 128) for f in (2, 4, 8, 16, 32)]
    pyramid = memory.pyramid_bytes(shapes, 121, 9)
    assert 3.0 * GIB < pyramid < 4.0 * GIB  # the "about 3 GB of uint8 levels" + depth
    assert memory.host_need(shapes, 121, 9, on_gpu=False) == memory.BASE_BYTES + pyramid
    assert memory.host_need(shapes, 121, 9, on_gpu=True) < memory.BASE_BYTES + 0.1 * GIB
