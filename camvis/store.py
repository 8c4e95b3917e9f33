"""Building and opening the Zarr patch store (format "camvis-patch-store", version 1).

A store is one Zarr v3 directory holding, per demagnification factor f, the whole images
(`levels/{f}/images`, uint8 (n_images, 3, H//f, W//f)) and log-depth maps
(`levels/{f}/depth`, float32 (n_views, 1, H//f, W//f), log10 metres, NaN -> -1), one chunk
per image; the patch table (`patches/*`, full-resolution centres drawn with camvis2's
depth-balanced sampling, camvis.sampling); per-image candidate depth histograms
(`sampling/*`, kept for the sampling figure); and root attributes (shapes, views,
normalization statistics from camvis.norm_stats, provenance).

Level pixel j stands for full-resolution pixels [j f, (j + 1) f): images are block means
(PIL BOX over the largest multiple of f), depth is the block's centre pixel. So a patch
centred at full-resolution (h, w) is centred at (h // f, w // f) on level f.
"""

from __future__ import annotations

import datetime as _dt
import io
import json
import os
import re
import shutil
import socket
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator, Sequence

import numpy as np
import zarr
from PIL import Image

from camvis import __version__, raw
from camvis.errors import RawDataError, StoreError
from camvis.norm_stats import NormStats
from camvis.progress import progress_bar
from camvis.sampling import N_DEPTH_BINS, sample_centres_with_histogram
# Defined beside the launcher's zarr-free reader; re-exported as store.FORMAT_NAME / FORMAT_VERSION.
from camvis.store_info import FORMAT_NAME as FORMAT_NAME, FORMAT_VERSION as FORMAT_VERSION

TABLE_COLUMNS = {"center_h": "int32", "center_w": "int32", "label": "uint8",
                 "depth": "float32", "image": "int32", "view": "int32"}
# Build parameters that decide whether an existing store can be kept as it is.
_BUILD_KEYS = ("raw_dir", "factors", "patch_size", "patches_per_image", "seed")


@dataclass(frozen=True, eq=False)
class PatchStore:
    """An opened store: small metadata in memory, the pyramid as lazy arrays."""

    path: Path | None
    factors: tuple[int, ...]
    patch_size: int
    image_shape: tuple[int, int]
    views: tuple[str, ...]
    images: tuple[str, ...]
    image_view: np.ndarray                 # int32 (n_images,)
    table: dict[str, np.ndarray]           # TABLE_COLUMNS, all of length n_patches
    norm_mean: np.ndarray                  # float32 (n_factors, 4): R, G, B (0..255), log-depth
    norm_std: np.ndarray                   # float32 (n_factors, 4)
    levels: dict[int, tuple[Any, Any]]     # f -> (images, depth): zarr arrays or numpy
    attrs: dict[str, Any]

    @property
    def n_patches(self) -> int:
        return int(len(self.table["label"]))


# --------------------------------------------------------------------------- building


def build(raw_dir: str | os.PathLike, store_path: str | os.PathLike, *,
          factors: Sequence[int] = (2, 4, 8, 16, 32), patch_size: int = 128,
          patches_per_image: int = 500, seed: int = 0, force: bool = False, progress: bool = True,
          figure_image: str | None = None, figure: bool | str | os.PathLike = True) -> PatchStore:
    """Build the store at `store_path` from camvis2's raw layout in `raw_dir`.

    An existing store built with the same parameters (raw dir, factors, patch size,
    patches per image, seed; raw file contents are not compared) is kept and returned;
    one built otherwise is a StoreError unless force=True, which replaces it once the new
    one is complete. The store is written under `.NAME.tmp-<host>-<pid>` beside it and
    renamed at the end, so a failed build leaves nothing under the final name. Memory holds
    about one full-size image, its labels and its view's depth at a time.
    The sampling figure of `figure_image` (default: the first image) goes to
    `figure` (True: `STORE.sampling.png` beside the store, False: none, or a path).
    """
    raw_dir, final = Path(raw_dir).resolve(), Path(store_path).resolve()
    factors = _check_args(factors, patch_size, patches_per_image, seed)
    params = {"raw_dir": str(raw_dir), "factors": list(factors), "patch_size": patch_size,
              "patches_per_image": patches_per_image, "seed": seed}
    _remove_stale(final)
    if final.exists() and not force:
        return _keep_existing(final, params)
    if final.exists():
        _check_replaceable(final)
    # One pass over the raw data: each file is decoded once, checked (as raw.check) and
    # written; its problems are raised before the rename, so a bad raw dir leaves nothing.
    reader = raw.RawReader(raw_dir)
    try:
        if reader.problems:  # broken layout: nothing to build; raise every problem, as raw.check
            raise RawDataError("raw layout problems")
        shape = _prepare(reader.dataset, factors, patch_size, figure, figure_image)
    except (RawDataError, StoreError, OSError, ValueError):
        reader.read_all(progress)  # raw problems first (all of them), as when check ran first
        reader.raise_problems()
        raise
    tmp = _scratch(final, "tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        _write_store(tmp, reader, shape, factors, patch_size, patches_per_image, seed, params,
                     progress)
        _swap_in(tmp, final)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    store = open_store(final)
    if figure is not False:
        out = final.with_name(final.name + ".sampling.png") if figure is True else Path(figure)
        sampling_figure(store, figure_image, out)
    return store


