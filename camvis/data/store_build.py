"""Building the Zarr patch store that camvis.data.store opens (its layout is described there).

`build` reads camvis2's raw layout in one pass (camvis.data.raw.RawReader: each file decoded and
checked once), writes every level of each image and view, draws the patch centres with
depth-balanced sampling (camvis.data.sampling), accumulates the normalization statistics
(camvis.data.norm_stats) and writes the root attributes last. The store is staged beside its
final name and renamed in when complete (camvis.atomic_folder).
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import json
import os
from pathlib import Path
from dataclasses import dataclass, field
from typing import Any, Sequence

import numpy as np
import zarr
from PIL import Image

from camvis import __version__
from camvis.bounds import patch_size_problem
from camvis.data import camvis2, raw, raw_identity
from camvis import atomic_folder
from camvis.data.parallel_build import parallel_images
from camvis.data import store_verify
from camvis.errors import RawDataError, StoreError
from camvis.io import format_bytes, json_copy, reap_stale_tmp
from camvis.data.norm_stats import NormStats, PerViewStats
from camvis.progress import progress_bar
from camvis.bookkeeping.replace_guard import Marker, check_replaceable, json_object
from camvis.data.sampling import N_DEPTH_BINS, sample_centres_with_histogram
from camvis.data.store import TABLE_COLUMNS, PatchStore, open_store, sampling_figure
from camvis.data.store_info import NORM_GLOBAL, NORM_PER_FOLD
from camvis.data.store_info import FORMAT_NAME, FORMAT_VERSION
from camvis.data.levels import create_level_array, depth_level, image_part, rgb_level, table_rows



def _is_camvis_store(path: Path) -> bool:
    attrs = json_object(path / "zarr.json").get("attributes", json_object(path / ".zattrs"))  # Zarr format 3 or 2
    return isinstance(attrs, dict) and attrs.get("format") == FORMAT_NAME


STORE = Marker("a camvis store", "camvis-data build", True, "zarr.json", _is_camvis_store, look_inside=False)
"""What camvis-data build --force may replace (camvis.bookkeeping.replace_guard)."""

# Build parameters that decide whether an existing store can be kept as it is (and the raw data it
# was built from: camvis.data.raw_identity).
_BUILD_KEYS = ("factors", "patch_size", "patches_per_image", "seed", "preprocessing")
_BUILD_DEFAULTS = {"preprocessing": camvis2.EXACT}  # stores built before the key existed
_BUILD_KEYS += ("compress",)  # zstd level arrays (format version 3 and older: always)
_BUILD_DEFAULTS["compress"] = True


def _built(built: dict[str, Any], key: str) -> Any:
    return built.get(key, _BUILD_DEFAULTS.get(key))


def build(raw_dir: str | os.PathLike, store_path: str | os.PathLike, *,
          factors: Sequence[int] = (2, 4, 8, 16, 32), patch_size: int = 128,
          patches_per_image: int = 500, seed: int = 0, force: bool = False, progress: bool = True,
          figure_image: str | None = None, figure: bool | str | os.PathLike = True,
          workers: int = 1, preprocessing: str = camvis2.EXACT, compress: bool = False) -> PatchStore:
    """Build the store at `store_path` from camvis2's raw layout in `raw_dir`.

    An existing store built with the same parameters (factors, patch size, patches per image,
    seed) from the same raw data (camvis.data.raw_identity: the same folder with the same file
    names and sizes, or the same contents elsewhere) is kept and returned;
    one built otherwise is a StoreError unless force=True, which replaces it once the new
    one is complete; one built with the same parameters in an older store format version is
    rebuilt. The store is written under `.NAME.tmp-<host>-<pid>` beside it and renamed at
    the end, so a failed build leaves nothing under the final name. Memory holds
    about one full-size image, its labels and its view's depth at a time.
    The sampling figure of `figure_image` (default: the first image) goes to
    `figure` (True: `STORE.sampling.png` beside the store, False: none, or a path).
    `workers` > 1 decodes, checks and writes that many images at once in separate processes;
    the store's bytes are the same as a serial build's (memory: one image per worker).
    `preprocessing`: "exact" (camvis's rules) or "camvis2" (camvis2's, camvis.data.camvis2).
    camvis2 stores are built serially (camvis2 draws every image's centres from one generator).
    `compress`: level arrays with zstd (for archives and transfer), else as raw bytes, one file per
    block, which jobs memory-map (camvis.data.store_map).
    """
    raw_dir, final = Path(raw_dir).resolve(), Path(store_path).resolve()
    factors = _check_args(factors, patch_size, patches_per_image, seed, workers)
    params = {"factors": list(factors), "patch_size": patch_size,
              "patches_per_image": patches_per_image, "seed": seed,
              "preprocessing": camvis2.check_mode(preprocessing)}
    params["compress"] = bool(compress)
    atomic_folder.remove_stale(final)
    reap_stale_tmp(final.parent)  # a killed build's sampling-figure .tmp
    if final.exists() and not force and not _older_format_of(final, params, raw_dir):
        return _keep_existing(final, params, raw_dir)
    if final.exists():  # --force, or an older format: only a camvis store is replaced
        check_replaceable(final, kind=STORE, inputs=(raw_dir,), error=StoreError)
    # One pass over the raw data: each file is decoded once, checked (as raw.check) and
    # written; its problems are raised before the rename, so a bad raw dir leaves nothing.
    reader = raw.RawReader(raw_dir)
    try:
        if reader.problems:  # broken layout: nothing to build; raise every problem, as raw.check
            raise RawDataError("raw layout problems")
        shape = _prepare(reader.dataset, factors, patch_size, figure, figure_image)
        params = {**raw_identity.identify(reader.dataset), **params}
    except (RawDataError, StoreError, OSError, ValueError):
        reader.read_all(progress)  # raw problems first (all of them), as when check ran first
        reader.raise_problems()
        raise
    # A full disk is a DiskFullError naming the store; the scratch goes whatever happens.
    needed = _raw_size(shape, factors, len(reader.dataset.images), len(reader.dataset.views))
    with atomic_folder.scratch_dir(final, f"up to {format_bytes(needed)}") as tmp:
        _write_store(tmp, reader, shape, factors, patch_size, patches_per_image, seed, params,
                     progress, workers)
        atomic_folder.swap_in(tmp, final)
    store = open_store(final)
    if figure is not False:
        out = final.with_name(final.name + ".sampling.png") if figure is True else Path(figure)
        sampling_figure(store, figure_image, out)
    return store


def _raw_size(shape: tuple[int, int], factors: tuple[int, ...], n_img: int, n_view: int) -> int:
    """Bytes of every level uncompressed (3 uint8 + 1 float32 per pixel): what a full disk
    reports as needed; compression writes less."""
    return sum((n_img * 3 + n_view * 4) * (shape[0] // f) * (shape[1] // f) for f in factors)


def _check_args(factors: Sequence[int], patch_size: int, patches_per_image: int,
                seed: int, workers: int = 1) -> tuple[int, ...]:
    facs = tuple(int(f) for f in factors)
    if not facs or any(f < 1 for f in facs) or len(set(facs)) != len(facs):
        raise StoreError(f"factors must be distinct positive integers, got {list(factors)}")
    problem = patch_size_problem(patch_size)  # a store the model cannot train on is refused before any write
    if problem is not None:
        raise StoreError(problem)
    if patches_per_image < 1:
        raise StoreError(f"patches_per_image must be >= 1, got {patches_per_image}")
    if seed < 0:
        raise StoreError(f"seed must be >= 0, got {seed}")
    if isinstance(workers, bool) or not isinstance(workers, int) or workers < 1:
        raise StoreError(f"workers must be an integer >= 1, got {workers!r}")
    return tuple(sorted(facs))


def _keep_existing(final: Path, params: dict[str, Any], raw_dir: Path) -> PatchStore:
    store = open_store(final)
    built = store.attrs.get("build", {})
    differ = [f"{k}={_built(built, k)!r} (asked {params[k]!r})" for k in _BUILD_KEYS
              if _built(built, k) != params[k]]
    other_raw = raw_identity.mismatch(built, raw_dir) if not differ else None  # the digest only if needed
    if differ or other_raw:
        got = ", ".join([*([other_raw] if other_raw else []), *differ])
        raise StoreError(f"{final} exists and was built with {got}; "
                         "pass force=True (camvis-data build --force) to rebuild it")
    return store


def _older_format_of(final: Path, params: dict[str, Any], raw_dir: Path) -> bool:
    """Whether `final` is this build in an older format version (so rebuilding loses nothing)."""
    try:
        attrs = dict(zarr.open_group(final, mode="r").attrs)
    except (FileNotFoundError, ValueError, OSError):
        return False
    built = attrs.get("build")
    return (attrs.get("format") == FORMAT_NAME and attrs.get("format_version") != FORMAT_VERSION
            and isinstance(built, dict) and all(_built(built, k) == params[k] for k in _BUILD_KEYS
                                                if k != "compress")  # older versions: always zstd
            and raw_identity.mismatch(built, raw_dir) is None)


def _image_shape(ds: raw.RawDataset) -> tuple[int, int]:
    """The one (H, W) of every view's depth map (memory-mapped, not read)."""
    shapes = {v: tuple(np.load(ds.depth_path(v), mmap_mode="r").shape[:2]) for v in ds.views}
    if len(set(shapes.values())) != 1:
        listing = ", ".join(f"{v}: {s}" for v, s in shapes.items())
        raise RawDataError(f"{ds.root}: all views must share one image shape, got {listing}")
    return next(iter(shapes.values()))  # type: ignore[return-value]


def _prepare(ds: raw.RawDataset, factors: tuple[int, ...], patch_size: int,
             figure: bool | str | os.PathLike, figure_image: str | None) -> tuple[int, int]:
    """The store's image shape, once the arguments are known to fit the raw data."""
    if figure is not False and figure_image is not None and figure_image not in {
            img.name for img in ds.images}:
        raise StoreError(f"figure_image {figure_image!r} is not an image of {ds.root}")
    shape = _image_shape(ds)
    if any(shape[0] // f < 1 or shape[1] // f < 1 for f in factors):
        raise StoreError(f"{ds.root}: factors {list(factors)} too large for images of "
                         f"{shape[0]} x {shape[1]}")
    if 2 * (patch_size // 2) >= min(shape):
        raise StoreError(f"{ds.root}: patch_size {patch_size} leaves no patch centre in "
                         f"{shape[0]} x {shape[1]} images (centres stay half a patch from "
                         "the border)")
    return shape


def _write_store(tmp: Path, reader: raw.RawReader, shape: tuple[int, int],
                 factors: tuple[int, ...], patch_size: int, per_image: int, seed: int,
                 params: dict[str, Any], progress: bool, workers: int = 1) -> None:
    """Write while `reader` decodes and checks each file once; its problems are raised
    before anything marks the directory as a store. `workers` > 1: images in that many processes."""
    ds = reader.dataset
    index = {img.name: i for i, img in enumerate(ds.images)}
    root = zarr.open_group(tmp, mode="w", zarr_format=3)
    mode = params["preprocessing"]
    levels = {f: _create_level(root, f, camvis2.level_shape(shape, f, mode), len(ds.images), len(ds.views),
                               params["compress"]) for f in factors}
    kind = camvis2.Camvis2Stats if mode == camvis2.CAMVIS2 else NormStats
    stats = PerViewStats(kind, factors, len(ds.views))  # per view: every fold's in one pass
    rows: list[dict[str, np.ndarray]] = []
    counts = np.zeros((len(ds.images), N_DEPTH_BINS), np.int64)
    edges = np.zeros((len(ds.images), N_DEPTH_BINS + 1), np.float64)
    sink = _Sink(levels, stats, mode, rows, counts, edges)
    with progress_bar("building store", len(ds.images), enabled=progress) as advance:
        if mode == camvis2.CAMVIS2:  # one generator over every image in order: serial by nature
            _camvis2_images(reader, index, sink, patch_size, per_image, seed, advance)
        else:
            _exact_images(reader, index, sink, tmp, factors, patch_size, per_image, seed, workers, advance)
    reader.raise_problems()  # every problem of the raw data, as raw.check lists them
    _write_table(root, rows, ds)
    root.create_array("sampling/counts", data=counts)
    root.create_array("sampling/edges", data=edges)
    attrs = _root_attrs(ds, factors, patch_size, shape, params)
    attrs.update(norm_attrs(stats, mode))
    # What open_store and check-store verify: every block as written (read back, so as zarr
    # decodes it), and a digest of the attributes as they read back from JSON.
    attrs["checksums"] = store_verify.record_checksums(root, [
        *(f"levels/{f}/{kind}" for f in factors for kind in ("images", "depth")),
        *(f"patches/{c}" for c in TABLE_COLUMNS), "sampling/counts", "sampling/edges"])
    attrs["digest"] = store_verify.attrs_digest(json_copy(attrs))
    # The format attribute is written last: without it nothing counts as a store.
    root.attrs.update(attrs)


@dataclass
class _Sink:
    """Where each image's share of the store goes, in image order (statistics add up in a fixed order:
    same seed -> same store)."""

    levels: dict[int, tuple[zarr.Array, zarr.Array]]
    stats: PerViewStats
    mode: str
    rows: list[dict[str, np.ndarray]]
    counts: np.ndarray
    edges: np.ndarray
    written: set[str] = field(default_factory=set)

    def depth(self, ds: raw.RawDataset, view: str, depth: np.ndarray) -> None:
        """The view's depth map, once per view."""
        if view not in self.written:
            _write_depth(self.levels, self.stats, ds.views.index(view), depth, self.mode)
            self.written.add(view)


def _exact_images(reader: raw.RawReader, index: dict[str, int], sink: _Sink, tmp: Path,
                  factors: tuple[int, ...], patch_size: int, per_image: int, seed: int, workers: int,
                  advance: Any) -> None:
    """camvis's rules, images in `workers` processes (views in order, each view's images by name)."""
    ds = reader.dataset
    if workers > 1:
        results = parallel_images(reader, tmp, factors, patch_size, per_image, seed, workers)
    else:
        images = {f: a for f, (a, _) in sink.levels.items()}
        results = ((img, depth, image_part(images, index[img.name], ds.views.index(img.view), rgb, labels, depth,
                                           patch_size, per_image, seed))
                   for img, rgb, labels, depth in reader.images())
    # closing: on an error the workers are stopped (and joined) before the scratch folder goes,
    # else they would write on into it
    with contextlib.closing(results):
        for img, depth, part in results:
            i, v = part["i"], ds.views.index(img.view)
            sink.depth(ds, img.view, depth)
            for f, hist in part["hists"].items():
                sink.stats.add_rgb_histogram(v, f, hist)
            sink.counts[i], sink.edges[i] = part["counts"], part["edges"]
            sink.rows.append(part["rows"])
            del depth, part
            advance()


def _camvis2_images(reader: raw.RawReader, index: dict[str, int], sink: _Sink, patch_size: int,
                    per_image: int, seed: int, advance: Any) -> None:
    """camvis2's rules: its levels and statistics, and its centres drawn from one generator over
    every image in name order (so one process)."""
    ds = reader.dataset
    shared_rng = _camvis2_rng(ds, seed)
    for img, rgb, labels, depth in reader.images():
        i, v = index[img.name], ds.views.index(img.view)
        sink.depth(ds, img.view, depth)
        _write_image(sink.levels, sink.stats, i, v, rgb, sink.mode)
        # the candidates' depth histogram only, for the sampling figure
        _, _, _, sink.counts[i], sink.edges[i] = sample_centres_with_histogram(
            labels, depth, 0, patch_size, np.random.default_rng([seed, i]))
        h, w = camvis2.sample_centres(labels, depth, per_image, patch_size, shared_rng)
        sink.rows.append(table_rows(h, w, labels[h, w], depth[h, w], i, v))
        del rgb, labels, depth  # none held while the next image is decoded
        advance()


def _camvis2_rng(ds: raw.RawDataset, seed: int) -> np.random.RandomState:
    """camvis2 draws every image's centres from one RandomState, images in name order: the
    reader's order (views in order, images by name) must be that order."""
    names = [img.name for img in sorted(ds.images, key=lambda img: (ds.views.index(img.view), img.name))]
    if names != sorted(names):
        raise StoreError(f"{ds.root}: preprocessing camvis2 needs the images' name order to group them by view "
                         "(camvis2 samples in name order); rename the views or build with preprocessing exact")
    return np.random.RandomState(seed)


def _create_level(root: zarr.Group, f: int, level: tuple[int, int], n_img: int,
                  n_view: int, compress: bool = True) -> tuple[zarr.Array, zarr.Array]:
    hf, wf = level
    return tuple(create_level_array(root, f"levels/{f}/{kind}", (n, c, hf, wf), compress)  # type: ignore[return-value]
                 for kind, n, c in (("images", n_img, 3), ("depth", n_view, 1)))


def _write_image(levels: dict[int, tuple[zarr.Array, zarr.Array]], stats: PerViewStats, i: int, v: int,
                 rgb: np.ndarray, mode: str = camvis2.EXACT) -> None:
    pil = Image.fromarray(rgb)
    for f, (images, _) in levels.items():
        level = camvis2.rgb_level(rgb, f) if mode == camvis2.CAMVIS2 else rgb_level(pil, f)
        images[i] = level.transpose(2, 0, 1)
        stats.add_rgb(v, f, level)


def _write_depth(levels: dict[int, tuple[zarr.Array, zarr.Array]], stats: PerViewStats, v: int,
                 depth: np.ndarray, mode: str = camvis2.EXACT) -> None:
    for f, (_, depth_arr) in levels.items():
        level = camvis2.depth_level(depth, f) if mode == camvis2.CAMVIS2 else depth_level(depth, f)
        depth_arr[v, 0] = level
        stats.add_depth(v, f, level)


def _write_table(root: zarr.Group, rows: list[dict[str, np.ndarray]], ds: raw.RawDataset) -> None:
    table = {k: np.concatenate([r[k] for r in rows]).astype(dt) if rows else np.zeros(0, dt)
             for k, dt in TABLE_COLUMNS.items()}
    if table["label"].size == 0:
        raise StoreError(f"{ds.root}: no patch centres in any image (labelled pixels with "
                         "finite depth at least half a patch from the border); smaller patch_size?")
    # Rows are grouped by view; sort by image so each image's patches are contiguous.
    order = np.argsort(table["image"], kind="stable")
    for name, column in table.items():
        root.create_array(f"patches/{name}", data=column[order])


def norm_attrs(stats: PerViewStats, mode: str) -> dict[str, Any]:
    """The normalization attributes: norm_mean / norm_std over every view (predict without a fold, info)
    and the rule jobs follow. exact: per fold, each fold's statistics over its training views only
    (norm_*_folds[v]: every view but views[v], the one fold v + 1 holds out), so the held-out view's
    pixels never reach its inputs' normalization; camvis2: camvis2's global rule."""
    mean, std = stats.result()
    out: dict[str, Any] = {"norm_mean": mean.tolist(), "norm_std": std.tolist()}
    if mode == camvis2.CAMVIS2:
        return {**out, "norm_rule": NORM_GLOBAL}
    folds_mean, folds_std = stats.held_out()
    return {**out, "norm_rule": NORM_PER_FOLD, "norm_mean_folds": folds_mean.tolist(),
            "norm_std_folds": folds_std.tolist()}


def _root_attrs(ds: raw.RawDataset, factors: tuple[int, ...], patch_size: int,
                shape: tuple[int, int], params: dict[str, Any]) -> dict[str, Any]:
    visibility = raw.read_visibility(ds.root)
    synth_json = ds.root / "synth.json"  # camvis.data.synth's parameters, when it made the data
    synth = json.loads(synth_json.read_text()) if synth_json.is_file() else None
    return {
        "factors": list(factors), "patch_size": patch_size, "image_shape": list(shape),
        "views": list(ds.views), "images": [img.name for img in ds.images],
        "image_view": [ds.views.index(img.view) for img in ds.images],
        "visibility_m": [visibility.get(img.name) if visibility else None for img in ds.images],
        "n_depth_bins": N_DEPTH_BINS,
        "preprocessing": params["preprocessing"],
        "build": params,
        "provenance": {"raw_dir": params["raw_dir"], "synth_sidecar": visibility is not None,
                       "synth": synth,
                       "seed": params["seed"], "patches_per_image": params["patches_per_image"],
                       "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
                       "camvis_version": __version__},
        "format": FORMAT_NAME, "format_version": FORMAT_VERSION,
    }
