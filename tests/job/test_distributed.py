"""DDP over 2 gloo ranks: the averaged gradients equal one rank's gradients on the combined batch."""

import os
import shutil
import socket
import subprocess

import pytest
import torch
import torch.multiprocessing as mp

from camvis.job import distributed
from camvis.config import load_job_config
from camvis.errors import ConfigError
from camvis.model import build_model

PATCH = 16
LEVELS = 2



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
def test_two_gloo_ranks_match_one_rank_on_the_combined_batch(tmp_path, rendezvous_port):
    out = str(tmp_path / "grads.pt")
    mp.spawn(_worker, args=(2, rendezvous_port, out), nprocs=2, join=True)
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


# --------------------------------------------------------------------------- submitit's environment

SITE_PRESETS = {"MASTER_ADDR": "site-head-node.invalid", "LOCAL_RANK": "7", "WORLD_SIZE": "64",
                "LOCAL_WORLD_SIZE": "8"}  # what some sites export into every job; MASTER_PORT below


def _rank_in_submitit_job(rank: int, port: int, out: str) -> None:
    """One task of a 2-task SLURM job as submitit sees it, with a site's variables pre-set."""
    for key in ("RANK", "TORCHELASTIC_RUN_ID"):
        os.environ.pop(key, None)
    os.environ.update(SITE_PRESETS, MASTER_PORT=str(port), SUBMITIT_EXECUTOR="slurm", SLURM_JOB_ID="4242",
                      SLURM_NTASKS="2", SLURM_JOB_NUM_NODES="1", SLURM_NODEID="0", SLURM_JOB_NODELIST="localhost",
                      SLURM_PROCID=str(rank), SLURM_LOCALID=str(rank))
    env = distributed.setup("cpu")
    total = torch.tensor([rank + 1.0])
    torch.distributed.all_reduce(total)
    if rank == 0:
        torch.save({"total": total.item(), "env": (env.rank, env.world_size, env.local_rank),
                    "vars": {k: os.environ[k] for k in (*SITE_PRESETS, "MASTER_PORT")}}, out)
    distributed.teardown()


@pytest.mark.slow
def test_submitit_export_overwrites_a_sites_preset_variables(tmp_path, rendezvous_port):
    out = str(tmp_path / "rank0.pt")
    port = rendezvous_port
    mp.spawn(_rank_in_submitit_job, args=(port, out), nprocs=2, join=True)
    got = torch.load(out)
    assert got["total"] == 3.0 and got["env"] == (0, 2, 0)
    assert got["vars"] == {"MASTER_ADDR": "localhost", "LOCAL_RANK": "0", "WORLD_SIZE": "2",
                           "LOCAL_WORLD_SIZE": "2", "MASTER_PORT": str(port)}  # the site's port is kept


def test_a_resolvable_first_node_is_kept_as_the_rendezvous_address():
    assert distributed.rendezvous_address("localhost") == "localhost"


def test_an_unresolvable_node_without_scontrol_is_an_error_naming_it(tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path))  # no scontrol: the SLURM fallback cannot answer
    with pytest.raises(ConfigError, match=r"first node 'no-such-node\.invalid' does not resolve.*MASTER_ADDR"):
        distributed.rendezvous_address("no-such-node.invalid")


def test_an_unresolvable_node_takes_its_address_from_slurm(tmp_path, monkeypatch):
    """Where node names do not resolve, SLURM's NodeAddr of the first node is the address."""
    if not shutil.which("scontrol") or subprocess.run(["scontrol", "ping"], capture_output=True).returncode:
        pytest.skip("needs a running SLURM controller (bash slurm/cluster.sh start --nodes 2)")
    node = subprocess.run(["sinfo", "-h", "-N", "-o", "%N"], capture_output=True, text=True).stdout.split()[0]
    addr = subprocess.run(["scontrol", "show", "node", node], capture_output=True, text=True).stdout
    expected = addr.split("NodeAddr=")[1].split()[0]
    try:
        socket.getaddrinfo(node, None)
        pytest.skip(f"node name {node} resolves here: the fallback is not used")
    except OSError:
        pass
    assert distributed.rendezvous_address(node) == expected


def test_master_port_is_the_same_on_every_rank_and_below_the_ephemeral_range() -> None:
    """Every rank derives the port from the job id alone (another process, another hash seed: the same
    port), and it stays below Linux's ephemeral ports, where an outgoing connection could hold it."""
    import subprocess
    import sys

    from camvis.job.distributed import master_port

    ports = [master_port(f"{i}_{k}") for i in range(200) for k in range(5)]
    assert all(20000 <= p <= 32767 for p in ports) and len(set(ports)) > 900
    code = "from camvis.job.distributed import master_port; print(master_port('201'))"
    other = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                           env={**os.environ, "PYTHONHASHSEED": "123"}).stdout
    assert int(other) == master_port("201")
