"""Defects of the distributed path (issue 15), emulated on the CPU: 2-rank gloo DDP, empty batches,
CUDA RNG state in checkpoints, the evaluation's activation bound."""

from __future__ import annotations

import os

import numpy as np
import pytest
import torch
import torch.multiprocessing as mp

from camvis.config import load_job_config
from camvis.job import checkpoint, distributed, evaluate, train
from camvis.job.optimizer import make_optimizer
from camvis.job.batches import BatchSource
from camvis.data.store import open_store
from camvis.model import build_model

TINY = ["data.factors=[2,4,8]", "model.size_hidden=8", "train.batch_size=16", "eval.batch_size=64"]


def _cfg(store_path, *extra):
    return load_job_config(None, [f"data.store={store_path}", *TINY, *extra])



def _model(cfg, patch_size: int) -> torch.nn.Module:
    torch.manual_seed(0)
    return build_model(cfg, patch_size)


def _own_statistics(model: torch.nn.Module, rank: int) -> torch.nn.Module:
    """What DDP training leaves behind: equal weights, each rank's own running statistics."""
    for module in model.modules():
        if isinstance(module, torch.nn.modules.batchnorm._BatchNorm):
            module.running_mean.fill_(0.5 * rank)
            module.running_var.fill_(1.0 + rank)
    return model


def _validate_worker(rank: int, world: int, port: int, store_path: str, out: str) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), WORLD_SIZE=str(world))
    env = distributed.setup("cpu")
    cfg = _cfg(store_path)
    inputs = train.open_inputs(cfg, env.device)
    model = torch.nn.parallel.DistributedDataParallel(_model(cfg, inputs.store.patch_size))
    _own_statistics(model.module, rank)  # after wrapping: DDP's constructor broadcasts rank 0's
    scores = train.validate(model, inputs, cfg, env)
    if rank == 0:
        torch.save(scores, out)
    distributed.teardown()


@pytest.mark.slow
def test_validation_uses_rank_zeros_batchnorm_statistics(synth_store, tmp_path, rendezvous_port):
    out = str(tmp_path / "scores.pt")
    mp.spawn(_validate_worker, args=(2, rendezvous_port, str(synth_store.path), out), nprocs=2, join=True)
    ddp = torch.load(out)

    cfg = _cfg(synth_store.path)
    env = distributed.DistEnv(rank=0, world_size=1, local_rank=0, device=torch.device("cpu"))
    single = train.validate(_own_statistics(_model(cfg, synth_store.patch_size), 0), train.open_inputs(cfg, env.device), cfg, env)
    assert ddp == pytest.approx(single, rel=1e-6)  # rank 0's model alone, as best.pt saves it


def test_an_empty_batch_keeps_the_training_loss_finite(synth_store):
    cfg = _cfg(synth_store.path)
    env = distributed.DistEnv(rank=0, world_size=1, local_rank=0, device=torch.device("cpu"))
    inputs = train.open_inputs(cfg, env.device)
    batch = torch.as_tensor(inputs.train_idx[:16])

    def epoch(batches):
        torch.manual_seed(0)
        model = build_model(cfg, synth_store.patch_size)
        opt, _ = make_optimizer(cfg, model)
        return train.train_epoch(model, opt, inputs.source, batches, env)

    with_empty = epoch([batch, torch.zeros(0, dtype=torch.int64)])
    assert np.isfinite(with_empty)
    assert with_empty == pytest.approx(epoch([batch]), rel=1e-6)


def test_checkpoints_keep_only_the_jobs_own_cuda_rng_state():
    cuda0, cuda1 = torch.device("cuda", 0), torch.device("cuda", 1)
    states = [torch.full((4,), 7, dtype=torch.uint8), torch.full((4,), 9, dtype=torch.uint8)]
    # new checkpoints: one state, restored onto whatever device the job has now
    assert torch.equal(checkpoint.device_rng_state(states[1], cuda0), states[1])
    # old checkpoints (every visible GPU's state): the device's own, none on a node with fewer GPUs
    assert torch.equal(checkpoint.device_rng_state(states, cuda1), states[1])
    assert checkpoint.device_rng_state(states[:1], cuda1) is None
    assert checkpoint.device_rng_state(states, torch.device("cpu")) is None
    assert checkpoint.device_rng_state(None, cuda0) is None


