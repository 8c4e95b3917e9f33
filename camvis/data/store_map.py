"""Memory-mapping a patch store's level arrays, and verifying them once per node.

A level array is *mappable* when zarr stores each block as its raw bytes: Zarr v3 metadata whose only
codec is `bytes` (little-endian, or none for uint8), one chunk per block (chunks (1, C, H, W)) and the
"default" chunk key encoding, so block k is the file `<array>/c/k/0/0/0` (found through zarr's
`Array.metadata.encode_chunk_key`, not spelled here) of exactly C*H*W*itemsize bytes in C order.
`camvis-data build` writes level arrays so (format version 4), `--compress` with zstd (the older
format, still read), and data.stage's node-local copy is always mappable (camvis.data.stage).

Why mapping: every job of a node then shares one copy of the pyramid in the page cache instead of
decoding its own into private memory, and its start-up reads no data at all.

- Never a bus error: reading a mapped page past the end of a shrunk file kills the process with SIGBUS.
  So every file's size is checked against the layout before it is mapped (one line naming the file),
  and every file of the store is mapped at open time from the directory the open resolved
  (camvis.data.store pins it by a descriptor): a store rebuilt under its name afterwards is a new
  directory (builds and staging rename one in), and the files the job mapped live on, unlinked,
  until it exits. Truncating a mapped file in place is outside the contract; camvis never does it.
- Verified once per node, not per job: the CRC-32 of every block (the build's `checksums`; for a
  mappable block it is the CRC-32 of its file) is checked by the first job of a node that maps a store
  (under a lock), or by staging, and recorded in a node-local marker `<node dir>/verified/<key>.json`
  keyed by the store's digest and path, which lists every level file's size and mtime: a file that
  changed (size or mtime) invalidates it and the next job checks again. `camvis-data check-store`
  still reads and checks everything.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
import zlib
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

import numpy as np

from camvis import locks
from camvis.data.store_verify import fail
from camvis.errors import StoreError
from camvis.io import write_json

VERIFY_THREADS = 8
"""Threads computing CRC-32s at a node's first open (zlib releases the GIL)."""


def node_dir() -> Path:
    """Where this node keeps its verification markers: $CAMVIS_NODE_DIR, else <tmp>/camvis-<uid>
    (node-local on a cluster: not the home directory, which nodes share)."""
    root = os.environ.get("CAMVIS_NODE_DIR") or Path(tempfile.gettempdir()) / f"camvis-{os.getuid()}"
    return Path(root)


def mappable(array: Any) -> bool:
    """Whether zarr stores `array` (a level array) as raw bytes, one file per block."""
    from zarr.codecs import BytesCodec

    meta = getattr(array, "metadata", None)
    if getattr(meta, "zarr_format", None) != 3 or tuple(array.chunks) != (1, *array.shape[1:]):
        return False
    codecs = tuple(meta.codecs)
    little = codecs and isinstance(codecs[0], BytesCodec) and getattr(codecs[0].endian, "value", "little") == "little"
    return len(codecs) == 1 and bool(little) and getattr(meta.chunk_key_encoding, "name", None) == "default"


def block_files(name: str, array: Any) -> list[str]:
    """The store-relative file of each block of a mappable array, by zarr's chunk key encoding."""
    zeros = (0,) * (len(array.shape) - 1)
    return [f"{name}/{array.metadata.encode_chunk_key((k, *zeros))}" for k in range(array.shape[0])]


@dataclass(frozen=True, eq=False)
class MappedArray:
    """A level array as read-only maps of its block files: `blocks[k]` is block k, (C, H, W), backed by
    the page cache (never copied into the process)."""

    name: str
    shape: tuple[int, ...]
    dtype: np.dtype
    blocks: tuple[np.ndarray, ...]
    files: dict[str, tuple[int, int]]  # store-relative path -> (size, mtime_ns) as mapped

    def __getitem__(self, key: Any) -> np.ndarray:
        """numpy indexing: an integer first index is a view of that block; anything else stacks the
        blocks it selects (a copy: what read_image and verify_blocks read a block through)."""
        first, rest = (key[0], key[1:]) if isinstance(key, tuple) and key else (key, ())
        if first is Ellipsis:
            first, rest = slice(None), (Ellipsis, *rest)
        if isinstance(first, (int, np.integer)):
            return self.blocks[first][rest]
        chosen = self.blocks[first] if isinstance(first, slice) else [self.blocks[k] for k in np.asarray(first)]
        stacked = np.stack(chosen) if len(chosen) else np.zeros((0, *self.shape[1:]), self.dtype)
        return stacked[(slice(None), *rest)]

    def __array__(self, dtype: Any = None, copy: Any = None) -> np.ndarray:
        return self[:].astype(dtype) if dtype is not None else self[:]

    def __len__(self) -> int:
        return self.shape[0]

    @property
    def chunks(self) -> tuple[int, ...]:
        return (1, *self.shape[1:])

    @property
    def nbytes(self) -> int:
        return int(np.prod(self.shape)) * self.dtype.itemsize


