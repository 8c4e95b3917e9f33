"""A job that would not fit its memory allocation fails at start, naming what it needs."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from camvis.config import load_job_config
from camvis import bounds
from camvis.job import memory
from camvis.job.train import open_inputs

GIB = 1 << 30


def test_allocation_reads_slurm_and_the_cgroup(tmp_path: Path) -> None:
    none = tmp_path / "none"
    node = (bounds.node_memory(), "this node's memory")  # the last bound: the machine itself
    assert memory.allocation({}, none) == node
    assert memory.allocation({"SLURM_MEM_PER_NODE": "2048"}, none) == (2 * GIB, "SLURM_MEM_PER_NODE=2048")
    per_cpu = memory.allocation({"SLURM_MEM_PER_CPU": "1024", "SLURM_CPUS_PER_TASK": "3"}, none)
    assert per_cpu is not None and per_cpu[0] == 3 * GIB
    (tmp_path / "memory.max").write_text("max\n")
    assert memory.allocation({}, tmp_path) == node
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


@pytest.mark.parametrize("levels, hidden, patch", [(5, 128, 128), (3, 8, 16), (1, 4, 4), (2, 16, 32)])
def test_the_parameters_counted_from_the_architecture_are_the_models(levels, hidden, patch) -> None:
    from camvis.model import ARCHITECTURES, MultiMagnificationNet, count_parameters

    for arch in ARCHITECTURES.values():
        with torch.device("meta"):
            model = MultiMagnificationNet(levels, size_hidden=hidden, patch_size=patch, **arch.flags())
        flags = arch.flags()
        assert bounds.model_parameters(levels, hidden, patch, flags["share_weights"], flags["use_mlp"],
                                       flags["align_features"]) == count_parameters(model), arch.name


def test_a_model_or_batch_that_cannot_fit_is_refused_before_it_is_built(tmp_path) -> None:
    """model.size_hidden=100000 once tried to allocate 360 GB for one conv; a huge batch its activations."""
    small = {"SLURM_MEM_PER_NODE": "4096"}  # MiB
    cfg = load_job_config(None, ["data.factors=[2,4,8]", "model.size_hidden=8", "train.batch_size=16"])
    assert memory.check_model(cfg, 16, torch.device("cpu"), small, tmp_path) > 0
    wide = load_job_config(None, ["model.size_hidden=100000"])
    with pytest.raises(memory.MemoryAllocationError, match=r"model\.size_hidden=100000: 590,006,100,001 param.*"
                                                           r"SLURM_MEM_PER_NODE=4096.*lower model.size_hidden"):
        memory.check_model(wide, 128, torch.device("cpu"), small, tmp_path)
    batch = load_job_config(None, ["train.batch_size=1000000"])
    with pytest.raises(memory.MemoryAllocationError, match=r"train\.batch_size=1000000.*lower train.batch_size"):
        memory.check_model(batch, 128, torch.device("cpu"), small, tmp_path)
    # a batch above the store's patches trains on those patches: no refusal of a batch that cannot happen
    assert memory.check_model(batch, 128, torch.device("cpu"), small, tmp_path, patches=4) > 0
    need, params, activations = bounds.model_need(load_job_config(None, []), 128, on_gpu=True)
    assert need == 16 * params + activations and activations < bounds.model_need(load_job_config(None, []), 128,
                                                                                  on_gpu=False)[2]


def test_the_nodes_own_memory_bounds_the_allocation(tmp_path) -> None:
    node = bounds.node_memory()
    assert node is not None and node > 0
    assert memory.allocation({}, tmp_path) == (node, "this node's memory")
    assert memory.allocation({"SLURM_MEM_PER_NODE": "1"}, tmp_path) == (1 << 20, "SLURM_MEM_PER_NODE=1")


def test_a_launch_here_refuses_memory_this_machine_lacks(tmp_path) -> None:
    from camvis.cluster import preflight
    from camvis.cluster.grid import load_grid

    grid = tmp_path / "g.yaml"
    grid.write_text("experiment: e\nfolds: 2\nbase: {data: {store: s.zarr, factors: [2, 4]}, train: {device: cpu}}\n"
                    "axes: {fold: all}\nslurm: {time: 10, signal_delay_s: 30, mem_gb: 4}\n")
    plain = load_grid(grid)
    assert preflight.memory_problems(plain.jobs, plain.slurm, "slurm", {"s.zarr": 16}) == []
    wide = load_grid(grid, ["model.size_hidden=100000"])
    [line] = preflight.memory_problems(wide.jobs, wide.slurm, "slurm", {"s.zarr": 16})  # one line per model
    assert line.startswith("model.size_hidden=100000 (job default_fold1)") and "slurm.mem_gb=4" in line
    assert preflight.memory_problems(wide.jobs, wide.slurm, "slurm", {"s.zarr": None}) == []  # size unknown
    huge = load_grid(grid, ["slurm.mem_gb=1000000"])
    assert preflight.memory_problems(huge.jobs, huge.slurm, "local", {})[0].startswith("slurm.mem_gb=1e+06: more than")