def test_an_old_checkpoint_with_a_list_of_cuda_states_still_resumes(synth_store, tmp_path):
    cfg = _cfg(synth_store.path)
    model = build_model(cfg, synth_store.patch_size)
    opt, sched = make_optimizer(cfg, model)
    path = tmp_path / "checkpoint.pt"
    checkpoint.save(path, model, opt, sched, checkpoint.TrainState(epoch=3), cfg, torch.device("cpu"))
    payload = torch.load(path, weights_only=True)
    assert payload["rng_cuda"] is None  # a CPU job saves no CUDA state
    payload["rng_cuda"] = [torch.zeros(16, dtype=torch.uint8)] * 2  # as get_rng_state_all saved it
    torch.save(payload, path)
    state = checkpoint.load(path, model, opt, sched, cfg, torch.device("cpu"))
    assert state.epoch == 3


def test_prediction_keeps_the_first_block_under_the_activation_limit(synth_store, monkeypatch):
    cfg = _cfg(synth_store.path)
    model = build_model(cfg, synth_store.patch_size).eval()  # shared weights: one encoder
    source = BatchSource(synth_store, cfg.data.factors, "cpu")
    indices = np.arange(64)
    whole = evaluate.patch_probabilities(model, source, indices, 64, "cpu", progress=False)
    per_sample = 8 * synth_store.patch_size ** 2
    monkeypatch.setattr(evaluate, "ACTIVATION_LIMIT", 10 * per_sample + 1)
    seen: list[int] = []
    model.encoder.conv_block1.register_forward_hook(lambda m, i, o: seen.append(o.numel()))
    split = evaluate.patch_probabilities(model, source, indices, 64, "cpu", progress=False)
    assert seen and max(seen) <= 10 * per_sample
    np.testing.assert_array_equal(split["patch"], whole["patch"])
    np.testing.assert_allclose(split["score"], whole["score"], rtol=1e-5, atol=1e-6)


def test_the_paper_configuration_predicts_under_two_to_the_31():
    cfg = load_job_config(None, ["data.factors=[2,4,8,16,32]"])
    model = build_model(cfg, 128)
    rows = evaluate.max_forward_rows(model, 128)
    assert rows < cfg.eval.batch_size  # 1024 rows would be exactly 2**31 elements
    assert rows * cfg.model.size_hidden * 128 * 128 < 2**31


def test_an_epochs_indices_move_to_the_device_in_one_piece():
    batches = [torch.arange(5), torch.zeros(0, dtype=torch.int64), torch.arange(5, 8)]
    moved = train.epoch_on_device(batches, torch.device("meta"))
    assert [b.shape for b in moved] == [b.shape for b in batches]
    assert all(b.device.type == "meta" for b in moved)
    assert train.epoch_on_device(batches, torch.device("cpu")) is batches


@pytest.mark.gpu
def test_cuda_checkpoint_saves_one_device_state(synth_store, tmp_path):
    if not torch.cuda.is_available():
        pytest.skip("no CUDA")
    device = torch.device("cuda", 0)
    cfg = _cfg(synth_store.path)
    model = build_model(cfg, synth_store.patch_size).to(device)
    opt, sched = make_optimizer(cfg, model)
    checkpoint.save(tmp_path / "c.pt", model, opt, sched, checkpoint.TrainState(), cfg, device)
    payload = torch.load(tmp_path / "c.pt", weights_only=True)
    assert isinstance(payload["rng_cuda"], torch.Tensor)
    checkpoint.load(tmp_path / "c.pt", model, opt, sched, cfg, device)
