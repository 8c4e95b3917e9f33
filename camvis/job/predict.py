"""Visibility in metres on new, unlabelled webcam images: a trained model, an image, its view's depth map.

`load_model` opens a job folder (best.pt + config.yaml; the normalization statistics come from
the store the job trained on: its fold's, under the store's per-fold rule) or an exported bundle (camvis.job.export: needs nothing but its
folder). `visibility(image, depth_map, model)` is the whole per-image path, the one the CLI
(camvis-predict) runs too:

1. patch centres over the terrain (finite positive depth, half a patch from the border), drawn
   with the store's depth-balanced rule (camvis.data.sampling, no labels: every terrain pixel is a
   candidate), or a regular grid (`stride`), or given;
2. the image's pyramid built with the store's own level functions (camvis.data.store_build) into an
   in-memory store of one image, so `BatchSource` makes exactly the batches training and
   camvis-eval make (same crops, padding and normalization);
3. p(visible) per patch (torch, through camvis.job.evaluate.patch_probabilities, or the bundle's ONNX graph);
4. the logistic fit of camvis.job.visibility: metres, its flag and a fit quality.
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

import numpy as np
import pandas as pd

from camvis.job import inputs
from camvis.bookkeeping.jobfolder import BEST, CONFIG
from camvis.job import export
from camvis.job.loaded_model import Model, device_for, load_job
from camvis.job import visibility as vis
from camvis.job.inputs import DEFAULT_MAX_PIXELS
from camvis.errors import PredictError
from camvis.host import usable_cpus
from camvis.data.raw import NAME_PATTERN, depth_metres, view_of

if TYPE_CHECKING:
    import torch

    from camvis.job.batches import BatchSource

DEFAULT_PATCHES = 500
DEFAULT_BATCH = 256
# --------------------------------------------------------------------------- the model


RUNTIMES = ("auto", "torch", "onnx")


def load_model(path: str | os.PathLike | Model, *, device: str = "auto", runtime: str = "auto",
               threads: int | None = None) -> Model:
    """A Model from a job folder (best.pt + config.yaml) or an exported bundle (model.json).

    `runtime`: "auto" (CUDA: torch with bf16 autocast and channels_last; CPU: onnxruntime when the
    bundle has a verified ONNX graph, else torch with channels_last), "torch" or "onnx" (bundles
    only). `threads`: CPU threads of the network (default: cpu_threads()).
    """
    if isinstance(path, Model):
        return path
    path = Path(path)
    if runtime not in RUNTIMES:
        raise PredictError(f"runtime must be one of {', '.join(RUNTIMES)}, got {runtime!r}")
    
    target = device_for(device)
    threads = cpu_threads(threads)
    if target.type == "cpu":
        import torch

        torch.set_num_threads(threads)
    is_bundle = (path / export.MODEL_JSON).is_file()
    note = f"--runtime {runtime}"
    if runtime == "auto":
        runtime, note = choose_runtime(path, target, is_bundle)
    if is_bundle:
        return replace(export.load_bundle(path, device=target, runtime=runtime, threads=threads), runtime_note=note)
    if runtime == "onnx":
        raise PredictError(f"{path}: --runtime onnx needs an exported bundle (camvis-export {path} OUT), "
                           f"not a job folder")
    if (path / BEST).is_file() and (path / CONFIG).is_file():
        return replace(load_job(path, target), runtime_note=note)
    raise PredictError(f"{path}: not a model: expected a job folder (best.pt and config.yaml) or a bundle "
                       f"made by camvis-export ({export.MODEL_JSON})")


def choose_runtime(path: Path, device: torch.device, is_bundle: bool) -> tuple[str, str]:
    """--runtime auto: (runtime, why)."""
    if device.type == "cuda":
        return "torch", "auto: a CUDA device (torch, bf16 autocast, channels_last)"
    if not is_bundle:
        return "torch", "auto: a job folder has no ONNX graph (camvis-export makes one); torch on the CPU"
    
    if not export.read_info(path).get("onnx"):
        return "torch", "auto: the bundle has no ONNX graph (exported with --no-onnx); torch on the CPU"
    try:
        import onnxruntime  # noqa: F401
    except ImportError:
        return "torch", "auto: onnxruntime is not installed (pip install 'camvis[onnx]'); torch on the CPU"
    return "onnx", "auto: the bundle's verified ONNX graph on the CPU"


def cpu_threads(threads: int | None = None) -> int:
    """Threads for the network: `threads`, else SLURM_CPUS_PER_TASK, else CAMVIS_NUM_THREADS, else the
    cores this process may run on (its affinity: a cgroup or taskset share, not the whole machine)."""
    from camvis.bounds import num_threads  # CAMVIS_NUM_THREADS checked: abc or 0 is one line, not ignored

    for value in (threads, os.environ.get("SLURM_CPUS_PER_TASK"), num_threads()):
        if value is not None and str(value).strip().isdigit() and int(value) > 0:
            return int(value)
    return usable_cpus()


# --------------------------------------------------------------------------- one image


@dataclass(frozen=True)
class ImageResult:
    """The prediction of one image: visibility in metres, the fit's flag and quality, the patches."""

    image: str
    view: str
    timestamp: str
    visibility_m: float
    flag: str
    fit_quality: float
    n_patches: int
    model: str
    fit: vis.VisibilityFit | None = field(repr=False)
    patches: pd.DataFrame = field(repr=False)  # center_h, center_w, depth_m, p_visible

    def row(self) -> dict[str, Any]:
        """The output row (CSV / JSON lines)."""
        return {"image": self.image, "view": self.view, "timestamp": self.timestamp,
                "visibility_m": self.visibility_m, **vis.interval_columns(self.fit), "flag": self.flag,
                "fit_quality": self.fit_quality,
                "n_patches": self.n_patches, "model": self.model}


