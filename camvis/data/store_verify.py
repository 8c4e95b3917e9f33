"""Checking a patch store before it is trusted: schema, attribute digest, block checksums.

Why: zarr reads a missing chunk as the array's fill value and decodes whatever bytes it finds,
so a deleted label chunk reads as all-zero labels, a deleted image as a black image, and an
edited attribute (`patch_size`) silently trains another model. So the build
(camvis.data.store_build) records in the root attributes a CRC-32 of every block of the decoded
arrays (`checksums`: one image or depth map of a level, one row of a sampling array, a whole
patch-table column) and a SHA-256 of every other attribute (`digest`). `open_store` checks
the attribute types, the digest, every promised array's shape and dtype and the patch table
(contents and checksums: it reads the table anyway); level blocks are checked as a job reads
them (`read_block`, behind PatchStore.read_image / read_depth); `verify_blocks` reads and
checks every block (`camvis-data check-store`). Every failure is a one-line StoreError that
names the store, the attribute or array, and what was expected.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import math
import zlib
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator, Mapping

import numpy as np
import zarr

from camvis.errors import StoreError
from camvis.data.camvis2 import EXACT, MODES, level_shape
from camvis.data.raw import LABEL_NONVISIBLE, LABEL_VISIBLE
from camvis.data.store_info import NORM_GLOBAL, NORM_RULE_SINCE, NORM_RULES


TABLE_COLUMNS = {"center_h": "int32", "center_w": "int32", "label": "uint8",
                 "depth": "float32", "image": "int32", "view": "int32"}
REBUILD = "rebuild it with camvis-data build --force"


def fail(where: str, what: str) -> StoreError:
    """The one-line error: `store PATH: WHAT; rebuild it ...`."""
    return StoreError(f"{where}: {what}; {REBUILD}")


# --------------------------------------------------------------------------- checksums


def block_crc(block: np.ndarray) -> int:
    """CRC-32 of a decoded block's values (C order, little-endian): what the build recorded."""
    block = np.ascontiguousarray(block)
    return zlib.crc32(block.astype(block.dtype.newbyteorder("<"), copy=False))


def record_checksums(root: zarr.Group, names: list[str]) -> dict[str, Any]:
    """The `checksums` attribute of a freshly written store, read back block by block: one
    block per image / depth map (= one chunk of a level) or sampling row; a table column is
    one block (it is read whole anyway)."""
    out = {}
    for name in names:
        array = root[name]
        rows = max(1, array.shape[0]) if name.startswith("patches/") else 1
        out[name] = {"rows": rows, "crc32": [block_crc(array[k * rows:(k + 1) * rows])
                                             for k in range(_n_blocks(array.shape, rows))]}
    return out


def attrs_digest(attrs: Mapping[str, Any]) -> dict[str, str]:
    """SHA-256 of each root attribute but `digest` (canonical JSON): an edit names its key."""
    return {key: hashlib.sha256(json.dumps(value, sort_keys=True, separators=(",", ":")).encode()).hexdigest()
            for key, value in sorted(attrs.items()) if key != "digest"}


def _check_digest(where: str, attrs: Mapping[str, Any]) -> None:
    recorded, now = attrs.get("digest"), attrs_digest(attrs)
    if not isinstance(recorded, dict):
        raise _bad(where, "digest", recorded, "a SHA-256 per attribute, as the build records it")
    changed = sorted(k for k in recorded.keys() | now.keys() if recorded.get(k) != now.get(k))
    if changed:
        how = {k: "added" if k not in recorded else "removed" if k not in now else "changed" for k in changed}
        listing = ", ".join(f"{k} ({how[k]})" for k in changed)
        raise fail(where, f"attribute {listing} differs from what the build recorded (attribute digest): "
                          "zarr.json was edited after the build")


