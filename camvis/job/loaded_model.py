"""A trained network loaded for inference (`Model`): from a job folder's best.pt and its store's
statistics, or built from a bundle's weights (camvis.job.export reads bundles). Below both
camvis.job.predict (which runs it on images) and camvis.job.export (which writes bundles of it)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

import numpy as np

from camvis.bookkeeping.jobfolder import BEST, CONFIG, SCORES, VISIBILITY_CALIBRATION, read_json
from camvis.errors import CamvisError, PredictError

if TYPE_CHECKING:
    import torch

    from camvis.job.batches import BatchSource

# What a model's batches are made of, recorded in model.json: the contract a runtime outside
# camvis must reproduce to feed the ONNX graph.
PREPROCESSING = {
    "exact": ("level-major channels [R, G, B, D] per factor; level f is the f x f block mean of the "
              "image (uint8, 0..255) and the block-centre depth as log10 metres (-1 where none); "
              "a patch centred at full-resolution (h, w) covers rows h // f - P // 2 ... on level f, "
              "reading 0 (RGB) and -1 (depth) outside; then (x - norm_mean) / norm_std per channel"),
    "camvis2": ("level-major channels [R, G, B, D] per factor; level f is the image resized to "
                "round(H / f) x round(W / f) by OpenCV's Lanczos-4 (uint8) and the depth as ln metres, "
                "nearest, -1 where none; a patch centred at full-resolution (h, w) is centred at "
                "round(h / f) (half to even) on level f, reading 0 (RGB) and -1 (depth) outside; then "
                "(x - norm_mean) / norm_std per channel"),
}
"""What a model's batches are made of, per store preprocessing mode (camvis.data.camvis2)."""


@dataclass(frozen=True, eq=False)
class Model:
    """A trained network and what its inputs must look like.

    `forward(x)`: p(visible) (float32 numpy) of a normalized batch x (B, 4 L, P, P) on `device`;
    `run(source, indices, batch_size)`: p(visible) per patch index of a BatchSource, in order.
    `info`: the model.json description (architecture, factors, statistics, scores, ...).
    `runtime`: what runs the network (the output's `runtime` column); `runtime_note`: why.
    """

    model_id: str
    factors: tuple[int, ...]
    patch_size: int
    norm_mean: np.ndarray       # float32 (L, 4): one row per factor, R, G, B, log-depth
    norm_std: np.ndarray        # float32 (L, 4)
    device: Any                 # torch.device the batches are built on
    forward: Callable[[Any], np.ndarray] = field(repr=False)
    info: dict[str, Any] = field(default_factory=dict, repr=False)
    network: Any = field(default=None, repr=False)  # the torch module (None for an ONNX runtime)
    runtime: str = "torch-cpu"
    runtime_note: str = ""

    @property
    def preprocessing(self) -> str:
        """The store rules the model trained on: exact, or camvis2 (bundles of older camvis: exact)."""
        mode = self.info.get("preprocessing", "exact")
        return mode if mode in PREPROCESSING else "exact"

    def run(self, source: BatchSource, indices: np.ndarray, batch_size: int) -> np.ndarray:
        from camvis.job.batches import shard_batches

        parts = [np.zeros(0, np.float32)]
        for _, x, _, _ in source.iter_batches(shard_batches(np.asarray(indices, np.int64), batch_size, 0, 1)):
            if len(x):
                parts.append(self.forward(x))
        return np.concatenate(parts)


def device_for(name: Any) -> torch.device:
    import torch

    from camvis.job.distributed import pick_device

    if isinstance(name, torch.device):
        return name
    if name not in ("auto", "cpu", "cuda"):
        raise PredictError(f"device must be auto, cpu or cuda, got {name!r}")
    return pick_device(name, 0)


def load_job(job: Path, device: torch.device) -> Model:
    """The job's network and the statistics of the store it trained on (cfg.data.store)."""
    from camvis.config import config_hash, load_job_config
    from camvis.data.store import open_store

    cfg = load_job_config(job / CONFIG)
    try:
        store = open_store(cfg.data.store)
    except CamvisError as e:
        raise PredictError(f"{job}: the normalization statistics are in the job's store, data.store="
                           f"{cfg.data.store} ({e}); run from where the store is, or predict with a bundle "
                           f"(camvis-export)") from e
    missing = [f for f in cfg.data.factors if f not in store.factors]
    if missing:
        raise PredictError(f"{job}: data.factors {list(cfg.data.factors)}: {missing} not among the levels of "
                           f"{store.path} ({list(store.factors)})")
    norm = store.normalization(cfg.data.fold, cfg.data.factors)  # what training fed it: its fold's
    net = build_network(cfg_architecture(cfg, store.patch_size), read_weights(job / BEST), job / BEST)
    mode = store.attrs.get("preprocessing", "exact")  # the rules the model's inputs were made with
    info = describe(cfg, net, norm.mean, norm.std, job, mode, normalization=norm.label)
    return torch_model(net.to(device), info, f"{cfg.experiment}/{cfg.name}@{config_hash(cfg)}", device)


