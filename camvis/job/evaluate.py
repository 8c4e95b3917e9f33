"""Evaluating a job on its held-out view: predictions, scores with a bootstrap, visibility, figures.

`predict` runs on every rank of the job (each on its shard of the patches) and returns the
same gathered predictions everywhere, so training's per-epoch validation reuses it.
`evaluate_job` computes the scores on every rank (they are cheap and identical), but only
rank 0 writes: predictions.csv, confusion.csv/.png, bootstrap.csv, visibility.csv, figures/,
and last scores.json, whose presence means the job is finished.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

import numpy as np
import pandas as pd
import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel

from camvis import metrics
from camvis.job.checkpoint import RESTART_HINT, CheckpointError, read, recorded_train_hash
from camvis.job import visibility
from camvis.job.batches import BatchSource, fold_split, shard_batches
from camvis.config import JobConfig, config_hash, eval_hash
from camvis.config import train_hash as config_train_hash
from camvis.errors import CamvisError
from camvis.host import now_iso
from camvis.io import write_csv, write_json
from camvis.bookkeeping.jobfolder import (BOOTSTRAP, CONFUSION_CSV, CONFUSION_PNG, FIGURES, PREDICTIONS, PROGRESS,
                                        SCORES, VISIBILITY, as_int, read_json)
from camvis.progress import progress_bar
from camvis.data.store import PatchStore

ACTIVATION_LIMIT = 2**31
"""Elements one tensor may hold in a forward pass: CUDA kernels index with int32 past it."""


# --------------------------------------------------------------------------- predictions


def _rank_world() -> tuple[int, int]:
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def patch_probabilities(
    model: torch.nn.Module,
    source: BatchSource,
    indices: np.ndarray,
    batch_size: int,
    device: torch.device | str,
    *,
    progress: bool | None = None,
) -> dict[str, np.ndarray]:
    """Probabilities of "visible" for the patches `indices`, one row per patch, sorted by patch.
    The network runs channels_last under inference mode (bf16 autocast on CUDA): the fast path of
    camvis-predict --runtime auto for a model without an ONNX graph.

    Returns numpy arrays patch (int64), image (int32), score (float32), logit (float32, for the
    exact loss), label (uint8), depth (float32, metres). Runs under inference mode in eval mode (the model's mode is
    restored), with bf16 autocast on CUDA. Under torch.distributed each rank predicts its
    shard and every rank gets all of them back (gather_predictions).
    """
    device = torch.device(device)
    rank, world = _rank_world()
    idx = torch.as_tensor(np.asarray(indices, dtype=np.int64))
    batches = shard_batches(idx, batch_size, rank, world)
    # unwrapped: a DDP forward could sync buffers, and ranks may run different batch counts
    net = model.module if isinstance(model, DistributedDataParallel) else model
    was_training = net.training
    net.eval()
    use_bf16 = device.type == "cuda"
    # channels_last on the CPU too: camvis-predict's CPU torch path (--runtime auto without a graph).
    # Not onnxruntime: a job has no exported graph, and the exact loss needs logits the graph does
    # not output. On the CPU the training layout is restored after (training stays bit-identical).
    net.to(memory_format=torch.channels_last)
    rows = max_forward_rows(net, source.patch_size)
    parts: dict[str, list[torch.Tensor]] = {"patch": [], "score": [], "logit": [], "label": [], "depth": []}
    # rank 0 only; progress=None: a bar when stderr is a terminal
    bar = progress_bar("predicting", sum(len(b) for b in batches), enabled=progress if rank == 0 else False,
                       transient=True)
    try:
        with torch.inference_mode(), bar as advance:
            for batch, x, label, depth in source.iter_batches(batches, channels_last=use_bf16):
                if len(batch) == 0:  # shard_batches may hand out empty batches for tiny N
                    continue
                with torch.autocast(device.type, dtype=torch.bfloat16, enabled=use_bf16):
                    logits = torch.cat([net(part) for part in x.split(rows)])
                parts["patch"].append(batch)
                parts["score"].append(torch.sigmoid(logits.float()).reshape(-1))
                parts["logit"].append(logits.float().reshape(-1))
                parts["label"].append(label.to(torch.uint8))
                parts["depth"].append(depth.float())
                advance(len(batch))
    finally:
        net.train(was_training)
        if not use_bf16:
            net.to(memory_format=torch.contiguous_format)
    dtypes = {"patch": torch.int64, "score": torch.float32, "logit": torch.float32, "label": torch.uint8,
              "depth": torch.float32}
    local = {k: torch.cat(v) if v else torch.zeros(0, dtype=dtypes[k], device=device) for k, v in parts.items()}
    out = gather_predictions(local)
    out["image"] = np.asarray(source.store.table["image"])[out["patch"]].astype(np.int32)
    return out


def max_forward_rows(model: torch.nn.Module, patch_size: int) -> int:
    """Samples per forward pass that keep the first block's activation (size_hidden x P x P per
    sample and level) under ACTIVATION_LIMIT: eval.batch_size 1024 at the paper's 128 x 128
    patches and 128 channels is exactly 2**31."""
    per_sample = int(getattr(model, "size_hidden", 1)) * patch_size * patch_size
    return max(1, (ACTIVATION_LIMIT - 1) // per_sample)


def gather_predictions(local: Mapping[str, torch.Tensor | np.ndarray], key: str = "patch") -> dict[str, np.ndarray]:
    """Every rank's prediction columns on every rank, exactly: one row per distinct `key`, sorted.

    Columns travel packed as one float64 matrix (exact for float32 values and for integer ids
    below 2**53); ranks with fewer rows are padded and the padding is cut off again. Duplicate
    rows (a patch predicted twice, e.g. by a padded shard) are dropped. Without a process group
    this only sorts and deduplicates.
    """
    names = sorted(local)
    dtypes = {name: _numpy_dtype(local[name]) for name in names}
    columns = [torch.as_tensor(local[name]).reshape(-1).to(torch.float64) for name in names]
    packed = torch.stack(columns, dim=1) if columns else torch.zeros(0, 0, dtype=torch.float64)
    rank, world = _rank_world()
    if world > 1:
        packed = _all_gather_rows(packed)
    rows = packed.cpu().numpy()
    _, first = np.unique(rows[:, names.index(key)], return_index=True)
    rows = rows[first]
    return {name: rows[:, j].astype(dtypes[name]) for j, name in enumerate(names)}


def _numpy_dtype(values: torch.Tensor | np.ndarray) -> np.dtype:
    if isinstance(values, torch.Tensor):
        return torch.empty(0, dtype=values.dtype).numpy().dtype
    return np.asarray(values).dtype


def _all_gather_rows(packed: torch.Tensor) -> torch.Tensor:
    """Concatenate every rank's (n_r, k) rows, in rank order (NCCL needs CUDA tensors, gloo CPU)."""
    backend = dist.get_backend()
    device = torch.device("cuda", torch.cuda.current_device()) if backend == "nccl" else torch.device("cpu")
    packed = packed.to(device)
    world = dist.get_world_size()
    count = torch.tensor([packed.shape[0]], dtype=torch.int64, device=device)
    counts = [torch.zeros_like(count) for _ in range(world)]
    dist.all_gather(counts, count)
    sizes = [int(c.item()) for c in counts]
    padded = torch.zeros(max(sizes), packed.shape[1], dtype=packed.dtype, device=device)
    padded[: packed.shape[0]] = packed
    gathered = [torch.empty_like(padded) for _ in range(world)]
    dist.all_gather(gathered, padded)
    return torch.cat([g[:n] for g, n in zip(gathered, sizes)])


