"""Training speed-ups (camvis.job.speedups): what "auto" means where, the GPU check's verdict file, and
training under each choice (fused Adam, torch.compile) including a resume across a change of choice."""

from __future__ import annotations

import json
import math

import pytest
import torch

from camvis.config import load_job_config
from camvis.job import distributed, speedups
from camvis.job.speedups import Speedups, VerdictError, choose, verdict_from_training, verdict_path
from camvis.job import checkpoint
from camvis.job import train as train_module
from camvis.job.optimizer import make_optimizer
from camvis.job.train import train
from camvis.bookkeeping.jobfolder import CHECKPOINT
from camvis.model import build_model

CUDA = torch.device("cuda")  # constructible without CUDA: choose only reads files for it
GPU = "NVIDIA H200"
TINY = ["data.factors=[2,4,8]", "model.size_hidden=8", "train.batch_size=32", "train.epoch_patches=128",
        "eval.bootstrap=20", "eval.figures=false"]


@pytest.fixture(autouse=True)
def cache(tmp_path, monkeypatch):
    """camvis's cache in the test's folder: no verdict of the machine's own is read or written."""
    monkeypatch.setenv("CAMVIS_CACHE_DIR", str(tmp_path / "cache"))
    return tmp_path / "cache"


def _cfg(*overrides):
    return load_job_config(None, list(overrides))


def _training(**rates):
    return {"device": GPU, "variants": {name: {"status": "ok", "samples_per_s": r} for name, r in rates.items()}}


def _write(rates: dict, device: str = GPU) -> None:
    speedups.write_verdict(verdict_from_training(_training(**rates), device))


# --------------------------------------------------------------------------- choose


def test_auto_is_off_on_the_cpu():
    assert choose(_cfg(), torch.device("cpu")) == Speedups(False, False, "cpu")


def test_forced_values_win_on_either_device():
    cfg = _cfg("train.compile=true", "train.fused_adam=true")
    assert choose(cfg, torch.device("cpu")) == Speedups(True, True, "config")
    assert choose(cfg, CUDA, GPU) == Speedups(True, True, "config")
    assert choose(_cfg("train.compile=true"), torch.device("cpu")) == Speedups(True, False, "config+cpu")


def test_auto_on_cuda_without_a_verdict_is_what_camvis_did_before(cache):
    assert choose(_cfg(), CUDA, GPU) == Speedups(False, False, "no verdict")
    assert not cache.exists(), "choose only reads"


def test_auto_on_cuda_follows_the_verdict_for_its_gpu_and_torch():
    _write({"eager": 100.0, "eager_fused_adam": 101.0, "compiled": 150.0})
    assert choose(_cfg(), CUDA, GPU) == Speedups(True, False, "verdict")
    assert choose(_cfg("train.compile=false"), CUDA, GPU) == Speedups(False, False, "config+verdict")
    assert choose(_cfg(), CUDA, "NVIDIA A100-SXM4-80GB") == Speedups(False, False, "no verdict")  # another GPU
    assert choose(_cfg(), CUDA, GPU, torch_version="0.0.1") == Speedups(False, False, "no verdict")
    assert choose(_cfg(), torch.device("cpu")) == Speedups(False, False, "cpu")  # never on the CPU


@pytest.mark.parametrize("text, expected", [
    ("{not json", "not JSON"),
    ("[1, 2]", "expected a JSON object, got list"),
    ('{"device": "NVIDIA H200", "torch": "%s"}', "chosen: expected an object"),
    ('{"device": "NVIDIA H200", "torch": "%s", "chosen": {"compile": "yes", "fused_adam": false}}',
     "chosen.compile: expected true or false, got 'yes'"),
    ('{"device": "NVIDIA H100", "torch": "%s", "chosen": {"compile": true, "fused_adam": false}}',
     "records NVIDIA H100 with torch .*, expected this job's NVIDIA H200"),
])
def test_a_bad_verdict_file_is_an_error_naming_it(text, expected):
    path = verdict_path(GPU)
    path.parent.mkdir(parents=True)
    path.write_text(text.replace("%s", torch.__version__))
    with pytest.raises(VerdictError, match=expected) as err:
        choose(_cfg(), CUDA, GPU)
    assert str(err.value).startswith(f"{path}: ")
    choose(_cfg("train.compile=false", "train.fused_adam=false"), CUDA, GPU)  # forced: never read