def _check_args(factors: Sequence[int], patch_size: int, patches_per_image: int,
                seed: int) -> tuple[int, ...]:
    facs = tuple(int(f) for f in factors)
    if not facs or any(f < 1 for f in facs) or len(set(facs)) != len(facs):
        raise StoreError(f"factors must be distinct positive integers, got {list(factors)}")
    if patch_size < 2:
        raise StoreError(f"patch_size must be >= 2, got {patch_size}")
    if patches_per_image < 1:
        raise StoreError(f"patches_per_image must be >= 1, got {patches_per_image}")
    if seed < 0:
        raise StoreError(f"seed must be >= 0, got {seed}")
    return tuple(sorted(facs))


def _keep_existing(final: Path, params: dict[str, Any]) -> PatchStore:
    store = open_store(final)
    built = store.attrs.get("build", {})
    differ = [k for k in _BUILD_KEYS if built.get(k) != params[k]]
    if differ:
        got = ", ".join(f"{k}={built.get(k)!r} (asked {params[k]!r})" for k in differ)
        raise StoreError(f"{final} exists and was built with {got}; "
                         "pass force=True (camvis-data build --force) to rebuild it")
    return store


def _check_replaceable(final: Path) -> None:
    """force replaces camvis stores (any version) and empty directories, never other data."""
    if final.is_dir() and not any(final.iterdir()):
        return
    try:
        attrs = dict(zarr.open_group(final, mode="r").attrs)
    except (FileNotFoundError, ValueError, OSError) as e:
        raise StoreError(f"{final} exists and is not a camvis store; refusing to replace it") from e
    if attrs.get("format") != FORMAT_NAME:
        raise StoreError(f"{final} exists and is not a camvis store (no format "
                         f"{FORMAT_NAME!r}); refusing to replace it")


def _host() -> str:
    """This machine's name, safe in a file name (pid is parsed after its last '-')."""
    return re.sub(r"[^A-Za-z0-9._-]", "_", socket.gethostname()) or "unknown-host"


def _scratch(final: Path, kind: str) -> Path:
    """`.NAME.tmp-<host>-<pid>` / `.NAME.old-<host>-<pid>` beside the store: the host is in the
    name because a pid only means something on its own host (stores live on shared file systems)."""
    return final.with_name(f".{final.name}.{kind}-{_host()}-{os.getpid()}")