# --------------------------------------------------------------------------- the model


def load_model(cfg: JobConfig, checkpoint: str | Path, patch_size: int, device: torch.device, *,
               train_hash: str | None = None, normalization: dict[str, Any] | None = None) -> torch.nn.Module:
    """The config's model with the weights of `checkpoint`: camvis's best.pt ({"model": state_dict})
    or a bare state_dict (camvis2's checkpoints). Read with weights_only=True (camvis.job.checkpoint).
    `train_hash`: the training the weights must come from (a job's own best.pt). `normalization`: the
    evaluation's inputs' (Normalization.record()); a checkpoint that records other ones is refused."""
    from camvis.model import build_model

    checkpoint = Path(checkpoint)
    if not checkpoint.is_file():
        raise CamvisError(f"{checkpoint}: no checkpoint to evaluate (train the job first, or pass --checkpoint)")
    payload = read(checkpoint, hint=f"pass another --checkpoint, or {RESTART_HINT}")
    found = recorded_train_hash(payload)
    if train_hash is not None and found != train_hash:
        raise CheckpointError(f"{checkpoint}: trained with another config (train hash {found}, "
                                          f"this config's {train_hash}); {RESTART_HINT}")
    _check_normalization(checkpoint, payload, normalization)
    state = payload.get("model", payload)
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise CamvisError(f"{checkpoint}: expected a state_dict or a dict with key 'model' holding one")
    if state and all(k.startswith("module.") for k in state):  # saved from a DDP wrapper
        state = {k[len("module."):]: v for k, v in state.items()}
    model = build_model(cfg, patch_size)
    try:
        model.load_state_dict(state)
    except RuntimeError as e:
        raise CamvisError(f"{checkpoint}: weights do not fit the model of the config "
                          f"(model.* and data.factors must match training): {e}") from e
    return model.to(device)


