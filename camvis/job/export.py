"""A self-contained model bundle: one folder that predicts with nothing else (camvis-export).

    OUT/weights.pt    the network's state_dict, a plain dict of tensors (torch.load(weights_only=True))
    OUT/model.json    architecture, factors, patch size, preprocessing, normalization statistics,
                      training config and its hash, camvis version, held-out scores, the ONNX check
    OUT/model.onnx    the network with a sigmoid: input "x" (B, L*4, P, P) float32, output
                      "p_visible" (B,); checked against torch with onnxruntime at export;
                      with `--quantize int8` that graph statically quantized (QDQ, calibrated on
                      the job's own training patches), model.json's onnx.quantization says how

Weights are a weights_only state_dict rather than safetensors: torch's own restricted unpickler
reads it without running code, and safetensors would be a new dependency for no gain here.
ONNX needs the optional extra `camvis[onnx]` (onnx, onnxruntime, onnxscript); `--no-onnx`
writes a bundle without the graph. The bundle is written beside OUT and renamed in at the end.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shutil
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from camvis import atomic_folder
from camvis.errors import PredictError
from camvis.io import json_copy, write_json
from camvis.bookkeeping.jobfolder import BEST, CONFIG
from camvis.job import bundle, loaded_model
from camvis.bookkeeping.replace_guard import Marker, check_replaceable, json_object

MODEL_JSON, WEIGHTS, ONNX = "model.json", "weights.pt", "model.onnx"
OPSET = 18
ONNX_TOLERANCE = 1e-4  # max |p_onnx - p_torch| accepted at export
CHECK_BATCH = 8
ONNX_ACTIVATION = 1 << 27  # elements of a first-block activation per onnxruntime call (512 MB float32):
                           # 64 patches of the paper's model (hidden 128, patch 128)
QUANTIZE = ("int8",)
CALIBRATION_PATCHES = 512  # a seeded sample of the job's training patches sets the int8 activation ranges
CALIBRATION_BATCH = 8      # patches per calibration run: onnxruntime holds every activation of a run
                           # (~150 MB a patch for the paper's model), merging the ranges run by run
INT8_CHECK_PATCHES = 128   # held-out view patches on which the int8 graph is compared with float32
INT8_TOLERANCE = 0.1       # max |p_int8 - p_float32| accepted there: catches a broken quantization (the
                           # trial's: <= 0.005, its visibilities <= 0.023 in log10: benchmarks/bench_quantize.py)
FORMAT = "camvis-model-bundle"
FORMAT_VERSION = 2  # 2: SHA-256 of every file and of model.json itself (camvis.job.bundle)
BUNDLE = Marker("a camvis model bundle", "camvis-export", True, MODEL_JSON,
                lambda path: json_object(path / MODEL_JSON).get("format") == FORMAT)


def export(job_dir: str | os.PathLike, out: str | os.PathLike, *, onnx: bool = True, force: bool = False,
           quantize: str | None = None) -> dict[str, Any]:
    """Write the bundle of the job in `job_dir` to `out`; returns its model.json content. An existing
    `out` is replaced only when it is a bundle or empty (camvis.bookkeeping.replace_guard), with `force` or not.
    `quantize="int8"`: the ONNX graph is quantized (quantize_int8)."""
    import torch

    if quantize is not None and quantize not in QUANTIZE:
        raise PredictError(f"quantize must be one of {', '.join(QUANTIZE)}, got {quantize!r}")
    if quantize and not onnx:
        raise PredictError(f"--quantize {quantize} quantizes the ONNX graph: it cannot go with --no-onnx")
    final = Path(out).resolve()
    check_replaceable(final, kind=BUNDLE, inputs=(job_dir,), error=PredictError)  # only a bundle, --force or not
    job = Path(job_dir)
    if not ((job / BEST).is_file() and (job / CONFIG).is_file()):
        raise PredictError(f"{job_dir}: not a model to export: expected a job folder ({BEST} and {CONFIG})")
    model = loaded_model.load_job(job, loaded_model.device_for("cpu"))
    info = {**model.info, "format": FORMAT, "format_version": FORMAT_VERSION,
            "weights": {"file": WEIGHTS, "format": "torch state_dict; torch.load(path, weights_only=True)"}}
    atomic_folder.remove_stale(final)
    tmp = atomic_folder.scratch_path(final, "tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    try:
        torch.save({k: v.detach().cpu().contiguous() for k, v in model.network.state_dict().items()}, tmp / WEIGHTS)
        info["onnx"] = export_onnx(model.network, tmp / ONNX, model) if onnx else None
        if quantize:
            info["onnx"]["quantization"] = quantize_job(tmp / ONNX, Path(job_dir))
        info = _sealed(info, tmp)
        write_json(tmp / MODEL_JSON, info)
        atomic_folder.swap_in(tmp, final)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return info


def _sealed(info: dict[str, Any], folder: Path) -> dict[str, Any]:
    """`info` as written, with the SHA-256 of each file it names and its own digest (what predict checks)."""
    info = json_copy(info)  # JSON's own types: the digest is that of what is read back
    for key in ("weights", "onnx"):
        if info.get(key):
            info[key]["sha256"] = bundle.sha256_bytes((folder / info[key]["file"]).read_bytes())
    info["digest"] = bundle.digest(info)
    return info


def _probability(net: Any) -> Any:
    """The network followed by a sigmoid: the graph outputs p(visible), as predictions do."""
    import torch

    class Probability(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.net = net

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return torch.sigmoid(self.net(x))

    return Probability().eval()


def export_onnx(net: Any, path: Path, model: Any) -> dict[str, Any]:
    """The ONNX graph of `net` at `path`, run with onnxruntime against torch on a batch."""
    import torch

    _require_onnx()
    wrapped = _probability(net)
    x = check_batch(model)
    batch = torch.export.Dim("batch", min=1, max=1 << 20)
    try:
        with _quiet_exporter():
            program = torch.onnx.export(wrapped, (x,), dynamo=True, input_names=["x"], output_names=["p_visible"],
                                        dynamic_shapes=({0: batch},), opset_version=OPSET, verbose=False)
        program.save(str(path))
    except Exception as e:  # the exporter raises many kinds; the bundle is not written then
        raise PredictError(f"ONNX export of {model.model_id} failed: {type(e).__name__}: {e}") from e
    with torch.inference_mode():
        expected = wrapped(x).numpy()
    got = run_onnx(path, x.numpy())
    diff = float(np.max(np.abs(got - expected)))
    print(f"ONNX check: max |p_onnx - p_torch| = {diff:.3g} over a batch of {len(x)} (tolerance {ONNX_TOLERANCE:g})")
    if not diff <= ONNX_TOLERANCE:
        raise PredictError(f"{path}: the ONNX graph differs from torch by {diff:.3g} > {ONNX_TOLERANCE:g} "
                           f"(opset {OPSET}); the bundle is not written")
    return {"file": ONNX, "opset": OPSET, "input": "x", "output": "p_visible",
            "check": {"batch": len(x), "max_abs_diff": diff, "tolerance": ONNX_TOLERANCE}}


def quantize_job(graph: Path, job: Path) -> dict[str, Any]:
    """The job's float32 `graph` replaced by its int8 one, calibrated on CALIBRATION_PATCHES of the
    job's training patches and checked against float32 on INT8_CHECK_PATCHES of its held-out view
    (batches of its store with its fold's statistics: what the network saw); returns what was done."""
    from camvis.config import load_job_config
    from camvis.data.store import open_store
    from camvis.job.batches import BatchSource, fold_split

    cfg = load_job_config(job / CONFIG)
    store = open_store(cfg.data.store)
    source = BatchSource(store, cfg.data.factors, fold=cfg.data.fold)
    train_idx, val_idx, view = fold_split(store, cfg.data.fold)
    rng = np.random.default_rng(0)
    calibration = np.sort(rng.choice(train_idx, min(CALIBRATION_PATCHES, train_idx.size), replace=False))
    check = np.sort(rng.choice(val_idx, min(INT8_CHECK_PATCHES, val_idx.size), replace=False))
    int8 = graph.with_name("int8-" + graph.name)
    parts = np.array_split(calibration, max(1, -(-calibration.size // CALIBRATION_BATCH)))
    info = quantize_int8(graph, int8, [lambda part=part: source.batch(part)[0].numpy() for part in parts])
    x = source.batch(check if check.size else calibration)[0].numpy()
    p8, p32 = (onnx_forward(_session(g), CALIBRATION_BATCH)(x) for g in (int8, graph))
    diff = np.abs(p8 - p32)
    print(f"int8 check: max |p_int8 - p_float32| = {diff.max():.3g} over {len(x)} patches of the held-out view "
          f"{view} (tolerance {INT8_TOLERANCE:g})")
    if not diff.max() <= INT8_TOLERANCE:
        raise PredictError(f"{job}: the int8 graph differs from float32 by {diff.max():.3g} > {INT8_TOLERANCE:g} "
                           f"on the held-out view's patches; the bundle is not written (export without --quantize)")
    os.replace(int8, graph)
    info["calibration"].update(patches=int(calibration.size), of="the job's training patches (seeded sample)")
    info["check"] = {"patches": int(len(x)), "of": f"held-out view {view}", "max_abs_diff": float(diff.max()),
                     "mean_abs_diff": float(diff.mean()), "tolerance": INT8_TOLERANCE}
    return info


def quantize_int8(fp32: Path, out: Path, batches: list[Any]) -> dict[str, Any]:
    """onnxruntime's static int8 quantization of `fp32` to `out`: QDQ, uint8 activations, int8
    per-channel weights (U8S8: onnxruntime's fast path on x86), MinMax ranges over `batches`
    (functions that return a float32 input batch each, called one at a time)."""
    import onnxruntime
    from onnxruntime.quantization import (CalibrationDataReader, CalibrationMethod, QuantFormat, QuantType,
                                          quantize_static)
    from onnxruntime.quantization.shape_inference import quant_pre_process

    class Reader(CalibrationDataReader):  # onnxruntime's strided protocol: ranges merged window by window
        def __init__(self) -> None:
            self.window: Iterator[Any] = iter(())

        def __len__(self) -> int:
            return len(batches)

        def set_range(self, start_index: int, end_index: int) -> None:
            self.window = iter(batches[start_index:end_index])

        def get_next(self) -> dict[str, np.ndarray] | None:
            make = next(self.window, None)
            return None if make is None else {"x": np.ascontiguousarray(make(), np.float32)}

    pre = out.with_name("pre-" + out.name)
    try:
        with _quiet_exporter():
            quant_pre_process(str(fp32), str(pre))  # shapes and graph optimizations: BatchNorm into the convs
            quantize_static(str(pre), str(out), Reader(), quant_format=QuantFormat.QDQ,
                            activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8, per_channel=True,
                            calibrate_method=CalibrationMethod.MinMax, extra_options={"CalibStridedMinMax": 1})
    except Exception as e:  # onnxruntime raises many kinds; nothing is written then
        out.unlink(missing_ok=True)
        raise PredictError(f"{fp32}: int8 quantization failed: {type(e).__name__}: {e}") from e
    finally:
        pre.unlink(missing_ok=True)
    return {"type": "int8", "format": "QDQ", "activations": "uint8", "weights": "int8, per channel",
            "tool": f"onnxruntime.quantization.quantize_static {onnxruntime.__version__}",
            "calibration": {"method": "MinMax", "batches": len(batches)}}


@contextlib.contextmanager
def _quiet_exporter() -> Iterator[None]:
    """The exporter logs and warns about operator sets camvis does not use (torchvision's)."""
    logger = logging.getLogger("torch.onnx")
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        logger.setLevel(level)


def check_batch(model: Any) -> Any:
    """A seeded batch shaped like the model's input; normalized inputs are about N(0, 1)."""
    import torch

    channels = 4 * len(model.factors)
    generator = torch.Generator().manual_seed(0)
    return torch.randn(CHECK_BATCH, channels, model.patch_size, model.patch_size, generator=generator)


def _require_onnx() -> None:
    try:
        import onnx  # noqa: F401
        import onnxruntime  # noqa: F401
        import onnxscript  # noqa: F401
    except ImportError as e:
        raise PredictError(f"ONNX export and --runtime onnx need the optional extra: pip install 'camvis[onnx]' "
                           f"({e}); or export without the graph: camvis-export --no-onnx") from e


def _session(path: Path, data: bytes | None = None, threads: int | None = None) -> Any:
    """An onnxruntime session of the graph at `path` (or of its already verified bytes `data`) on
    the CPU, with `threads` intra-op threads (default: onnxruntime's)."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.log_severity_level = 3  # warnings about unused initializers etc. are noise here
    if threads:
        options.intra_op_num_threads = int(threads)
        options.inter_op_num_threads = 1
    providers = ["CPUExecutionProvider"]  # on CUDA, --runtime auto runs torch (bf16)
    try:
        return ort.InferenceSession(data if data is not None else str(path), options, providers=providers)
    except Exception as e:  # onnxruntime's own exception types
        raise PredictError(f"{path}: onnxruntime cannot load the graph ({e})") from e


def run_onnx(path: Path, x: np.ndarray) -> np.ndarray:
    return np.asarray(_session(path).run(["p_visible"], {"x": np.ascontiguousarray(x, np.float32)})[0]).reshape(-1)


# --------------------------------------------------------------------------- loading


def read_info(folder: Path) -> dict[str, Any]:
    """model.json, checked: format, schema (every field typed and bounded) and its own digest."""
    path = folder / MODEL_JSON
    try:
        info = json.loads(bundle.read_regular(path, bundle.MAX_JSON_BYTES, "bundle's description"))
    except ValueError as e:  # not JSON, not UTF-8
        raise PredictError(f"{path}: cannot read the bundle's description ({e})") from e
    if not isinstance(info, dict) or info.get("format") != FORMAT:
        raise PredictError(f"{path}: not a camvis model bundle (format {FORMAT!r} expected)")
    if info.get("format_version") == 1:  # refused, not trusted: it cannot be verified
        raise PredictError(f"{path}: a bundle of format 1 carries no checksums, so it cannot be verified; "
                           f"export it again: camvis-export JOB {folder}")
    if info.get("format_version") != FORMAT_VERSION:
        raise PredictError(f"{path}: bundle format version {info.get('format_version')!r}, this camvis reads "
                           f"{FORMAT_VERSION}; export it again")
    bundle.check_schema(info, path, tuple(loaded_model.PREPROCESSING))
    if bundle.digest(info) != info["digest"]:
        raise PredictError(f"{path}: edited after export (its content does not match its digest); "
                           f"export the job again")
    return info


def load_bundle(folder: str | os.PathLike, *, device: Any = "auto", runtime: str = "torch",
                threads: int | None = None) -> Any:
    """A camvis.job.loaded_model.Model from the bundle folder alone, every file verified first."""
    folder = Path(folder)
    info = read_info(folder)
    data = bundle.verified_file(folder, info["weights"], "weights")  # whichever runtime runs: all verified
    if runtime == "onnx":
        return _onnx_model(folder, info, threads)
    if info.get("onnx"):
        bundle.verified_file(folder, info["onnx"], "ONNX graph")
    path = folder / info["weights"]["file"]
    net = loaded_model.build_network(info["architecture"], loaded_model.read_weights(path, data), path)
    return loaded_model.torch_model(net, info, info["model_id"], loaded_model.device_for(device))


def _onnx_model(folder: Path, info: dict[str, Any], threads: int | None = None) -> Any:
    import torch

    _require_onnx()
    if not info.get("onnx"):
        raise PredictError(f"{folder}: the bundle has no ONNX graph (exported with --no-onnx); use --runtime torch")
    path = folder / info["onnx"]["file"]
    session = _session(path, bundle.verified_file(folder, info["onnx"], "ONNX graph"), threads)
    _check_graph(session, path, info)

    rows = max(1, ONNX_ACTIVATION // (info["architecture"]["size_hidden"] * info["patch_size"] ** 2))
    int8 = "-int8" if info["onnx"].get("quantization") else ""  # the output's runtime column says so
    return loaded_model.Model(model_id=info["model_id"], factors=tuple(int(f) for f in info["factors"]),
                 patch_size=int(info["patch_size"]), norm_mean=np.asarray(info["norm_mean"], np.float32),
                 norm_std=np.asarray(info["norm_std"], np.float32), device=torch.device("cpu"),
                 forward=onnx_forward(session, rows), info=info, runtime="onnxruntime-cpu" + int8)


def onnx_forward(session: Any, rows: int) -> Any:
    """forward(x) -> p(visible) through an onnxruntime session, `rows` patches per call."""

    def forward(x: Any) -> np.ndarray:
        x = np.ascontiguousarray(x.numpy() if hasattr(x, "numpy") else x, np.float32)
        parts = [np.asarray(session.run(["p_visible"], {"x": x[i:i + rows]})[0], np.float32).reshape(-1)
                 for i in range(0, len(x), rows)]
        return np.concatenate(parts) if parts else np.zeros(0, np.float32)

    return forward


def _check_graph(session: Any, path: Path, info: dict[str, Any]) -> None:
    """The graph takes what model.json says: x (B, 4 L, P, P) -> p_visible."""
    inputs, outputs = session.get_inputs(), session.get_outputs()
    want = [4 * len(info["factors"]), info["patch_size"], info["patch_size"]]
    if ([i.name for i in inputs] != ["x"] or list(inputs[0].shape[1:]) != want
            or [o.name for o in outputs] != ["p_visible"]):
        raise PredictError(f"{path}: the graph's input/output {[(i.name, i.shape) for i in inputs]} -> "
                           f"{[o.name for o in outputs]} do not match model.json (x: (B, {want[0]}, {want[1]}, "
                           f"{want[2]}) -> p_visible)")