def cfg_architecture(cfg: Any, patch_size: int) -> dict[str, Any]:
    """The constructor arguments of a job config's network (MultiMagnificationNet.hparams)."""
    from camvis.model import NUM_CHANNELS

    m = cfg.model
    return {"num_levels": len(cfg.data.factors), "num_channels": NUM_CHANNELS, "size_hidden": m.size_hidden,
            "share_weights": m.share_weights, "use_mlp": m.use_mlp, "align_features": m.align_features,
            "patch_size": int(patch_size)}


def read_weights(checkpoint: Path, data: bytes | None = None) -> dict[str, torch.Tensor]:
    """The state_dict of a camvis checkpoint ({"model": ..., "config": ...}) or a bare one; loaded
    with weights_only=True, so reading it runs no code. `data`: its bytes, already read (and verified)."""
    import io

    import torch

    from camvis.job.checkpoint import refusal

    try:
        payload = torch.load(io.BytesIO(data) if data is not None else checkpoint, map_location="cpu",
                             weights_only=True)
    except Exception as e:  # a corrupt file raises anything from UnpicklingError to struct.error
        raise PredictError(f"{checkpoint}: not a readable torch checkpoint ({refusal(e)})") from e  # one line
    state = payload.get("model", payload) if isinstance(payload, dict) else None
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise PredictError(f"{checkpoint}: expected a state_dict or a dict with key 'model' holding one")
    if state and all(k.startswith("module.") for k in state):  # saved from a DDP wrapper
        state = {k[len("module."):]: v for k, v in state.items()}
    return state


def build_network(architecture: dict[str, Any], state: dict[str, Any], where: Path) -> torch.nn.Module:
    from camvis.model import MultiMagnificationNet

    try:
        net = MultiMagnificationNet(**architecture)
        net.load_state_dict(state)
    except (TypeError, ValueError, RuntimeError) as e:
        raise PredictError(f"{where}: the weights do not fit the architecture {architecture}: {e}") from e
    return net.eval()


def describe(cfg: Any, net: Any, mean: np.ndarray, std: np.ndarray, job: Path,
             mode: str = "exact", normalization: str | None = None) -> dict[str, Any]:
    """model.json's content for a job: everything a runtime needs besides the weights. `mean`, `std`:
    the statistics the job trained with (its fold's under the store's per-fold rule); `normalization`:
    which ones (Normalization.label)."""
    from camvis import __version__
    from camvis.config import config_hash, to_dict
    from camvis.model import find_architecture

    m = cfg.model
    scores = read_json(job / SCORES) or {}
    calibration = _calibration(job, scores)
    return {
        "model_id": f"{cfg.experiment}/{cfg.name}@{config_hash(cfg)}",
        "architecture": net.hparams(),
        "architecture_name": find_architecture(m.share_weights, m.use_mlp, m.align_features).name,
        "factors": [int(f) for f in cfg.data.factors], "patch_size": int(net.patch_size),
        "preprocessing": mode, "preprocessing_rule": PREPROCESSING[mode],
        "norm_mean": np.asarray(mean, np.float32).tolist(), "norm_std": np.asarray(std, np.float32).tolist(),
        "normalization": normalization, "config_hash": config_hash(cfg), "train_hash": scores.get("train_hash"),
        "camvis_version": __version__, "config": to_dict(cfg),
        "held_out": {k: scores.get(k) for k in ("view", "metrics", "ci", "visibility", "n_val")} if scores else None,
        **({"visibility_calibration": calibration} if calibration else {}),
    }


def _calibration(job: Path, scores: dict[str, Any]) -> dict[str, Any] | None:
    """The job's entry of camvis-aggregate's visibility calibration (its group and fold: q from the group's
    other views), with the level; None where the experiment was not aggregated (patch-only intervals)."""
    found = read_json(job.parent / VISIBILITY_CALIBRATION) or {}
    entry = ((found.get("groups") or {}).get(scores.get("group")) or {}).get(str(scores.get("fold")))
    if not isinstance(entry, dict):
        return None
    return {"log10_factor": entry.get("log10_factor"), "n_images": entry.get("n_images"),
            "confidence": found.get("confidence"), "statistic": found.get("statistic"), "rule": found.get("rule")}


def torch_model(net: Any, info: dict[str, Any], model_id: str, device: Any) -> Model:
    """A Model running `net` with torch: channels_last (faster on the CPU too: 7.1 s against
    10.1 s for cat) under inference mode, bf16 autocast on CUDA."""
    import torch

    from camvis.job.evaluate import max_forward_rows

    device = torch.device(device)
    cuda = device.type == "cuda"
    net = net.to(device, memory_format=torch.channels_last).eval()
    rows = max_forward_rows(net, int(info["patch_size"]))

    def forward(x: torch.Tensor) -> np.ndarray:
        with torch.inference_mode(), torch.autocast(device.type, dtype=torch.bfloat16, enabled=cuda):
            x = x.to(device, non_blocking=True).contiguous(memory_format=torch.channels_last)
            logits = torch.cat([net(part) for part in x.split(rows)])
        return torch.sigmoid(logits.float()).reshape(-1).cpu().numpy()

    return Model(model_id=model_id, factors=tuple(int(f) for f in info["factors"]),
                 patch_size=int(info["patch_size"]), norm_mean=np.asarray(info["norm_mean"], np.float32),
                 norm_std=np.asarray(info["norm_std"], np.float32), device=device, forward=forward, info=info,
                 network=net, runtime=f"torch-{device.type}" + ("-bf16" if cuda else ""))
