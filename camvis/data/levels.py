"""An image's levels as the store holds them (block means of RGB, depth as log10 metres), its patch
rows, and the level arrays' layout: what camvis.data.store_build writes serially and
camvis.data.parallel_build in worker processes, staging re-encodes and prediction rebuilds."""

from __future__ import annotations

from typing import Any

import numpy as np
import zarr
from PIL import Image
from zarr.codecs import BytesCodec

from camvis.data.norm_stats import rgb_histogram
from camvis.data.sampling import sample_centres_with_histogram

LEVEL_CONFIG = {"write_empty_chunks": True}
"""Level arrays get every block's file, even one all fill value (a black image): an uncompressed store's
layout is one file per block (camvis.data.store_map), and parallel workers open the arrays with it too."""


def create_level_array(root: zarr.Group, name: str, shape: tuple[int, ...], compress: bool) -> zarr.Array:
    """A level array, one chunk per image / view: zstd (zarr's default codecs) or raw little-endian
    bytes (the mappable layout, camvis.data.store_map); the dtype and fill value are the format's."""
    dtype, fill = ("uint8", 0) if name.endswith("/images") else ("float32", -1.0)
    extra: dict[str, Any] = {} if compress else {"compressors": None, "serializer": BytesCodec(endian="little")}
    return root.create_array(name, shape=shape, chunks=(1, *shape[1:]), dtype=dtype, fill_value=fill,
                             config=LEVEL_CONFIG, **extra)


def image_part(images: dict[int, zarr.Array], i: int, v: int, rgb: np.ndarray, labels: np.ndarray,
               depth: np.ndarray, patch_size: int, per_image: int, seed: int) -> dict[str, Any]:
    """Write image i's levels; its RGB histograms, patch rows and sampling histogram, for the
    caller to merge in image order (each image is its own chunk: workers may write in parallel)."""
    pil = Image.fromarray(rgb)
    hists = {}
    for f, array in images.items():
        level = rgb_level(pil, f)
        array[i] = level.transpose(2, 0, 1)
        hists[f] = rgb_histogram(level)
    rng = np.random.default_rng([seed, i])  # per image: order-independent
    h, w, _, counts, edges = sample_centres_with_histogram(labels, depth, per_image, patch_size, rng)
    return {"i": i, "hists": hists, "counts": counts, "edges": edges,
            "rows": table_rows(h, w, labels[h, w], depth[h, w], i, v)}


def rgb_level(pil: Image.Image, f: int) -> np.ndarray:
    """Level f of an RGB image, uint8 (H // f, W // f, 3) (camvis.job.predict builds the same)."""
    wf, hf = pil.width // f, pil.height // f
    # box= crops to a multiple of f, so BOX is the exact f x f block mean.
    return np.asarray(pil.resize((wf, hf), Image.Resampling.BOX, box=(0, 0, wf * f, hf * f)))


def depth_level(depth: np.ndarray, f: int) -> np.ndarray:
    """Level f of a depth map: each block's centre pixel as log10 metres (-1 for none)."""
    hf, wf = depth.shape[0] // f, depth.shape[1] // f
    return log_depth(depth[f // 2::f, f // 2::f][:hf, :wf])


def log_depth(depth: np.ndarray) -> np.ndarray:
    """log10 of depth in metres as float32; NaN, non-finite or non-positive depth -> -1."""
    with np.errstate(invalid="ignore", divide="ignore"):
        out = np.log10(depth.astype(np.float32))
    out[~np.isfinite(out) | ~(depth > 0)] = -1.0
    return out


def table_rows(h: np.ndarray, w: np.ndarray, label: np.ndarray, depth: np.ndarray, i: int,
                v: int) -> dict[str, np.ndarray]:
    return {"center_h": h, "center_w": w, "label": label.astype(np.uint8),
            "depth": depth.astype(np.float32), "image": np.full(h.size, i, np.int32),
            "view": np.full(h.size, v, np.int32)}