ROW_COLUMNS = ("image", "view", "timestamp", "visibility_m", *vis.INTERVAL_COLUMNS, "flag", "fit_quality", "n_patches",
               "true_visibility_m", "log10_error", "model", "runtime", "path", "sha256")
"""camvis-predict's columns: the interval of the visibility (camvis.job.visibility); the truth and
log10(predicted / true) where --raw's visibility.csv has the image (else empty); what ran the network;
the image's real path and content digest (the key a rerun skips on)."""


def calibrated_fit(fit: vis.VisibilityFit, info: dict[str, Any]) -> vis.VisibilityFit:
    """The fit with its interval widened by the model's calibration (model.json's visibility_calibration:
    a factor 10 ** q either side, q None meaning too few calibration images: unbounded); unchanged
    without one. The flag stays the patch interval's (camvis.job.visibility: `uncertain`)."""
    calibration = info.get("visibility_calibration")
    if not calibration:
        return fit
    q = calibration.get("log10_factor")
    low, high = vis.calibrated(fit.visibility_m, fit.low_m, fit.high_m, math.inf if q is None else float(q))
    return replace(fit, low_m=float(low), high_m=float(high))


def visibility(image: str | os.PathLike | np.ndarray, depth_map: str | os.PathLike | np.ndarray,
               model: str | os.PathLike | Model, *, patches: int = DEFAULT_PATCHES, stride: int | None = None,
               seed: int = 0, centres: tuple[np.ndarray, np.ndarray] | None = None,
               batch_size: int = DEFAULT_BATCH, name: str | None = None, view: str | None = None,
               depth_name: str | None = None) -> ImageResult:
    """Predicted visibility (metres) of one image from its view's depth map.

    image: a file or uint8 (H, W, 3); depth_map: a .npy file or float (H, W[, C]) metres, NaN = no
    terrain (channel 0 of camvis2's (H, W, 4)). Centres: `patches` depth-balanced ones (seeded by
    `seed` alone, so a rerun or another chunking draws the same), a `stride` grid, or `centres`
    (rows, columns). A PredictError names the file and what was expected.
    """
    model = load_model(model)
    name = name or (Path(image).stem if not isinstance(image, np.ndarray) else "image")
    rgb = read_image(image)
    depth = read_depth(depth_map)
    check_inputs(rgb, depth, model, _label(image, name), depth_name or _label(depth_map, "the depth map"))
    if centres is not None:
        rows, cols = (np.asarray(c, np.int64).reshape(-1) for c in centres)
    elif stride is not None:
        rows, cols = grid_centres(depth, model.patch_size, stride)
    else:
        rows, cols = sampled_centres(depth, model.patch_size, patches, seed)
    depth_m = depth[rows, cols].astype(np.float32)
    scores = predict_patches(rgb, depth, rows, cols, model, batch_size) if rows.size else np.zeros(0, np.float32)
    view = view or view_of(name) or (Path(depth_map).stem if not isinstance(depth_map, np.ndarray) else "")
    table = pd.DataFrame({"center_h": rows, "center_w": cols, "depth_m": depth_m, "p_visible": scores})
    if not rows.size:
        return ImageResult(name, view, timestamp_of(name), math.nan, "no_patches", math.nan, 0, model.model_id,
                           None, table)
    fit = calibrated_fit(vis.estimate(depth_m, scores), model.info)
    return ImageResult(name, view, timestamp_of(name), float(fit.visibility_m), fit.flag, fit.quality,
                       int(rows.size), model.model_id, fit, table)


