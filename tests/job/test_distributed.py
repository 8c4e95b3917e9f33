"""DDP over 2 gloo ranks: the averaged gradients equal one rank's gradients on the combined batch."""

import os
import socket

import pytest
import torch
import torch.multiprocessing as mp

from camvis.job import distributed
from camvis.config import load_job_config
from camvis.errors import ConfigError
from camvis.model import build_model

PATCH = 16
LEVELS = 2


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _model() -> torch.nn.Module:
    cfg = load_job_config(None, ["data.factors=[1,2]", "model.size_hidden=8"])
    torch.manual_seed(0)
    model = build_model(cfg, PATCH)
    # eval mode: BatchNorm uses running statistics and dropout is off, so the loss of a
    # batch is the mean of per-sample losses and the split over ranks cannot change it
    return model.eval()


def _data() -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(1)
    x = torch.randn(8, LEVELS * 4, PATCH, PATCH, generator=g)
    y = (torch.rand(8, generator=g) > 0.5).float()
    return x, y


def _grads(model: torch.nn.Module) -> list[torch.Tensor]:
    return [p.grad.detach().clone() for p in model.parameters() if p.grad is not None]


def _worker(rank: int, world: int, port: int, out: str) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), WORLD_SIZE=str(world))
    env = distributed.setup("cpu")
    assert env.distributed and env.rank == rank and env.device.type == "cpu"
    assert torch.distributed.get_backend() == "gloo"
    model = torch.nn.parallel.DistributedDataParallel(_model())
    x, y = _data()
    part = slice(rank * 4, rank * 4 + 4)
    loss = torch.nn.functional.binary_cross_entropy_with_logits(model(x[part]), y[part])
    loss.backward()
    if rank == 0:
        torch.save(_grads(model.module), out)
    distributed.teardown()


@pytest.mark.slow
def test_two_gloo_ranks_match_one_rank_on_the_combined_batch(tmp_path):
    out = str(tmp_path / "grads.pt")
    mp.spawn(_worker, args=(2, _free_port(), out), nprocs=2, join=True)
    ddp_grads = torch.load(out)

    model = _model()
    x, y = _data()
    torch.nn.functional.binary_cross_entropy_with_logits(model(x), y).backward()
    single = _grads(model)
    assert len(single) == len(ddp_grads) > 0
    for a, b in zip(single, ddp_grads):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)


def test_single_process_needs_no_process_group(monkeypatch):
    for key in ("RANK", "WORLD_SIZE", "LOCAL_RANK"):
        monkeypatch.delenv(key, raising=False)
    env = distributed.setup("cpu")
    assert (env.rank, env.world_size, env.is_main, env.distributed) == (0, 1, True, False)
    assert not torch.distributed.is_initialized()


def test_cuda_requested_without_gpu_is_an_error():
    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    with pytest.raises(ConfigError, match="train.device=cuda"):
        distributed.pick_device("cuda")
    assert distributed.pick_device("auto").type == "cpu"
