"""Opening and summarizing the Zarr patch store (format "camvis-patch-store", version 4; 2 and 3 read too).

A store is one Zarr v3 directory holding, per demagnification factor f, the whole images
(`levels/{f}/images`, uint8 (n_images, 3, H//f, W//f)) and log-depth maps
(`levels/{f}/depth`, float32 (n_views, 1, H//f, W//f), log10 metres, NaN -> -1), one chunk
per image; the patch table (`patches/*`, full-resolution centres drawn with camvis2's
depth-balanced sampling, camvis.data.sampling); per-image candidate depth histograms
(`sampling/*`, kept for the sampling figure); and root attributes (shapes, views,
normalization statistics from camvis.data.norm_stats: over all views, and under `norm_rule`
per-fold each fold's over its training views; provenance, a CRC-32 of every block and a
digest of the attributes). camvis.data.store_build writes it; camvis.data.store_verify checks it.

Level arrays are stored uncompressed (format version 4; one file of raw bytes per block) or with zstd
(`--compress`, and every older store). An uncompressed store's levels are memory-mapped at open
(camvis.data.store_map): every file size-checked and mapped from the directory the open resolved,
so the job never holds a private copy and a store rebuilt under its name later leaves it alone.

Level pixel j stands for full-resolution pixels [j f, (j + 1) f): images are block means
(PIL BOX over the largest multiple of f), depth is the block's centre pixel. So a patch
centred at full-resolution (h, w) is centred at (h // f, w // f) on level f.
"""

from __future__ import annotations

import io
import os
from collections import Counter
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator, Sequence

import numpy as np
import zarr

from camvis.data import raw
from camvis.data import store_map
from camvis.data import store_verify
from camvis.errors import ConfigError, StoreError
# Defined beside the launcher's zarr-free reader; re-exported as store.FORMAT_NAME / FORMAT_VERSION.
from camvis.data.store_info import FORMAT_NAME as FORMAT_NAME, FORMAT_VERSION as FORMAT_VERSION
from camvis.data.store_info import fold_view, missing_levels, version_problem
from camvis.data.store_info import NORM_GLOBAL, NORM_PER_FOLD
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
    levels: dict[int, tuple[Any, Any]]     # f -> (images, depth): store_map.MappedArray, zarr arrays or numpy
    attrs: dict[str, Any]
    norm_rule: str = NORM_GLOBAL           # store_verify.NORM_RULES: which statistics a fold's job uses
    norm_mean_folds: np.ndarray | None = None  # float32 (n_views, n_factors, 4) under per-fold; row v:
    norm_std_folds: np.ndarray | None = None   # over every view but views[v] (the one its fold holds out)

    @property
    def n_patches(self) -> int:
        return int(len(self.table["label"]))

    @property
    def mapped(self) -> bool:
        """Whether the levels are memory-mapped (an uncompressed store), so blocks are read in place."""
        return bool(self.levels) and all(isinstance(a, store_map.MappedArray) for pair in self.levels.values()
                                         for a in pair)

    def verify_levels(self) -> bool:
        """Mapped levels: every block's CRC-32, once per node and store (store_map.verify_once); True if
        this call checked. Compressed levels are checked block by block as they are read."""
        if not self.mapped or self.path is None:
            return False
        arrays = {a.name: a for pair in self.levels.values() for a in pair}
        return store_map.verify_once(f"store {self.path}", self.path, store_map.digest_of(self.attrs), arrays,
                                     self.attrs.get("checksums", {}))

    def normalization(self, fold: int | None, factors: Sequence[int] | None = None) -> Normalization:
        """The statistics a job on `fold` normalizes its inputs with (rows of `factors`, default all):
        under per-fold its training views' (every view but the held-out one), else the global ones;
        `fold` None (no fold: predict on new images, info): the global ones."""
        factors = self.factors if factors is None else tuple(factors)
        missing = missing_levels(factors, self.factors, f"store {self.path}")
        if missing:
            raise ConfigError(missing)
        rows = [self.factors.index(f) for f in factors]
        if fold is None or self.norm_rule != NORM_PER_FOLD or self.norm_mean_folds is None:
            return Normalization(self.norm_mean[rows], self.norm_std[rows], NORM_GLOBAL)
        view = fold_view(self.views, fold)
        if view is None:
            raise ConfigError(f"data.fold = {fold!r} is out of range: expected an integer in 1..{len(self.views)}, "
                              f"one fold per view of store {self.path} in sorted order")
        v = self.views.index(view)
        assert self.norm_std_folds is not None
        return Normalization(self.norm_mean_folds[v][rows], self.norm_std_folds[v][rows], NORM_PER_FOLD)

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


@dataclass(frozen=True, eq=False)
class Normalization:
    """The statistics a job's inputs are normalized with: float32 (L, 4) rows of its factors, and the
    rule that chose them (store_verify.NORM_RULES)."""

    mean: np.ndarray
    std: np.ndarray
    rule: str

    @property
    def label(self) -> str:
        """How scores.json and model.json say it."""
        return NORM_LABELS.get(self.rule, self.rule)

    def record(self) -> dict[str, Any]:
        """Plain data for checkpoints and model.json: the rule and the exact statistics."""
        return {"rule": self.rule, "mean": np.asarray(self.mean, np.float32).tolist(),
                "std": np.asarray(self.std, np.float32).tolist()}


NORM_LABELS = {NORM_PER_FOLD: "per-fold (training views)", NORM_GLOBAL: "global (all views)"}


# --------------------------------------------------------------------------- opening