def _check_normalization(checkpoint: Path, payload: dict[str, Any], now: dict[str, Any] | None) -> None:
    """Weights trained on inputs normalized otherwise than the evaluation's would score other inputs.
    Checkpoints that record nothing (older camvis, camvis2's) are taken as they are."""
    recorded = payload.get("normalization")
    if now is None or not isinstance(recorded, dict):
        return
    if recorded.get("rule") != now.get("rule") or recorded.get("mean") != now.get("mean") \
            or recorded.get("std") != now.get("std"):
        raise CheckpointError(
            f"{checkpoint}: trained on inputs normalized with {recorded.get('rule')} statistics "
            f"{recorded.get('mean')}, the store gives this job {now.get('rule')} {now.get('mean')} (rebuilt?); "
            f"{RESTART_HINT}")


# --------------------------------------------------------------------------- the job


@dataclass(frozen=True)
class EvalInputs:
    """What evaluate_job evaluates, each given one way: the patches come from `source` (the store
    on its device: training's, or a new BatchSource), the predictions from `model`; `weights`
    names the model in errors."""

    source: BatchSource
    model: torch.nn.Module
    weights: str = "the model passed in"

    @staticmethod
    def load(cfg: JobConfig, checkpoint: str | Path, source: BatchSource, *,
             train_hash: str | None = None) -> EvalInputs:
        """The config's model with the weights of `checkpoint` on the source's device.
        `train_hash`: the training the checkpoint must record (a job's own best.pt)."""
        if _rank_world()[1] > 1:
            dist.barrier()  # rank 0 may still be renaming the last best.pt into place
        model = load_model(cfg, checkpoint, source.store.patch_size, source.device, train_hash=train_hash,
                           normalization=source.normalization.record())
        return EvalInputs(source, model, str(checkpoint))


def evaluate_job(cfg: JobConfig, job_dir: str | Path, inputs: EvalInputs, *, epochs: int | None = None,
                 progress: bool | None = None) -> dict[str, Any]:
    """Evaluate a job on its held-out view (cfg.data.fold) and write its outputs under `job_dir`.

    `epochs` None: read from job_dir/progress.json (0 if absent). Every rank returns the scores
    dict; only rank 0 writes, and scores.json goes last (an old one is removed first, so a
    failed evaluation never leaves a stale "finished" marker).
    """
    job_dir = Path(job_dir)
    rank, _ = _rank_world()
    source, store, device = inputs.source, inputs.source.store, inputs.source.device
    train_idx, val_idx, view = fold_split(store, cfg.data.fold)
    if len(val_idx) == 0:
        raise CamvisError(f"{store.path}: fold {cfg.data.fold} (view {view}) has no patches to evaluate")
    if rank == 0:
        (job_dir / SCORES).unlink(missing_ok=True)
    preds = patch_probabilities(inputs.model, source, val_idx, cfg.eval.batch_size, device, progress=progress)
    check_finite_predictions(cfg, preds, inputs.weights)
    results = compute_results(cfg, store, preds)
    scores = scores_dict(cfg, view, results, n_val=len(val_idx), n_train=len(train_idx),
                         epochs=epochs if epochs is not None else _epochs_run(job_dir),
                         normalization=source.normalization.label)
    if rank == 0:
        write_outputs(job_dir, cfg, store, preds, results)
        scores["finished"] = now_iso()  # after the figures: the moment the job's outputs are complete
        write_json(job_dir / SCORES, scores)  # last: its presence means the job is finished
    return scores