def _label(source: Any, fallback: str) -> str:
    return fallback if isinstance(source, np.ndarray) else str(source)


def read_image(image: str | os.PathLike | np.ndarray, max_pixels: int = DEFAULT_MAX_PIXELS) -> np.ndarray:
    """uint8 (H, W, 3) from a file (camvis.job.inputs: regular files only, a pixel cap, camvis2's
    16-to-8-bit rule) or an array."""
    if isinstance(image, np.ndarray):
        if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
            raise PredictError(f"image: expected uint8 (H, W, 3), got {image.dtype} {image.shape}")
        return image
    return inputs.read_image_file(image, max_pixels)[0]


def read_depth(depth_map: str | os.PathLike | np.ndarray) -> np.ndarray:
    """float32 (H, W) metres from (H, W) or (H, W, C) with depth in channel 0 (camvis2's layout);
    a file must be a regular, non-empty .npy (memory-mapped, never unpickled)."""
    if isinstance(depth_map, np.ndarray):
        return depth_metres(depth_map, "depth map", PredictError)
    inputs.check_name(depth_map)
    inputs.check_regular(depth_map, "depth map")
    name = inputs.shown(depth_map)
    try:
        arr = np.load(depth_map, mmap_mode="r", allow_pickle=False)
    except (OSError, ValueError, EOFError) as e:  # truncated, not .npy, an object array
        raise PredictError(f"{name}: cannot read the depth map ({e})") from e
    return depth_metres(arr, name, PredictError)