def map_array(where: str, root: Path, name: str, array: Any) -> MappedArray:
    """Every block file of the mappable `array` (store-relative `name`) under `root`, size-checked,
    then mapped read-only. A missing or wrong-sized file is a one-line StoreError naming it."""
    dtype = np.dtype(str(array.dtype)).newbyteorder("<")
    shape = tuple(int(n) for n in array.shape[1:])
    expected = int(np.prod(shape)) * dtype.itemsize
    blocks, files = [], {}
    for rel in block_files(name, array):
        try:
            with open(root / rel, "rb") as f:
                stat = os.fstat(f.fileno())
                if stat.st_size != expected:
                    raise fail(where, f"chunk file {rel} holds {stat.st_size} bytes, the layout expects {expected} "
                                      f"({dtype.name} {' x '.join(map(str, shape))}): truncated or replaced")
                blocks.append(np.memmap(f, dtype=dtype, mode="r", shape=shape))
        except FileNotFoundError:
            raise fail(where, f"chunk file {rel} is missing (an uncompressed store has one file per block)") from None
        except OSError as e:
            raise fail(where, f"chunk file {rel} cannot be mapped ({e.strerror or e})") from e
        files[rel] = (stat.st_size, stat.st_mtime_ns)
    return MappedArray(name, tuple(int(n) for n in array.shape), np.dtype(str(array.dtype)), tuple(blocks), files)


# --------------------------------------------------------------------------- once per node


def digest_of(attrs: Mapping[str, Any]) -> str:
    """SHA-256 (16 hex digits) of a store's root attributes: they hold a CRC-32 of every block and a
    digest of every other attribute, so equal digests mean equal data (data.stage's name for a copy)."""
    text = json.dumps(attrs, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def marker_path(path: Path, digest: str) -> Path:
    """The node-local marker of the store at `path` with `digest`."""
    where = hashlib.sha256(str(Path(path).resolve()).encode()).hexdigest()[:12]
    return node_dir() / "verified" / f"{digest}-{where}.json"


def _marker_ok(marker: Path, digest: str, files: Mapping[str, tuple[int, int]]) -> bool:
    try:
        record = json.loads(marker.read_text())
    except (OSError, ValueError):
        return False
    return (isinstance(record, dict) and record.get("digest") == digest
            and record.get("files") == {k: list(v) for k, v in files.items()})


def record_verified(path: Path, digest: str, files: Mapping[str, tuple[int, int]]) -> None:
    """Say that the store at `path` with `digest` and these files was checked on this node."""
    marker = marker_path(path, digest)
    marker.parent.mkdir(parents=True, exist_ok=True)
    write_json(marker, {"digest": digest, "path": str(Path(path).resolve()),
                        "files": {k: list(v) for k, v in sorted(files.items())}})


def verify_once(where: str, path: Path, digest: str, arrays: Mapping[str, MappedArray],
                checksums: Mapping[str, Any]) -> bool:
    """Check every block of `arrays` against its recorded CRC-32, unless this node did already for
    these files (the marker); under the node lock, so the node's jobs check once. Returns whether
    this call checked."""
    files = {rel: stat for array in arrays.values() for rel, stat in array.files.items()}
    marker = marker_path(path, digest)
    if _marker_ok(marker, digest, files):
        return False
    marker.parent.mkdir(parents=True, exist_ok=True)
    with locks.exclusive(marker.with_suffix(".lock"), f"verifying {path}"):
        if _marker_ok(marker, digest, files):  # another job of the node checked while this one waited
            return False
        check_blocks(where, arrays, checksums)
        record_verified(path, digest, files)
    return True


def check_blocks(where: str, arrays: Mapping[str, MappedArray], checksums: Mapping[str, Any]) -> None:
    """The CRC-32 of every mapped block against the build's; the first mismatch (array order) raised."""
    jobs = [(name, k) for name, array in arrays.items() for k in range(len(array.blocks))]
    for name in arrays:
        if len(checksums.get(name, {}).get("crc32", ())) != len(arrays[name].blocks):
            raise fail(where, f"array {name}: the checksums do not cover its {len(arrays[name].blocks)} blocks")

    def crc(job: tuple[str, int]) -> bool:
        name, k = job
        return zlib.crc32(arrays[name].blocks[k]) == checksums[name]["crc32"][k]

    with ThreadPoolExecutor(VERIFY_THREADS) as pool:
        for (name, k), ok in zip(jobs, pool.map(crc, jobs)):
            if not ok:
                raise fail(where, f"array {name}: block {k} (file {list(arrays[name].files)[k]}) does not match "
                                  "the checksum recorded at build time: a chunk file was altered")