def check_finite_predictions(cfg: JobConfig, preds: Mapping[str, np.ndarray], weights: str | Path) -> None:
    """A model that predicts NaN/inf has diverged: no result is written for it (no null loss)."""
    bad = int((~np.isfinite(preds["score"])).sum())
    if bad:
        raise CamvisError(f"{cfg.experiment}/{cfg.name}: {bad} of {len(preds['score'])} held-out predictions are "
                          f"not finite (weights: {weights}): the model diverged, no scores written; retrain "
                          f"with a lower train.lr")


def _epochs_run(job_dir: Path) -> int:
    return as_int((read_json(job_dir / PROGRESS) or {}).get("epoch")) or 0


def compute_results(cfg: JobConfig, store: PatchStore, preds: Mapping[str, np.ndarray]) -> dict[str, Any]:
    """Metrics, bootstrap and CIs, confusion matrix and per-image visibility of the predictions."""
    score, label = preds["score"], preds["label"]
    boot = metrics.bootstrap(score, label, n=cfg.eval.bootstrap, seed=cfg.eval.seed, logits=preds["logit"])
    fits = visibility.estimate_images(preds["image"], preds["depth"], score)
    views = {i: store.views[int(store.image_view[i])] for i in fits}
    truth = visibility.true_visibility(store.images, store.attrs)
    rows = visibility.visibility_table(fits, store.images, views, truth)
    return {
        "metrics": metrics.scores(score, label, logits=preds["logit"]),
        "bootstrap": boot,
        "ci": {k: metrics.percentile_ci(v, cfg.eval.confidence) for k, v in boot.items()},
        "confusion": metrics.confusion(score, label),
        "fits": fits,
        "visibility": rows,
        "truth": truth or {},
    }


def scores_dict(cfg: JobConfig, view: str, results: Mapping[str, Any], *, n_val: int, n_train: int,
                epochs: int, normalization: str | None = None) -> dict[str, Any]:
    """The scores.json payload (docs/contracts.md, "scores.json"; NaN written as null).
    `normalization`: which statistics the inputs were normalized with (Normalization.label)."""
    from camvis.model import find_architecture

    m = cfg.model
    return {
        "experiment": cfg.experiment,
        "job": cfg.name,
        "group": cfg.group,
        "replicate": cfg.replicate,
        "fold": cfg.data.fold,
        "view": view,
        "config_hash": config_hash(cfg),
        "train_hash": config_train_hash(cfg),
        "eval_hash": eval_hash(cfg),
        "model_name": find_architecture(m.share_weights, m.use_mlp, m.align_features).name,
        "metrics": {k: _finite(v) for k, v in results["metrics"].items()},
        "ci": {k: [_finite(lo), _finite(hi)] for k, (lo, hi) in results["ci"].items()},
        "bootstrap": {"n": cfg.eval.bootstrap, "seed": cfg.eval.seed, "confidence": cfg.eval.confidence,
                      "file": BOOTSTRAP},
        "confusion": results["confusion"].tolist(),
        "threshold": metrics.THRESHOLD,
        "selection": cfg.train.selection,
        "normalization": normalization,
        "visibility": visibility.image_summary(results["visibility"]),
        "n_val": int(n_val),
        "n_train": int(n_train),
        "epochs": int(epochs),
        "finished": now_iso(),
    }


def _finite(value: float) -> float | None:
    return float(value) if math.isfinite(value) else None