def check_inputs(rgb: np.ndarray, depth: np.ndarray, model: Model, image: str, depth_name: str) -> None:
    """The image matches its depth map, and the model's levels and patch size fit the image."""
    (h, w), p = rgb.shape[:2], model.patch_size
    if depth.shape != (h, w):
        raise PredictError(f"{image}: image is {h} x {w} but {depth_name} is {depth.shape[0]} x {depth.shape[1]}; "
                           "expected the depth map of the image's view, same size")
    small = [f for f in model.factors if h // f < 1 or w // f < 1]
    if small:
        raise PredictError(f"{image}: the model's factors {small} are too large for a {h} x {w} image "
                           f"(model {model.model_id}, factors {list(model.factors)})")
    if 2 * (p // 2) >= min(h, w):
        raise PredictError(f"{image}: the model's patch size {p} leaves no patch centre in a {h} x {w} image "
                           f"(centres stay half a patch from the border; model {model.model_id})")


def terrain_mask(depth: np.ndarray, patch_size: int) -> np.ndarray:
    """Possible centres: finite positive depth, half a patch from the border (camvis.data.sampling's rule)."""
    from camvis.data.sampling import _candidate_mask

    return _candidate_mask(np.zeros(depth.shape, np.uint8), depth, patch_size)


def sampled_centres(depth: np.ndarray, patch_size: int, n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """`n` depth-balanced centres over the terrain (every terrain pixel a candidate: no labels)."""
    from camvis.data.sampling import sample_centres

    if n < 1:
        raise PredictError(f"patches must be >= 1, got {n}")
    rows, cols, _ = sample_centres(np.zeros(depth.shape, np.uint8), depth, n, patch_size,
                                   np.random.default_rng(seed))
    return rows.astype(np.int64), cols.astype(np.int64)


def grid_centres(depth: np.ndarray, patch_size: int, stride: int) -> tuple[np.ndarray, np.ndarray]:
    """Every `stride`-th pixel on both axes that is a possible centre (maps)."""
    if stride < 1:
        raise PredictError(f"stride must be >= 1 pixel, got {stride}")
    mask = np.zeros(depth.shape, bool)
    mask[::stride, ::stride] = True
    rows, cols = np.nonzero(mask & terrain_mask(depth, patch_size))
    return rows.astype(np.int64), cols.astype(np.int64)


def image_store(rgb: np.ndarray, depth: np.ndarray, rows: np.ndarray, cols: np.ndarray, model: Model,
                depth_levels: dict[int, np.ndarray] | None = None) -> Any:
    """A one-image PatchStore in memory: the model's levels made by the store's own functions.
    `depth_levels`: those of `depth` (_depth_levels()), when already made for another image of its view."""
    from PIL import Image

    from camvis.data import camvis2
    from camvis.data.store import PatchStore
    from camvis.data.store_build import rgb_level

    mode = model.preprocessing
    depth_levels = depth_levels or _depth_levels(depth, model)
    if mode == camvis2.CAMVIS2:  # the model saw camvis2's levels: make the same
        levels = {f: (camvis2.rgb_level(rgb, f).transpose(2, 0, 1)[None], depth_levels[f]) for f in model.factors}
    else:
        pil = Image.fromarray(rgb)
        levels = {f: (np.array(rgb_level(pil, f).transpose(2, 0, 1)[None]), depth_levels[f]) for f in model.factors}
    n = rows.size
    table = {"center_h": rows.astype(np.int32), "center_w": cols.astype(np.int32),
             "label": np.zeros(n, np.uint8), "depth": depth[rows, cols].astype(np.float32),
             "image": np.zeros(n, np.int32), "view": np.zeros(n, np.int32)}
    return PatchStore(path=None, factors=model.factors, patch_size=model.patch_size, image_shape=rgb.shape[:2],
                      views=("view",), images=("image",), image_view=np.zeros(1, np.int32), table=table,
                      norm_mean=model.norm_mean, norm_std=model.norm_std, levels=levels,
                      attrs={"preprocessing": mode})  # BatchSource's crop-centre rule


def _depth_levels(depth: np.ndarray, model: Model) -> dict[int, np.ndarray]:
    """The model's depth levels of a depth map, (1, 1, H / f, W / f) each, by its store's rules."""
    from camvis.data import camvis2
    from camvis.data.store_build import depth_level

    level = camvis2.depth_level if model.preprocessing == camvis2.CAMVIS2 else depth_level
    return {f: level(depth, f)[None, None] for f in model.factors}


def predict_patches(rgb: np.ndarray, depth: np.ndarray, rows: np.ndarray, cols: np.ndarray, model: Model,
                    batch_size: int = DEFAULT_BATCH) -> np.ndarray:
    """p(visible) at the centres, float32, batched on the model's device as camvis-eval does."""
    from camvis.job.batches import BatchSource

    source = BatchSource(image_store(rgb, depth, rows, cols, model), model.factors, model.device)
    return np.asarray(model.run(source, np.arange(rows.size, dtype=np.int64), batch_size), np.float32)


def timestamp_of(name: str) -> str:
    """ISO time from camvis2's `{cam}_{pos}_{YYYY-MM-DD}_{HHMM}` stem, '' for other names."""
    match = NAME_PATTERN.match(name)
    if not match:
        return ""
    t = match["time"]
    return f"{match['date']}T{t[:2]}:{t[2:]}"


# --------------------------------------------------------------------------- many images


@dataclass(frozen=True)
class Item:
    """One image to predict and its view's depth map. `path`: the image's real path (symlinks
    resolved); with the file's SHA-256 it is the key a rerun skips on."""

    image: Path
    depth: Path
    path: str = ""

    def __post_init__(self) -> None:
        if not self.path:
            object.__setattr__(self, "path", os.path.realpath(self.image))


def list_items(images: Sequence[str], depth: str | None, raw_dir: str | None) -> tuple[list[Item], list[str]]:
    """(items, problems): images (files, or folders of them) with their depth maps.

    --depth: one depth map for all; --raw: RAW/depth_maps/{view}.npy by each image's name (images
    default to RAW/images). Mask files of camvis2's layout are skipped; a file given twice (or
    through a folder and by name) is one item. A problem names its file; no image at all is an error.
    """
    from camvis.data.raw import IMAGE_SUFFIXES, NONVISIBLE_SUFFIX, VISIBLE_SUFFIX

    if (depth is None) == (raw_dir is None):
        raise PredictError("give exactly one of --depth DEPTH_MAP (one view) or --raw RAW_DIR "
                           "(each image's view's depth map by name)")
    if raw_dir is not None and not Path(raw_dir).is_dir():
        raise PredictError(f"{raw_dir}: --raw expects camvis2's raw folder (images/, depth_maps/)")
    sources = list(images) or ([str(Path(raw_dir) / "images")] if raw_dir else [])
    if not sources:
        raise PredictError("no images given")
    paths: list[Path] = []
    problems: list[str] = []
    for source in sources:
        p = Path(source)
        if p.is_dir():
            try:
                paths += sorted(q for q in p.iterdir() if q.suffix.lower() in IMAGE_SUFFIXES
                                and not q.name.endswith((VISIBLE_SUFFIX, NONVISIBLE_SUFFIX)))
            except OSError as e:
                problems.append(f"{inputs.shown(p)}: cannot list the folder ({e.strerror or e})")
        elif os.path.lexists(p):  # a file, or a FIFO or device: the reader refuses those unopened
            if not p.name.endswith((VISIBLE_SUFFIX, NONVISIBLE_SUFFIX)):  # a shell glob's masks
                paths.append(p)
        else:
            problems.append(f"{inputs.shown(p)}: no such image file or folder")
    if not paths and not problems:
        raise PredictError(f"no images in {', '.join(inputs.shown(s) for s in sources)} (expected "
                           f"{', '.join(sorted(IMAGE_SUFFIXES))} files)")
    items, seen = [], set()
    for p in paths:
        try:
            inputs.check_name(p)
        except PredictError as e:
            problems.append(str(e))
            continue
        item = Item(p, Path(depth)) if depth is not None else None
        if item is None:
            view = view_of(p.stem)
            if view is None:
                problems.append(f"{inputs.shown(p)}: the name is not camvis2's "
                                "{cam}_{pos}_{YYYY-MM-DD}_{HHMM}, so --raw cannot find its view's depth map; "
                                "pass --depth")
                continue
            item = Item(p, Path(raw_dir) / "depth_maps" / f"{view}.npy")
        if item.path not in seen:
            seen.add(item.path)
            items.append(item)
    return items, problems


@dataclass(eq=False)
class _Image:
    """One image on its way through predict_items: read and cut by the producer, scored in batches."""

    item: Item
    sha256: str
    rows: np.ndarray
    cols: np.ndarray
    depth_m: np.ndarray
    source: Any                      # its BatchSource; dropped once every patch is scored
    rgb: np.ndarray | None = None    # kept for --map only
    depth: np.ndarray | None = None
    scores: np.ndarray = field(default_factory=lambda: np.zeros(0, np.float32))
    left: int = 0


QUEUE_IMAGES = 1
"""Images read ahead of the network. Memory bound: the image the network scores, QUEUE_IMAGES
prepared ones and the one being read, each its decoded RGB (dropped unless --map), its view's
depth map, centres and depth levels (shared by a view's images) and its pyramid (1/3 of the RGB for factors 2..32), plus one
batch (batch_size x 4 L x P x P float32: 335 MB at the paper's 256 x 20 x 128 x 128)."""


def predict_items(items: Sequence[Item], model: Model, *, patches: int = DEFAULT_PATCHES, stride: int | None = None,
                  seed: int = 0, batch_size: int = DEFAULT_BATCH, map_dir: str | os.PathLike | None = None,
                  max_pixels: int = DEFAULT_MAX_PIXELS, truth: dict[str, float] | None = None,
                  on_done: Callable[[], None] | None = None) -> tuple[list[dict[str, Any]], list[str]]:
    """(rows, problems) of `items` in order; a bad image is one problem line, the others go on.

    A producer thread reads, samples and builds the pyramid of the next images while the network
    scores the current one (QUEUE_IMAGES ahead); patches of consecutive images share batches of
    `batch_size`. `truth`: true visibility per image stem (RAW/visibility.csv) for the error columns.
    """
    rows: list[dict[str, Any]] = []
    problems: list[str] = []
    done = on_done or (lambda: None)

    def finish(img: _Image) -> None:
        result = _result(img, model)
        rows.append(output_row(result, img, model, truth))
        if map_dir is not None:
            name = result.image if stems.count(result.image) == 1 else f"{result.image}-{img.sha256[:8]}"
            try:
                write_map(result, img.rgb, img.depth, Path(map_dir) / f"{name}.png")
            except (PredictError, OSError) as e:
                problems.append(f"{inputs.shown(img.item.image)}: the map was not written ({e})")
        done()

    def prepare(item: Item) -> _Image:
        return _prepare(item, model, depths, patches, stride, seed, max_pixels, keep=map_dir is not None)

    depths: dict[Path, _View | PredictError] = {}
    stems = [item.image.stem for item in items]  # two images of one name: their maps carry the digest too
    batcher = _Batcher(model, batch_size, finish)
    for got in _read_ahead(items, prepare):
        if isinstance(got, PredictError):
            problems.append(str(got))
            done()
        else:
            batcher.add(got)
    batcher.flush()
    return rows, problems


def _prepare(item: Item, model: Model, depths: dict[Path, Any], patches: int, stride: int | None, seed: int,
             max_pixels: int, keep: bool) -> _Image:
    """An image read, checked against its depth map and model, its centres drawn and pyramid built."""
    from camvis.job.batches import BatchSource

    rgb, digest = inputs.read_image_file(item.image, max_pixels)
    if item.depth not in depths:  # an archive has thousands of images per depth map: keep the last
        depths.clear()
        try:
            depths[item.depth] = _View(read_depth(item.depth))
        except PredictError as e:
            depths[item.depth] = e
    view = depths[item.depth]
    if isinstance(view, PredictError):
        raise PredictError(f"{inputs.shown(item.image)}: its depth map: {view}")
    depth = view.depth
    check_inputs(rgb, depth, model, inputs.shown(item.image), inputs.shown(item.depth))
    if view.centres is None:  # drawn once per view: they depend on its depth map and the seed alone
        view.centres = (grid_centres(depth, model.patch_size, stride) if stride is not None
                        else sampled_centres(depth, model.patch_size, patches, seed))
        for a in view.centres:
            a.setflags(write=False)  # shared by the view's images
    rows, cols = view.centres
    if rows.size and view.levels is None:
        view.levels = _depth_levels(depth, model)
    source = (BatchSource(image_store(rgb, depth, rows, cols, model, view.levels), model.factors, model.device)
              if rows.size else None)
    return _Image(item, digest, rows, cols, depth[rows, cols].astype(np.float32), source,
                  rgb if keep else None, depth if keep else None, np.zeros(rows.size, np.float32), int(rows.size))


@dataclass(eq=False)
class _View:
    """A view's depth map and what each of its images shares: its patch centres (2.6 s of a
    paper-size image's path when drawn per image) and its depth levels."""

    depth: np.ndarray
    centres: tuple[np.ndarray, np.ndarray] | None = None
    levels: dict[int, np.ndarray] | None = None


def _read_ahead(items: Sequence[Item], prepare: Callable[[Item], _Image]) -> Any:
    """prepare(item) of each item in order, made by a producer thread at most QUEUE_IMAGES ahead;
    a PredictError stands for its item. Anything else the producer raises is raised here."""
    import queue
    import threading

    results: queue.Queue = queue.Queue(maxsize=QUEUE_IMAGES)
    stop = threading.Event()
    end = object()

    def put(value: Any) -> bool:
        while not stop.is_set():
            try:
                results.put(value, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def produce() -> None:
        try:
            for item in items:
                try:
                    value: Any = prepare(item)
                except PredictError as e:
                    value = e
                if not put(value):
                    return
            put(end)
        except BaseException as e:  # noqa: BLE001: handed to the consumer, which raises it
            put(_Crash(e))

    thread = threading.Thread(target=produce, name="camvis-predict-reader", daemon=True)
    thread.start()
    try:
        while True:
            value = results.get()
            if value is end:
                return
            if isinstance(value, _Crash):
                raise value.error
            yield value
    finally:
        stop.set()
        thread.join()


@dataclass(frozen=True)
class _Crash:
    error: BaseException


class _Batcher:
    """Fills one reused batch buffer with the patches of consecutive images and scores it when full;
    `finish(image)` once all of an image's patches are scored (images finish in order)."""

    def __init__(self, model: Model, batch_size: int, finish: Callable[[_Image], None]) -> None:
        self.model, self.size, self.finish = model, batch_size, finish
        self.buffer: Any = None
        self.fill = 0
        self.segments: list[tuple[_Image, int, int]] = []

    def add(self, img: _Image) -> None:
        import torch

        n = img.rows.size
        if not n:
            self.flush()  # keeps the images in order
            self.finish(img)
            return
        if self.buffer is None:
            self.buffer = img.source._empty((self.size, img.source.n_channels, img.source.patch_size,
                                             img.source.patch_size), False)
        start = 0
        while start < n:
            take = min(self.size - self.fill, n - start)
            idx = torch.arange(start, start + take, dtype=torch.int64)
            img.source.batch(idx, out=self.buffer[self.fill:self.fill + take])
            self.segments.append((img, start, take))
            self.fill += take
            start += take
            if self.fill == self.size:
                self.flush()

    def flush(self) -> None:
        if not self.fill:
            return
        p = self.model.forward(self.buffer[:self.fill])
        offset, segments = 0, self.segments
        self.fill, self.segments = 0, []
        for img, start, take in segments:
            img.scores[start:start + take] = p[offset:offset + take]
            offset += take
            img.left -= take
            if not img.left:
                img.source = None  # its pyramid goes
                self.finish(img)


def _result(img: _Image, model: Model) -> ImageResult:
    name = img.item.image.stem
    table = pd.DataFrame({"center_h": img.rows, "center_w": img.cols, "depth_m": img.depth_m,
                          "p_visible": img.scores})
    view = view_of(name) or img.item.depth.stem
    if not img.rows.size:
        return ImageResult(name, view, timestamp_of(name), math.nan, "no_patches", math.nan, 0, model.model_id,
                           None, table)
    fit = calibrated_fit(vis.estimate(img.depth_m, img.scores), model.info)
    return ImageResult(name, view, timestamp_of(name), float(fit.visibility_m), fit.flag, fit.quality,
                       int(img.rows.size), model.model_id, fit, table)


def output_row(result: ImageResult, img: _Image, model: Model, truth: dict[str, float] | None) -> dict[str, Any]:
    """One row of camvis-predict's output (ROW_COLUMNS)."""
    true = (truth or {}).get(result.image, math.nan)
    with np.errstate(invalid="ignore", divide="ignore"):
        error = float(np.log10(result.visibility_m / true)) if true > 0 else math.nan
    return {**result.row(), "true_visibility_m": true, "log10_error": error if math.isfinite(error) else math.nan,
            "runtime": model.runtime, "path": img.item.path, "sha256": img.sha256}


def write_map(result: ImageResult, rgb: np.ndarray, depth: np.ndarray, path: Path) -> Path:
    from camvis.plots.prediction import plot_prediction_map

    return plot_prediction_map(result, rgb, depth, path)