def _remove_stale(final: Path) -> None:
    """Temp dirs of builds on this host whose process is gone (killed mid-build).

    A `.old-` store whose build died between its two renames is the last good store:
    it is put back when nothing took its place, not deleted. Entries of other hosts are
    left alone: whether their build still runs cannot be told from here."""
    host = _host()
    for prefix in (f".{final.name}.tmp-", f".{final.name}.old-"):
        for path in final.parent.glob(prefix + "*"):
            owner, _, pid = path.name[len(prefix):].rpartition("-")
            if owner != host or not pid.isdigit() or _alive(int(pid)):
                continue
            if prefix.endswith(".old-") and not final.exists():
                os.replace(path, final)
            else:
                shutil.rmtree(path, ignore_errors=True)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _swap_in(tmp: Path, final: Path) -> None:
    """Rename the complete store into place; an old store goes only once the new one is in."""
    if not final.exists():
        os.replace(tmp, final)
        return
    old = _scratch(final, "old")
    shutil.rmtree(old, ignore_errors=True)
    os.replace(final, old)
    try:
        os.replace(tmp, final)
    except BaseException:
        os.replace(old, final)
        raise
    shutil.rmtree(old, ignore_errors=True)


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
                 params: dict[str, Any], progress: bool) -> None:
    """Write while `reader` decodes and checks each file once; its problems are raised
    before anything marks the directory as a store."""
    ds = reader.dataset
    index = {img.name: i for i, img in enumerate(ds.images)}
    root = zarr.open_group(tmp, mode="w", zarr_format=3)
    levels = {f: _create_level(root, f, shape, len(ds.images), len(ds.views)) for f in factors}
    stats = NormStats(factors)
    rows: list[dict[str, np.ndarray]] = []
    counts = np.zeros((len(ds.images), N_DEPTH_BINS), np.int64)
    edges = np.zeros((len(ds.images), N_DEPTH_BINS + 1), np.float64)
    written: set[str] = set()
    with progress_bar("building store", len(ds.images), enabled=progress) as advance:
        # Views in order, each view's images by name: the depth map is loaded once per view,
        # and the statistics accumulate in a fixed order (same seed -> same store).
        for img, rgb, labels, depth in reader.images():
            i, v = index[img.name], ds.views.index(img.view)
            if img.view not in written:
                _write_depth(levels, stats, v, depth)
                written.add(img.view)
            _write_image(levels, stats, i, rgb)
            rng = np.random.default_rng([seed, i])  # per image: order-independent
            h, w, _, counts[i], edges[i] = sample_centres_with_histogram(
                labels, depth, per_image, patch_size, rng)
            rows.append(_table_rows(h, w, labels[h, w], depth[h, w], i, v))
            del rgb, labels, depth  # none held while the next image is decoded
            advance()
    reader.raise_problems()  # every problem of the raw data, as raw.check lists them
    _write_table(root, rows, ds)
    root.create_array("sampling/counts", data=counts)
    root.create_array("sampling/edges", data=edges)
    mean, std = stats.result()
    # The format attribute is written last: without it nothing counts as a store.
    root.attrs.update(_root_attrs(ds, factors, patch_size, shape, mean, std, params))


def _create_level(root: zarr.Group, f: int, shape: tuple[int, int], n_img: int,
                  n_view: int) -> tuple[zarr.Array, zarr.Array]:
    hf, wf = shape[0] // f, shape[1] // f
    images = root.create_array(f"levels/{f}/images", shape=(n_img, 3, hf, wf),
                               chunks=(1, 3, hf, wf), dtype="uint8", fill_value=0)
    depth = root.create_array(f"levels/{f}/depth", shape=(n_view, 1, hf, wf),
                              chunks=(1, 1, hf, wf), dtype="float32", fill_value=-1.0)
    return images, depth


def _write_image(levels: dict[int, tuple[zarr.Array, zarr.Array]], stats: NormStats, i: int,
                 rgb: np.ndarray) -> None:
    pil = Image.fromarray(rgb)
    for f, (images, _) in levels.items():
        hf, wf = rgb.shape[0] // f, rgb.shape[1] // f
        # box= crops to a multiple of f, so BOX is the exact f x f block mean.
        level = np.asarray(pil.resize((wf, hf), Image.Resampling.BOX, box=(0, 0, wf * f, hf * f)))
        images[i] = level.transpose(2, 0, 1)
        stats.add_rgb(f, level)