def test_the_verdict_file_is_named_by_gpu_and_torch_inside_the_cache(cache):
    assert verdict_path("NVIDIA H100 80GB HBM3", "2.5.1+cu124") == \
        cache / "speedups" / "NVIDIA-H100-80GB-HBM3-torch2.5.1+cu124.json"
    assert verdict_path("../../etc/passwd", "1").parent == cache / "speedups"  # a name never leaves the folder


# --------------------------------------------------------------------------- the verdict


@pytest.mark.parametrize("rates, picked", [
    ({"eager": 100.0, "eager_fused_adam": 102.9, "compiled": 101.0}, "eager"),  # under 3 %: noise
    ({"eager": 100.0, "eager_fused_adam": 103.1, "compiled": 101.0}, "eager_fused_adam"),
    ({"eager": 100.0, "eager_fused_adam": 110.0, "compiled": 140.0}, "compiled"),
    ({"eager": 100.0, "eager_fused_adam": 90.0, "compiled": 95.0}, "eager"),
    ({"eager": 100.0, "compiled": 120.0}, "compiled"),  # a variant that failed has no samples/s
    ({"eager": 100.0, "eager_fused_adam": 104.0, "compiled": 120.0, "compiled_fused_adam": 125.0},
     "compiled_fused_adam"),
])
def test_the_verdict_takes_the_fastest_only_if_it_beats_eager_by_3_percent(rates, picked):
    found = verdict_from_training(_training(**rates), GPU, "2.5.1")
    assert found["picked"] == picked and found["device"] == GPU and found["torch"] == "2.5.1"
    assert (found["chosen"]["compile"], found["chosen"]["fused_adam"]) == speedups.VARIANTS[picked]
    assert found["samples_per_s"] == rates and found["measured"]


def test_no_verdict_without_an_eager_measurement():
    training = _training(compiled=120.0)
    training["variants"]["eager"] = {"status": "failed: RuntimeError: out of memory"}
    assert verdict_from_training(training, GPU) is None


def test_a_written_verdict_reads_back(cache):
    path = speedups.write_verdict(verdict_from_training(_training(eager=1.0, eager_fused_adam=2.0), GPU))
    assert path == verdict_path(GPU) and speedups.read_verdict(path)["chosen"] == {"compile": False,
                                                                                    "fused_adam": True}
    assert not [p for p in path.parent.iterdir() if p != path], "written atomically: no temporary left"


# --------------------------------------------------------------------------- training under each choice


def _train(store, job, *extra):
    cfg = load_job_config(None, [f"data.store={store.path}", *TINY, "experiment=e", "name=j", *extra])
    return train(cfg, job, distributed.setup("cpu"))


def _weights(job):
    return torch.load(job / CHECKPOINT, weights_only=True)


def test_cpu_training_is_unchanged_by_the_keys_at_auto(synth_store, tmp_path):
    """auto on the CPU is the optimizer and forward camvis always ran: the same weights bit for bit."""
    _train(synth_store, tmp_path / "auto", "train.max_epochs=1")
    _train(synth_store, tmp_path / "off", "train.max_epochs=1", "train.compile=false", "train.fused_adam=false")
    auto, off = _weights(tmp_path / "auto"), _weights(tmp_path / "off")
    assert all(torch.equal(auto["model"][k], off["model"][k]) for k in auto["model"])
    group = auto["optimizer"]["param_groups"][0]
    assert group["fused"] is None and group["foreach"] is None  # torch's default Adam, as before the keys
    progress = json.loads((tmp_path / "auto" / "progress.json").read_text())
    assert progress["speedups"] == {"compile": False, "fused_adam": False, "chosen_by": "cpu"}


def test_fused_adam_trains(synth_store, tmp_path):
    job = tmp_path / "j"
    state = _train(synth_store, job, "train.max_epochs=2", "train.fused_adam=true")
    assert all(math.isfinite(h["train_loss"]) and math.isfinite(h["val_loss"]) for h in state.history)
    assert _weights(job)["optimizer"]["param_groups"][0]["fused"] is True
    progress = json.loads((job / "progress.json").read_text())
    assert progress["speedups"] == {"compile": False, "fused_adam": True, "chosen_by": "config+cpu"}