# --------------------------------------------------------------------------- files


def write_outputs(job_dir: Path, cfg: JobConfig, store: PatchStore, preds: Mapping[str, np.ndarray],
                  results: Mapping[str, Any]) -> None:
    """Every evaluation file but scores.json, each written atomically."""
    from camvis.plots import evaluation as plots

    job_dir.mkdir(parents=True, exist_ok=True)
    names = np.asarray(store.images, dtype=object)
    _write_csv(job_dir / PREDICTIONS, pd.DataFrame({
        "patch": preds["patch"], "image": names[preds["image"]], "score": preds["score"],
        "logit": preds["logit"], "label": preds["label"], "depth": preds["depth"]}))
    (tn, fp), (fn, tp) = results["confusion"]
    _write_csv(job_dir / CONFUSION_CSV, pd.DataFrame(
        {"truth": [0, 1], "predicted_0": [tn, fn], "predicted_1": [fp, tp]}))
    view = store.views[int(store.image_view[preds["image"][0]])] if len(preds["image"]) else "?"
    plots.plot_confusion(results["confusion"], job_dir / CONFUSION_PNG,
                         title=f"{cfg.experiment}/{cfg.name}: fold {cfg.data.fold}, held-out view {view}")
    boot = results["bootstrap"]
    _write_csv(job_dir / BOOTSTRAP, pd.DataFrame(
        {"resample": np.arange(len(boot["loss"])), **{k: boot[k] for k in metrics.METRICS}}))
    _write_csv(job_dir / VISIBILITY, pd.DataFrame(results["visibility"], columns=visibility.CSV_COLUMNS))
    if cfg.eval.figures:
        write_figures(job_dir / FIGURES, store, preds, results, job=f"{cfg.experiment}/{cfg.name}")


def _write_csv(path: Path, frame: pd.DataFrame) -> None:
    write_csv(frame, path, float_format="%.9g", na_rep="")


def map_title(job: str, image: str, fit: Any, true_m: float | None) -> str:
    """`exp/job: image — predicted V 1,234 m (ok), true V 1,500 m` (true V only where it is known)."""
    true = f", true V {true_m:,.0f} m" if true_m is not None and math.isfinite(true_m) else ", true V unknown"
    head = f"{job}: {image}" if job else image
    return f"{head} — predicted V {fit.visibility_m:,.0f} m ({fit.flag}){true}"


MAP_WIDTH = 1500  # columns of the image under a per-image map (two panels in an 11-inch figure at 200 dpi)


def write_figures(directory: Path, store: PatchStore, preds: Mapping[str, np.ndarray],
                  results: Mapping[str, Any], job: str = "") -> list[Path]:
    """Per source image: truth and prediction over the image, and prediction vs distance."""
    from camvis.plots import evaluation as plots

    factor = min(store.factors)  # the sharpest level kept in the store
    written = []
    for i, fit in sorted(results["fits"].items()):
        rows = preds["image"] == i
        name = store.images[i]
        image = np.asarray(store.read_image(factor, i)).transpose(1, 2, 0)
        # At most MAP_WIDTH columns: a paper-size level drawn whole made matplotlib resample ~0.5 GB
        # of floats per figure and took seconds, for a panel some 1,000 pixels wide.
        step = max(1, math.ceil(image.shape[1] / MAP_WIDTH))
        image = image[::step, ::step]
        h = store.table["center_h"][preds["patch"][rows]] / (factor * step)
        w = store.table["center_w"][preds["patch"][rows]] / (factor * step)
        written.append(plots.plot_image_map(image, h, w, preds["label"][rows], preds["score"][rows],
                                            directory / f"{name}_map.png",
                                            title=map_title(job, name, fit, results["truth"].get(name))))
        written.append(plots.plot_distance(
            preds["depth"][rows], preds["score"][rows], preds["label"][rows], directory / f"{name}_distance.png",
            fit_a=fit.a, fit_b=fit.b, predicted_m=fit.visibility_m, true_m=results["truth"].get(name),
            title=f"{name}: predicted V {fit.visibility_m:,.0f} m ({fit.flag})"))
    return written