def _write_depth(levels: dict[int, tuple[zarr.Array, zarr.Array]], stats: NormStats, v: int,
                 depth: np.ndarray) -> None:
    for f, (_, depth_arr) in levels.items():
        hf, wf = depth.shape[0] // f, depth.shape[1] // f
        block_centres = depth[f // 2::f, f // 2::f][:hf, :wf]
        level = log_depth(block_centres)
        depth_arr[v, 0] = level
        stats.add_depth(f, level)


def log_depth(depth: np.ndarray) -> np.ndarray:
    """log10 of depth in metres as float32; NaN, non-finite or non-positive depth -> -1."""
    with np.errstate(invalid="ignore", divide="ignore"):
        out = np.log10(depth.astype(np.float32))
    out[~np.isfinite(out) | ~(depth > 0)] = -1.0
    return out


def _table_rows(h: np.ndarray, w: np.ndarray, label: np.ndarray, depth: np.ndarray, i: int,
                v: int) -> dict[str, np.ndarray]:
    return {"center_h": h, "center_w": w, "label": label.astype(np.uint8),
            "depth": depth.astype(np.float32), "image": np.full(h.size, i, np.int32),
            "view": np.full(h.size, v, np.int32)}


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


def _root_attrs(ds: raw.RawDataset, factors: tuple[int, ...], patch_size: int,
                shape: tuple[int, int], mean: np.ndarray, std: np.ndarray,
                params: dict[str, Any]) -> dict[str, Any]:
    visibility = raw.read_visibility(ds.root)
    synth_json = ds.root / "synth.json"  # camvis.synth's parameters, when it made the data
    synth = json.loads(synth_json.read_text()) if synth_json.is_file() else None
    return {
        "factors": list(factors), "patch_size": patch_size, "image_shape": list(shape),
        "views": list(ds.views), "images": [img.name for img in ds.images],
        "image_view": [ds.views.index(img.view) for img in ds.images],
        "visibility_m": [visibility.get(img.name) if visibility else None for img in ds.images],
        "norm_mean": mean.tolist(), "norm_std": std.tolist(), "n_depth_bins": N_DEPTH_BINS,
        "build": params,
        "provenance": {"raw_dir": str(ds.root), "synth_sidecar": visibility is not None,
                       "synth": synth,
                       "seed": params["seed"], "patches_per_image": params["patches_per_image"],
                       "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
                       "camvis_version": __version__},
        "format": FORMAT_NAME, "format_version": FORMAT_VERSION,
    }


# --------------------------------------------------------------------------- opening


def open_store(path: str | os.PathLike) -> PatchStore:
    """Open a store lazily (the pyramid stays on disk; the patch table is read)."""
    path = Path(path)
    if not path.exists():
        raise StoreError(f"{path}: no such store (build it with camvis-data build)")
    try:
        root = zarr.open_group(path, mode="r")
    except (FileNotFoundError, ValueError, OSError) as e:
        raise StoreError(f"{path}: not a Zarr group, so not a camvis store") from e
    attrs = dict(root.attrs)
    if attrs.get("format") != FORMAT_NAME:
        raise StoreError(f"{path}: not a camvis store (attribute format={attrs.get('format')!r}, "
                         f"expected {FORMAT_NAME!r}); an interrupted build or another tool's data?")
    if attrs.get("format_version") != FORMAT_VERSION:
        raise StoreError(f"{path}: store format version {attrs.get('format_version')!r}, this "
                         f"camvis reads version {FORMAT_VERSION}; rebuild it with "
                         "camvis-data build --force")
    factors = tuple(int(f) for f in attrs["factors"])
    return PatchStore(
        path=path, factors=factors, patch_size=int(attrs["patch_size"]),
        image_shape=(int(attrs["image_shape"][0]), int(attrs["image_shape"][1])),
        views=tuple(attrs["views"]), images=tuple(attrs["images"]),
        image_view=np.asarray(attrs["image_view"], np.int32),
        table={k: root[f"patches/{k}"][:] for k in TABLE_COLUMNS},
        norm_mean=np.asarray(attrs["norm_mean"], np.float32),
        norm_std=np.asarray(attrs["norm_std"], np.float32),
        levels={f: (root[f"levels/{f}/images"], root[f"levels/{f}/depth"]) for f in factors},
        attrs=attrs)


# --------------------------------------------------------------------------- summary


def summary(store: PatchStore | str | os.PathLike) -> dict[str, Any]:
    """What `camvis-data info` shows, as plain JSON-able data."""
    store = store if isinstance(store, PatchStore) else open_store(store)
    label, view = store.table["label"], store.table["view"]
    views = [{"view": name, "images": int(np.sum(store.image_view == v)),
              "visible": int(np.sum((view == v) & (label == raw.LABEL_VISIBLE))),
              "nonvisible": int(np.sum((view == v) & (label == raw.LABEL_NONVISIBLE)))}
             for v, name in enumerate(store.views)]
    levels = [{"factor": f, "images": list(store.levels[f][0].shape),
               "depth": list(store.levels[f][1].shape),
               "norm_mean": store.norm_mean[k].tolist(), "norm_std": store.norm_std[k].tolist()}
              for k, f in enumerate(store.factors)]
    return {"path": str(store.path) if store.path else None,
            "format_version": store.attrs.get("format_version"),
            "images": len(store.images), "views": views, "patches": store.n_patches,
            "patch_size": store.patch_size, "image_shape": list(store.image_shape),
            "levels": levels, "size_bytes": _disk_size(store.path) if store.path else None,
            "provenance": store.attrs.get("provenance", {})}


def format_summary(store: PatchStore | str | os.PathLike | dict[str, Any]) -> str:
    """summary() as text tables (rich, rendered without colour)."""
    from rich.console import Console
    from rich.table import Table

    info = store if isinstance(store, dict) else summary(store)
    out = io.StringIO()
    console = Console(file=out, width=110, color_system=None, force_terminal=False)
    size = info["size_bytes"]
    console.print(f"store {info['path']}  (format version {info['format_version']}, "
                  f"{_human(size) if size is not None else '?'} on disk)")
    console.print(f"{info['images']} images of {info['image_shape'][0]} x "
                  f"{info['image_shape'][1]}, {len(info['views'])} views, {info['patches']} "
                  f"patches of {info['patch_size']} px")
    views = Table("view", "images", "visible", "non-visible", title="patches per view")
    for row in info["views"]:
        views.add_row(row["view"], *(str(row[k]) for k in ("images", "visible", "nonvisible")))
    levels = Table("factor", "images", "depth", "mean R G B logD", "std R G B logD",
                   title="levels")
    for lv in info["levels"]:
        levels.add_row(str(lv["factor"]), " x ".join(map(str, lv["images"])),
                       " x ".join(map(str, lv["depth"])), _floats(lv["norm_mean"]),
                       _floats(lv["norm_std"]))
    console.print(views)
    console.print(levels)
    prov = info["provenance"]
    console.print("provenance: " + ", ".join(f"{k}={v}" for k, v in prov.items() if k != "synth"))
    if prov.get("synth"):
        keys = ("seed", "views", "images_per_view", "size", "vis_range")
        console.print("synthetic: " + ", ".join(f"{k}={prov['synth'].get(k)}" for k in keys))
    return out.getvalue()


def _floats(values: Sequence[float]) -> str:
    return " ".join(f"{v:.2f}" for v in values)


def _human(n: int) -> str:
    size = float(n)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if size < 1024 or unit == "GiB":
            return f"{size:.1f} {unit}"
        size /= 1024
    raise AssertionError("unreachable")


def _disk_size(path: Path) -> int:
    return sum(p.stat().st_size for p in _files(path))


def _files(path: Path) -> Iterator[Path]:
    for dirpath, _, names in os.walk(path):
        for name in names:
            yield Path(dirpath) / name


# --------------------------------------------------------------------------- figure


def sampling_figure(store: PatchStore | str | os.PathLike, image_name: str | None = None,
                    out_png: str | os.PathLike | None = None) -> Path:
    """camvis2's 2x2 sampling illustration for one image of a store.

    Everything comes from the store itself: the candidates' log-depth histogram
    (`sampling/counts`, `sampling/edges`, recorded at build time: exactly what the weights
    were computed from), the image's rows of the patch table, and its image at the
    smallest factor. Default image: the first; default file: `STORE.sampling.png`.
    """
    from camvis.plots.sampling import plot_sampling

    store = store if isinstance(store, PatchStore) else open_store(store)
    if store.path is None:
        raise StoreError("sampling_figure needs a store on disk (it reads sampling/*)")
    name = image_name if image_name is not None else store.images[0]
    if name not in store.images:
        known = ", ".join(store.images[:5]) + (", ..." if len(store.images) > 5 else "")
        raise StoreError(f"{store.path}: no image {name!r} in the store (it has {known})")
    i = store.images.index(name)
    root = zarr.open_group(store.path, mode="r")
    rows = store.table["image"] == i
    f = store.factors[0]
    out = Path(out_png) if out_png is not None else store.path.with_name(
        store.path.name + ".sampling.png")
    return plot_sampling(
        out, image=np.asarray(store.levels[f][0][i]).transpose(1, 2, 0), factor=f,
        counts=root["sampling/counts"][i], log_edges=root["sampling/edges"][i],
        centre_h=store.table["center_h"][rows], centre_w=store.table["center_w"][rows],
        label=store.table["label"][rows], depth=store.table["depth"][rows], title=name)
