"""Opening and summarizing the Zarr patch store (format "camvis-patch-store", version 2).

A store is one Zarr v3 directory holding, per demagnification factor f, the whole images
(`levels/{f}/images`, uint8 (n_images, 3, H//f, W//f)) and log-depth maps
(`levels/{f}/depth`, float32 (n_views, 1, H//f, W//f), log10 metres, NaN -> -1), one chunk
per image; the patch table (`patches/*`, full-resolution centres drawn with camvis2's
depth-balanced sampling, camvis.data.sampling); per-image candidate depth histograms
(`sampling/*`, kept for the sampling figure); and root attributes (shapes, views,
normalization statistics from camvis.data.norm_stats, provenance, a CRC-32 of every block and a
digest of the attributes). camvis.data.store_build writes it; camvis.data.store_verify checks it.

Level pixel j stands for full-resolution pixels [j f, (j + 1) f): images are block means
(PIL BOX over the largest multiple of f), depth is the block's centre pixel. So a patch
centred at full-resolution (h, w) is centred at (h // f, w // f) on level f.
"""

from __future__ import annotations

import io
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator, Sequence

import numpy as np
import zarr

from camvis.data import raw
from camvis.data import store_verify
from camvis.errors import StoreError
# Defined beside the launcher's zarr-free reader; re-exported as store.FORMAT_NAME / FORMAT_VERSION.
from camvis.data.store_info import FORMAT_NAME as FORMAT_NAME, FORMAT_VERSION as FORMAT_VERSION
from camvis.data.store_verify import TABLE_COLUMNS as TABLE_COLUMNS


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

    def read_image(self, f: int, i: int) -> np.ndarray:
        """Image i of level f, uint8 (3, H // f, W // f), checked against its build-time CRC-32
        (a missing chunk would otherwise read as black)."""
        return self._read(f"levels/{f}/images", self.levels[f][0], i)[0]

    def read_depth(self, f: int, v: int) -> np.ndarray:
        """Log-depth map of view v on level f, float32 (1, H // f, W // f), checked."""
        return self._read(f"levels/{f}/depth", self.levels[f][1], v)[0]

    def _read(self, name: str, array: Any, k: int) -> np.ndarray:
        return store_verify.read_block(f"store {self.path}", self.path, name, array, k,
                                       self.attrs.get("checksums", {}))


# --------------------------------------------------------------------------- opening


def open_store(path: str | os.PathLike) -> PatchStore:
    """Open a store lazily (the pyramid stays on disk; the patch table is read).

    Checked on every open (camvis.data.store_verify; cheap: metadata and the table only): the
    attributes' types and digest, every level's shape and dtype, the table's checksums and
    contents. Level blocks are checked when read (read_image, read_depth)."""
    path = Path(path)
    if not path.exists():
        raise StoreError(f"{path}: no such store (build it with camvis-data build)")
    try:
        root = store_verify.open_root(path)
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
    where = f"store {path}"
    schema = store_verify.check_attrs(where, attrs)
    levels, table = store_verify.open_arrays(where, path, root, schema)
    return PatchStore(
        path=path, factors=schema.factors, patch_size=schema.patch_size,
        image_shape=schema.image_shape, views=schema.views, images=schema.images,
        image_view=schema.image_view, table=table, norm_mean=schema.norm_mean,
        norm_std=schema.norm_std, levels=levels, attrs=attrs)


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
            "preprocessing": store.attrs.get("preprocessing", "exact"),
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
                  f"patches of {info['patch_size']} px; preprocessing {info.get('preprocessing', 'exact')}")
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
    counts, edges = (store._read(k, store_verify.open_array(f"store {store.path}", root, k), i)[0]
                     for k in ("sampling/counts", "sampling/edges"))
    rows = store.table["image"] == i
    f = store.factors[0]
    out = Path(out_png) if out_png is not None else store.path.with_name(
        store.path.name + ".sampling.png")
    return plot_sampling(
        out, image=store.read_image(f, i).transpose(1, 2, 0), factor=f,
        counts=counts, log_edges=edges,
        centre_h=store.table["center_h"][rows], centre_w=store.table["center_w"][rows],
        label=store.table["label"][rows], depth=store.table["depth"][rows], title=name)
