"""Which raw data a store was built from, in a form that survives moving the project.

A store's `build` attributes record the raw folder as given (relative to the project root, the
folder the command runs in, when it lies inside it; absolute otherwise), a listing digest (each file
the build reads: its name and size, from a stat) and a content digest (the same files' bytes,
streamed). `camvis-data build` reuses a store when the recorded folder is the asked one and its
listing is unchanged (no file read), or when the asked folder's contents have the recorded digest (a
moved or renamed raw folder). Stores built before the digests recorded an absolute `raw_dir` only:
they are reused when that path is the asked folder.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Any

from camvis.data import raw
from camvis.errors import RawDataError

KEYS = ("raw_dir", "raw_listing", "raw_digest")
"""The build attributes this module writes and reads."""


def files(ds: raw.RawDataset) -> list[Path]:
    """The files a build reads: every image and its two masks, each view's depth map, visibility.csv."""
    found = [p for img in ds.images for p in (img.path, img.visible_mask, img.nonvisible_mask)]
    found += [ds.depth_path(v) for v in ds.views]
    sidecar = ds.root / raw.VISIBILITY_CSV
    return sorted(found + ([sidecar] if sidecar.is_file() else []))


def _names(ds: raw.RawDataset, paths: list[Path]) -> list[str]:
    return [p.relative_to(ds.root).as_posix() for p in paths]


def listing_digest(ds: raw.RawDataset) -> str:
    """sha256 of every file's name and size (no file is opened)."""
    h = hashlib.sha256()
    paths = files(ds)
    for name, path in zip(_names(ds, paths), paths):
        h.update(f"{name}\0{path.stat().st_size}\n".encode())
    return "sha256:" + h.hexdigest()


def content_digest(ds: raw.RawDataset) -> str:
    """sha256 over every file's name, size and the sha256 of its bytes (streamed, not held in memory)."""
    h = hashlib.sha256()
    paths = files(ds)
    for name, path in zip(_names(ds, paths), paths):
        with open(path, "rb") as f:
            inner = hashlib.file_digest(f, "sha256").hexdigest()
        h.update(f"{name}\0{path.stat().st_size}\0{inner}\n".encode())
    return "sha256:" + h.hexdigest()


def as_given(path: str | os.PathLike) -> str:
    """`path` relative to the project root (the working directory) when it lies inside it, else absolute."""
    full, root = Path(os.path.abspath(path)), Path.cwd()  # abspath: "../x" is not inside
    return full.relative_to(root).as_posix() if full.is_relative_to(root) else str(full)


def identify(ds: raw.RawDataset) -> dict[str, Any]:
    """The build attributes naming `ds`: its folder as given and both digests."""
    return {"raw_dir": as_given(ds.root), "raw_listing": listing_digest(ds), "raw_digest": content_digest(ds)}


def _same_folder(recorded: Any, asked: Path) -> bool:
    if not isinstance(recorded, str) or not recorded:
        return False
    try:
        return Path(recorded).resolve() == asked.resolve()  # a relative one: from the project root
    except OSError:
        return False


def mismatch(built: dict[str, Any], raw_dir: str | os.PathLike) -> str | None:
    """None when the store whose build attributes are `built` was built from the raw data in `raw_dir`,
    else what differs (for an error naming both)."""
    recorded, asked = built.get("raw_dir"), Path(raw_dir)
    same = _same_folder(recorded, asked)
    if not isinstance(built.get("raw_listing"), str):  # a store from before the digests: its path only
        return None if same else f"raw_dir={recorded!r} (asked {os.path.abspath(asked)!r})"
    try:
        ds = raw.scan(asked)
        listing = listing_digest(ds)
    except (RawDataError, OSError):
        if same:  # the raw data is gone or broken: the store is all there is of it, as it was built
            return None
        return f"raw_dir={recorded!r} (asked {as_given(asked)!r}, which is not readable raw data)"
    if listing != built["raw_listing"]:
        where = "changed since the build (files added, removed or resized)" if same else "other raw data"
        return f"raw_dir={recorded!r} (asked {as_given(asked)!r}: {where})"
    if same or content_digest(ds) == built.get("raw_digest"):
        return None
    return f"raw_dir={recorded!r} (asked {as_given(asked)!r}: same file names and sizes, other contents)"