@pytest.mark.parametrize("saved_fused", [True, False])
def test_a_checkpoint_resumes_under_the_other_adam_kernel(synth_store, tmp_path, saved_fused):
    """Fused and foreach Adam keep the same state: a checkpoint of either resumes under the other, with
    the resuming job's kernel, and trains on as the saving job would have (to float rounding)."""
    cfg = load_job_config(None, [f"data.store={synth_store.path}", *TINY])
    env = distributed.setup("cpu")
    inputs = train_module.open_inputs(cfg, env.device)
    batches = [torch.as_tensor(inputs.train_idx[i:i + 32]) for i in range(0, 96, 32)]
    torch.manual_seed(0)
    model = build_model(cfg, synth_store.patch_size)
    opt, sched = make_optimizer(cfg, model, fused=saved_fused)
    train_module.train_epoch(model, opt, inputs.source, batches, env)
    path = tmp_path / CHECKPOINT
    checkpoint.save(path, model, opt, sched, checkpoint.TrainState(epoch=1), cfg)

    torch.manual_seed(1)  # other weights: the checkpoint's must replace them
    resumed = build_model(cfg, synth_store.patch_size)
    opt2, sched2 = make_optimizer(cfg, resumed, fused=not saved_fused)
    assert checkpoint.load(path, resumed, opt2, sched2, cfg).epoch == 1
    assert opt2.param_groups[0]["fused"] is (None if saved_fused else True), "the resuming job's kernel"
    for a, b in zip(model.parameters(), resumed.parameters()):
        assert torch.equal(opt.state[a]["exp_avg_sq"], opt2.state[b]["exp_avg_sq"])
        assert float(opt.state[a]["step"]) == float(opt2.state[b]["step"]) == len(batches)

    # the resumed job trains on exactly as the saving one would have had it switched kernel in memory (the
    # kernels themselves round differently: ~1e-4 apart after a few steps, so that is the comparison)
    for group in opt.param_groups:
        group.update(fused=opt2.param_groups[0]["fused"], foreach=opt2.param_groups[0]["foreach"])
    rng = torch.get_rng_state()  # load_checkpoint restored the saved one: both go on with it (dropout)
    losses = [train_module.train_epoch(resumed, opt2, inputs.source, batches, env)]
    torch.set_rng_state(rng)
    losses.append(train_module.train_epoch(model, opt, inputs.source, batches, env))
    assert math.isfinite(losses[0]) and losses[0] == losses[1]
    assert all(torch.equal(a, b) for a, b in zip(model.parameters(), resumed.parameters()))


@pytest.mark.slow  # inductor compiles C++ for the CPU: ~110 s cold, 12 s with its cache warm (docs/benchmarks.md)
def test_compiled_training_trains_and_checkpoints_the_bare_model(synth_store, tmp_path):
    job = tmp_path / "j"
    state = _train(synth_store, job, "train.max_epochs=2", "train.compile=true")
    assert all(math.isfinite(h["train_loss"]) and math.isfinite(h["val_loss"]) for h in state.history)
    keys = list(_weights(job)["model"])
    assert keys and not any(k.startswith("_orig_mod.") for k in keys), "the bare model is checkpointed"


@pytest.mark.gpu
@pytest.mark.parametrize("saved_fused", [True, False])
def test_cuda_resumes_across_the_adam_kernel(synth_store, tmp_path, saved_fused):
    """On a GPU machine: fused Adam keeps `step` on the device, foreach on the host; either resumes the other."""
    if not torch.cuda.is_available():
        pytest.skip("needs a CUDA device (run on a lent GPU machine: pytest -m gpu)")
    device = torch.device("cuda", 0)
    cfg = load_job_config(None, [f"data.store={synth_store.path}", *TINY, "train.device=cuda"])
    env = distributed.DistEnv(rank=0, world_size=1, local_rank=0, device=device)
    inputs = train_module.open_inputs(cfg, device)
    batches = [torch.as_tensor(inputs.train_idx[i:i + 32]).to(device) for i in range(0, 64, 32)]
    model = build_model(cfg, synth_store.patch_size).to(device)
    opt, sched = make_optimizer(cfg, model, fused=saved_fused)
    train_module.train_epoch(model, opt, inputs.source, batches, env)
    checkpoint.save(tmp_path / CHECKPOINT, model, opt, sched, checkpoint.TrainState(epoch=1), cfg,
                                 device)
    opt2, sched2 = make_optimizer(cfg, model, fused=not saved_fused)
    checkpoint.load(tmp_path / CHECKPOINT, model, opt2, sched2, cfg, device)
    step = opt2.state[next(model.parameters())]["step"]
    assert step.device.type == ("cpu" if saved_fused else "cuda"), "where the resuming kernel wants it"
    assert math.isfinite(train_module.train_epoch(model, opt2, inputs.source, batches, env))