def _n_blocks(shape: tuple[int, ...], rows: int) -> int:
    return -(-shape[0] // rows) if shape else 0


def read_block(where: str, path: Path | None, name: str, array: Any, k: int,
               checksums: Mapping[str, Any]) -> np.ndarray:
    """Block k of `array` (rows [k r, (k + 1) r)), checked against its recorded CRC-32 when
    the store records one (in-memory test stores do not)."""
    entry = checksums.get(name)
    rows = entry["rows"] if entry else 1
    with _decode_errors(where, name, k):
        block = np.asarray(array[k * rows:(k + 1) * rows])
    if entry is not None:
        _check_block(where, path, name, array, k, block, entry)
    return block


def _check_block(where: str, path: Path | None, name: str, array: Any, k: int, block: np.ndarray,
                 entry: Mapping[str, Any]) -> None:
    if not 0 <= k < len(entry["crc32"]):
        raise fail(where, f"array {name}: no checksum recorded for block {k} "
                          f"(the store records {len(entry['crc32'])})")
    if block_crc(block) != entry["crc32"][k]:
        raise fail(where, f"array {name}: block {k} does not match the checksum recorded at build "
                          f"time ({_why_changed(path, name, array, k, entry['rows'])})")


@contextmanager
def _decode_errors(where: str, name: str, k: int) -> Iterator[None]:
    try:
        yield
    except (RuntimeError, ValueError, OSError) as e:  # zstd/codec errors, I/O
        detail = " ".join(str(e).split()) or type(e).__name__
        raise fail(where, f"array {name}: block {k} cannot be decoded ({detail}): a truncated or "
                          "corrupted chunk file") from e


def _why_changed(path: Path | None, name: str, array: Any, k: int, rows: int) -> str:
    """Names the missing chunk files of block k, which zarr reads as the fill value."""
    if path is None or not isinstance(array, zarr.Array):
        return "its values changed"
    chunk0 = array.chunks[0]
    first, last = (k * rows) // chunk0, min((k + 1) * rows, array.shape[0]) - 1
    grid = [range(first, last // chunk0 + 1),
            *(range(-(-n // c)) for n, c in zip(array.shape[1:], array.chunks[1:]))]
    keys = [array.metadata.encode_chunk_key(coords) for coords in itertools.product(*grid)]
    missing = [key for key in keys if not (path / name / key).is_file()]
    if missing:
        return (f"chunk file {name}/{missing[0]} is missing"
                + (f", and {len(missing) - 1} more" if len(missing) > 1 else "")
                + f"; zarr would read it as fill value {array.fill_value}")
    return "a chunk file was altered"


# --------------------------------------------------------------------------- attributes


@dataclass(frozen=True)
class Schema:
    """The root attributes a store is opened with, checked."""

    factors: tuple[int, ...]
    patch_size: int
    image_shape: tuple[int, int]
    views: tuple[str, ...]
    images: tuple[str, ...]
    image_view: np.ndarray     # int32 (n_images,)
    norm_mean: np.ndarray      # float32 (n_factors, 4)
    norm_std: np.ndarray       # float32 (n_factors, 4)
    checksums: dict[str, Any]
    preprocessing: str = "exact"  # camvis.data.camvis2.MODES: decides the level sizes
    norm_rule: str = NORM_GLOBAL
    norm_mean_folds: np.ndarray | None = None  # float32 (n_views, n_factors, 4) under per-fold
    norm_std_folds: np.ndarray | None = None

    def arrays(self) -> dict[str, tuple[tuple[int, ...], str]]:
        """Every level array the attributes promise, with its shape and dtype."""
        h, w = self.image_shape
        n_img, n_view = len(self.images), len(self.views)
        out: dict[str, tuple[tuple[int, ...], str]] = {}
        for f in self.factors:
            hf, wf = level_shape((h, w), f, self.preprocessing)
            out[f"levels/{f}/images"] = ((n_img, 3, hf, wf), "uint8")
            out[f"levels/{f}/depth"] = ((n_view, 1, hf, wf), "float32")
        return out


def check_attrs(where: str, attrs: Mapping[str, Any]) -> Schema:
    """Types and ranges of the attributes open_store uses, then the digest of them all."""
    factors = _int_list(where, attrs, "factors", low=1)
    if not factors or list(factors) != sorted(set(factors)):
        raise _bad(where, "factors", attrs["factors"], "distinct positive integers in increasing order")
    patch_size = _int(where, attrs, "patch_size", low=2)
    image_shape = _int_list(where, attrs, "image_shape", low=1)
    if len(image_shape) != 2 or min(image_shape) // max(factors) < 1:
        raise _bad(where, "image_shape", attrs["image_shape"],
                   f"[height, width], each at least the largest factor {max(factors)}")
    views, images = _str_list(where, attrs, "views"), _str_list(where, attrs, "images")
    image_view = _int_list(where, attrs, "image_view", low=0, high=len(views) - 1)
    if len(image_view) != len(images):
        raise _bad(where, "image_view", attrs["image_view"], f"one view index per image ({len(images)})")
    mean = _float_array(where, attrs, "norm_mean", (len(factors), 4))
    std = _float_array(where, attrs, "norm_std", (len(factors), 4))
    if not np.all(std > 0):
        raise _bad(where, "norm_std", attrs["norm_std"], "standard deviations > 0")
    mode = attrs.get("preprocessing", EXACT)
    if mode not in MODES:
        raise _bad(where, "preprocessing", mode, " or ".join(MODES))
    rule, folds = _norm_rule(where, attrs, (len(views), len(factors), 4))
    schema = Schema(factors, patch_size, (image_shape[0], image_shape[1]), views, images,
                    np.asarray(image_view, np.int32), mean, std, {}, mode, rule, *folds)
    checksums = _checksums(where, attrs, schema)
    _check_digest(where, attrs)
    return Schema(**{**schema.__dict__, "checksums": checksums})


def _norm_rule(where: str, attrs: Mapping[str, Any], shape: tuple[int, int, int]
               ) -> tuple[str, tuple[np.ndarray | None, np.ndarray | None]]:
    """norm_rule and, under per-fold, the per-fold statistics; a store older than the key: global."""
    version = attrs.get("format_version")
    if "norm_rule" not in attrs and _is_int(version) and version < NORM_RULE_SINCE:
        return NORM_GLOBAL, (None, None)
    rule = _attr(where, attrs, "norm_rule")
    if rule not in NORM_RULES:
        raise _bad(where, "norm_rule", rule, " or ".join(NORM_RULES))
    if rule == NORM_GLOBAL:
        return rule, (None, None)
    mean = _float_stack(where, attrs, "norm_mean_folds", shape)
    std = _float_stack(where, attrs, "norm_std_folds", shape)
    if not np.all(std > 0):
        raise _bad(where, "norm_std_folds", attrs["norm_std_folds"], "standard deviations > 0")
    return rule, (mean, std)


def _float_stack(where: str, attrs: Mapping[str, Any], key: str, shape: tuple[int, int, int]) -> np.ndarray:
    value = _attr(where, attrs, key)
    try:
        array = np.asarray(value, np.float64) if isinstance(value, list) else None
    except (TypeError, ValueError):  # ragged, or not numbers
        array = None
    if array is None or array.shape != shape or not np.all(np.isfinite(array)) or not _numbers_only(value):
        raise _bad(where, key, value, f"{shape[0]} x {shape[1]} x {shape[2]} finite numbers "
                                      "(views x factors x R, G, B, log-depth)")
    return array.astype(np.float32)


def _numbers_only(value: Any) -> bool:
    """No bools or strings anywhere in nested lists (numpy would coerce them)."""
    if isinstance(value, list):
        return all(_numbers_only(v) for v in value)
    return _is_number(value)


def _checksums(where: str, attrs: Mapping[str, Any], schema: Schema) -> dict[str, Any]:
    """`checksums`: an entry {rows, crc32} for every level array, table column and sampling
    array; the level entries hold one CRC per image / view."""
    record = attrs.get("checksums")
    blocks = {name: shape[0] for name, (shape, _) in schema.arrays().items()}
    blocks.update({f"patches/{c}": 1 for c in TABLE_COLUMNS})
    blocks.update({"sampling/counts": len(schema.images), "sampling/edges": len(schema.images)})
    if not isinstance(record, dict) or sorted(record) != sorted(blocks):
        raise _bad(where, "checksums", record, f"one entry per array ({', '.join(blocks)})")
    for name, entry in record.items():
        ok = (isinstance(entry, dict) and _is_int(entry.get("rows")) and entry["rows"] >= 1
              and isinstance(entry.get("crc32"), list) and all(_is_int(c) for c in entry["crc32"])
              and len(entry["crc32"]) == blocks[name] and (name.startswith("patches/") or entry["rows"] == 1))
        if not ok:
            rows = "n_patches" if name.startswith("patches/") else "1"
            raise _bad(where, f"checksums[{name!r}]", entry, f"{{'rows': {rows}, 'crc32': {blocks[name]} integers}}")
    return record


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _bad(where: str, key: str, value: Any, expected: str) -> StoreError:
    shown = repr(value)
    shown = shown if len(shown) <= 60 else shown[:57] + "..."
    return fail(where, f"attribute {key} = {shown}: expected {expected}")


def _attr(where: str, attrs: Mapping[str, Any], key: str) -> Any:
    if key not in attrs:
        raise fail(where, f"attribute {key} is missing")
    return attrs[key]


def _int(where: str, attrs: Mapping[str, Any], key: str, low: int) -> int:
    value = _attr(where, attrs, key)
    if not _is_int(value) or value < low:
        raise _bad(where, key, value, f"an integer >= {low}")
    return int(value)


def _int_list(where: str, attrs: Mapping[str, Any], key: str, low: int,
              high: int | None = None) -> tuple[int, ...]:
    value = _attr(where, attrs, key)
    within = "" if high is None else f" and <= {high}"
    if not isinstance(value, list) or not all(
            _is_int(v) and v >= low and (high is None or v <= high) for v in value):
        raise _bad(where, key, value, f"a list of integers >= {low}{within}")
    return tuple(value)


def _str_list(where: str, attrs: Mapping[str, Any], key: str) -> tuple[str, ...]:
    value = _attr(where, attrs, key)
    if (not isinstance(value, list) or not value or not all(isinstance(v, str) and v for v in value)
            or len(set(value)) != len(value)):
        raise _bad(where, key, value, "a non-empty list of distinct non-empty strings")
    return tuple(value)


def _float_array(where: str, attrs: Mapping[str, Any], key: str, shape: tuple[int, int]) -> np.ndarray:
    value = _attr(where, attrs, key)
    rows_ok = isinstance(value, list) and len(value) == shape[0] and all(
        isinstance(row, list) and len(row) == shape[1] and all(_is_number(v) and math.isfinite(v) for v in row)
        for row in value)
    if not rows_ok:
        raise _bad(where, key, value, f"{shape[0]} x {shape[1]} finite numbers (factors x R, G, B, log-depth)")
    return np.asarray(value, np.float32)


# --------------------------------------------------------------------------- arrays and table


def open_root(path: Path) -> zarr.Group:
    """The store's root group, for open_arrays; zarr's errors (FileNotFoundError, ValueError,
    OSError) when `path` is no Zarr group."""
    return zarr.open_group(store=path, mode="r")


def open_arrays(where: str, path: Path, root: zarr.Group, schema: Schema
                ) -> tuple[dict[int, tuple[zarr.Array, zarr.Array]], dict[str, np.ndarray]]:
    """Every level array (shape and dtype checked) and the whole patch table (checksums and
    contents checked), one at a time through zarr's public API. (Fetching them concurrently through
    zarr's internal zarr.core.sync saved about 15 ms an open, 21 against 35 ms, of a job start of
    seconds: benchmarks/bench_store_open.py.)"""
    arrays = {name: _check_node(where, name, _get_node(where, root, name), shape)
              for name, (shape, _) in schema.arrays().items()}
    table = {c: _column(where, path, root, f"patches/{c}", schema.checksums[f"patches/{c}"]) for c in TABLE_COLUMNS}
    lengths = {k: len(v) for k, v in table.items()}
    if len(set(lengths.values())) != 1 or not lengths["label"]:
        raise fail(where, f"patch table columns must have one equal, non-zero length, got {lengths}")
    check_table(where, table, schema)
    return {f: (arrays[f"levels/{f}/images"], arrays[f"levels/{f}/depth"]) for f in schema.factors}, table


def _column(where: str, path: Path, root: zarr.Group, name: str, entry: Mapping[str, Any]) -> np.ndarray:
    """A patch-table column, read whole and checked against its recorded checksum."""
    array = open_array(where, root, name)
    if array.ndim != 1:
        raise fail(where, f"array {name} has shape {tuple(array.shape)}, expected one column")
    with _decode_errors(where, name, 0):
        block = np.asarray(array[0:entry["rows"]])
    _check_block(where, path, name, array, 0, block, entry)
    return block


def open_array(where: str, root: zarr.Group, name: str) -> zarr.Array:
    """Array `name` of the store, with the dtype the format gives it."""
    return _check_node(where, name, _get_node(where, root, name), None)


def _get_node(where: str, root: zarr.Group, name: str) -> Any:
    with _node_errors(where, name):
        return root[name]


@contextmanager
def _node_errors(where: str, name: str) -> Iterator[None]:
    try:
        yield
    except KeyError:
        raise fail(where, f"array {name} is missing (no readable {name}/zarr.json)") from None
    except (ValueError, OSError) as e:  # an unreadable zarr.json
        raise fail(where, f"array {name}: unreadable metadata ({' '.join(str(e).split())})") from e


def _check_node(where: str, name: str, array: Any, shape: tuple[int, ...] | None) -> zarr.Array:
    """`array`, once it is an array of the dtype the format gives `name` (and `shape`, if given)."""
    if not isinstance(array, zarr.Array):
        raise fail(where, f"{name} is a group, expected an array")
    dtype = _dtype(name)
    if (shape is not None and tuple(array.shape) != shape) or str(array.dtype) != dtype:
        want = f"shape {shape} " if shape is not None else ""
        raise fail(where, f"array {name} is {array.dtype} {tuple(array.shape)}, expected {want}{dtype}")
    return array


def check_table(where: str, table: Mapping[str, np.ndarray], schema: Schema) -> None:
    """Labels 0/1, image and view indices in range and consistent, centres inside the image and
    half a patch from its border (the sampling rule, which ties the table to patch_size)."""
    label, image, view = table["label"], table["image"], table["view"]
    bad_label = ~np.isin(label, (LABEL_NONVISIBLE, LABEL_VISIBLE))
    if bad_label.any():
        raise fail(where, f"array patches/label holds {np.unique(label[bad_label]).tolist()[:5]} at "
                          f"{int(bad_label.sum())} patches, expected only {LABEL_NONVISIBLE} (non-visible) "
                          f"and {LABEL_VISIBLE} (visible)")
    if image.min() < 0 or image.max() >= len(schema.images):
        raise fail(where, f"array patches/image spans {int(image.min())}..{int(image.max())}, expected "
                          f"image indices in 0..{len(schema.images) - 1}")
    if not np.array_equal(view, schema.image_view[image]):
        raise fail(where, "array patches/view disagrees with attribute image_view for "
                          f"{int(np.sum(view != schema.image_view[image]))} patches")
    half, (height, width) = schema.patch_size // 2, schema.image_shape
    h, w = table["center_h"], table["center_w"]
    outside = (h < half) | (h >= height - half) | (w < half) | (w >= width - half)
    if outside.any():
        k = int(np.argmax(outside))
        raise fail(where, f"patch {k} is centred at ({int(h[k])}, {int(w[k])}), expected centres at least "
                          f"patch_size // 2 = {half} px inside the {height} x {width} image "
                          f"({int(outside.sum())} patches are not)")
    depth = table["depth"]
    if not np.all(np.isfinite(depth) & (depth > 0)):
        raise fail(where, "array patches/depth holds non-finite or non-positive depths, "
                          "expected metres > 0 at every centre")


# --------------------------------------------------------------------------- every block


@dataclass(frozen=True)
class ArrayCheck:
    """What verify_blocks found in one array."""

    name: str
    blocks: int
    nbytes: int
    problems: tuple[str, ...]


def verify_blocks(store_path: str | Path, attrs: Mapping[str, Any],
                  advance: Callable[[], None] | None = None) -> list[ArrayCheck]:
    """Reads every block of every recorded array of an opened store (its path and root attributes)
    and checks its CRC-32; problems are collected, not raised (a report lists them all)."""
    where, path = f"store {store_path}", Path(store_path)
    root = zarr.open_group(path, mode="r")
    checks = []
    for name, entry in attrs["checksums"].items():
        problems: list[str] = []
        nbytes = 0
        try:
            array = open_array(where, root, name)
        except StoreError as e:
            checks.append(ArrayCheck(name, 0, 0, (str(e),)))
            continue
        for k in range(len(entry["crc32"])):
            try:
                nbytes += read_block(where, path, name, array, k, attrs["checksums"]).nbytes
            except StoreError as e:
                problems.append(str(e))
            if advance is not None:
                advance()
        if _n_blocks(tuple(array.shape), entry["rows"]) != len(entry["crc32"]):
            problems.append(str(fail(where, f"array {name} has {array.shape[0]} rows, the checksums "
                                            f"cover {len(entry['crc32'])} blocks of {entry['rows']}")))
        checks.append(ArrayCheck(name, len(entry["crc32"]), nbytes, tuple(problems)))
    return checks


def _dtype(name: str) -> str:
    """The dtype an array must have (sampling arrays: what the build wrote)."""
    if name.startswith("patches/"):
        return TABLE_COLUMNS[name.split("/", 1)[1]]
    if name.startswith("levels/"):
        return "uint8" if name.endswith("/images") else "float32"
    return "int64" if name == "sampling/counts" else "float64"