opens: Counter[str] = Counter()
"""How often this process called open_store on each path (as given): a job opens its store once
(camvis.job.startup.open_job_store), which tests/job/test_startup.py holds it to."""


def open_store(path: str | os.PathLike) -> PatchStore:
    """Open a store lazily (the pyramid stays on disk; the patch table is read).

    Checked on every open (camvis.data.store_verify; cheap: metadata and the table only): the
    attributes' types and digest, every level's shape and dtype, the table's checksums and
    contents. Compressed level blocks are checked when read (read_image, read_depth); mapped ones
    (an uncompressed store: every file size-checked and mapped here) by PatchStore.verify_levels,
    once per node. Everything is read through one descriptor of the directory, so an open that
    races a rebuild reads one store, not parts of two."""
    path = Path(path)
    opens[str(path)] += 1
    if not path.exists():
        raise StoreError(f"{path}: no such store (build it with camvis-data build)")
    with _pinned(path) as pinned:
        return _open(path, pinned)


@contextmanager
def _pinned(path: Path) -> Iterator[Path]:
    """`path` as the directory it names now (/proc/self/fd/N of an open descriptor, on Linux): a
    rename over `path` meanwhile does not change what is read."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    except OSError:  # not a directory: zarr says what it is
        yield path
        return
    try:
        pinned = Path(f"/proc/self/fd/{fd}")
        yield pinned if pinned.is_dir() else path
    finally:
        os.close(fd)


def _open(path: Path, pinned: Path) -> PatchStore:
    try:
        root = store_verify.open_root(pinned)
    except (FileNotFoundError, ValueError, OSError) as e:
        raise StoreError(f"{path}: not a Zarr group, so not a camvis store") from e
    attrs = dict(root.attrs)
    if attrs.get("format") != FORMAT_NAME:
        raise StoreError(f"{path}: not a camvis store (attribute format={attrs.get('format')!r}, "
                         f"expected {FORMAT_NAME!r}); an interrupted build or another tool's data?")
    problem = version_problem(attrs.get("format_version"))
    if problem is not None:
        raise StoreError(f"{path}: {problem}; rebuild it with camvis-data build --force")
    where = f"store {path}"
    schema = store_verify.check_attrs(where, attrs)
    levels, table = store_verify.open_arrays(where, pinned, root, schema)
    if all(store_map.mappable(a) for pair in levels.values() for a in pair):
        levels = {f: (store_map.map_array(where, pinned, f"levels/{f}/images", images),
                      store_map.map_array(where, pinned, f"levels/{f}/depth", depth))
                  for f, (images, depth) in levels.items()}
    elif pinned != path:  # lazy arrays read on after the open: by the store's name, not the descriptor
        named = zarr.open_group(path, mode="r")
        levels = {f: tuple(store_verify.open_array(where, named, f"levels/{f}/{kind}")  # type: ignore[misc]
                           for kind in ("images", "depth")) for f in levels}
    return PatchStore(
        path=path, factors=schema.factors, patch_size=schema.patch_size,
        image_shape=schema.image_shape, views=schema.views, images=schema.images,
        image_view=schema.image_view, table=table, norm_mean=schema.norm_mean,
        norm_std=schema.norm_std, levels=levels, attrs=attrs, norm_rule=schema.norm_rule,
        norm_mean_folds=schema.norm_mean_folds, norm_std_folds=schema.norm_std_folds)


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
            "levels_layout": "uncompressed, memory-mapped" if store.mapped else "compressed (zstd)",
            "norm_rule": store.norm_rule, "norm_rule_recorded": "norm_rule" in store.attrs,
            "images": len(store.images), "views": views, "patches": store.n_patches,
            "patch_size": store.patch_size, "image_shape": list(store.image_shape),
            "levels": levels, "folds": _fold_stats(store), "size_bytes": _disk_size(store.path) if store.path else None,
            "provenance": store.attrs.get("provenance", {})}


def _fold_stats(store: PatchStore) -> list[dict[str, Any]]:
    """Per fold (1-based, views in sorted order): its held-out view and the statistics its job uses."""
    if store.norm_rule != NORM_PER_FOLD:
        return []
    out = []
    for k, view in enumerate(sorted(store.views), start=1):
        norm = store.normalization(k)
        out.append({"fold": k, "held_out": view, "norm_mean": norm.mean.tolist(), "norm_std": norm.std.tolist()})
    return out


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
                  f"patches of {info['patch_size']} px; preprocessing {info.get('preprocessing', 'exact')}; "
                  f"levels {info.get('levels_layout', 'compressed (zstd)')}")
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
    console.print(f"normalization: {_rule_text(info)}")
    prov = info["provenance"]
    console.print("provenance: " + ", ".join(f"{k}={v}" for k, v in prov.items() if k != "synth"))
    if prov.get("synth"):
        keys = ("seed", "views", "images_per_view", "size", "vis_range")
        console.print("synthetic: " + ", ".join(f"{k}={prov['synth'].get(k)}" for k in keys))
    return out.getvalue()


def _rule_text(info: dict[str, Any]) -> str:
    rule = info.get("norm_rule", NORM_GLOBAL)
    if rule == NORM_PER_FOLD:
        return ("per-fold: a fold's job uses statistics over its training views (every view but the held-out "
                "one); the levels table shows those over all views (predict without a fold)")
    if not info.get("norm_rule_recorded", True):
        return (f"global: statistics over all views (format version {info.get('format_version')} predates "
                "per-fold statistics; rebuild with camvis-data build --force to get them)")
    return "global: statistics over all views, held-out view included (camvis2's rule)"


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
