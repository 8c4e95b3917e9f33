"""What a command may replace: `--force` (and every other replacement) deletes only what that same
command made. The one rule of camvis-export, camvis-data synth, camvis-data build and camvis-predict
--out / --map.

A target (a file or a folder) may be replaced when it does not exist, is an empty folder or a 0-byte
file, or carries the marker of the command that replaces it (its Marker: a bundle's model.json, a store's
zarr.json, synth's synth.json, a prediction file's header row, a map folder's maps.json) — and never
when it
- is or contains one of the command's own inputs (the job exported, the raw folder built, the images
  predicted);
- is or contains a job folder, an experiment folder, a store or a raw folder that the command did not
  make (a store made by build is its own; so is a raw folder made by synth).
A refusal is one line naming the target and what it is. Torch-free: the login side uses it too.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

from camvis.errors import CamvisError
from camvis.bookkeeping.jobfolder import JOB_FILES

@dataclass(frozen=True)
class Marker:
    """What one command makes and how to recognise it: each command defines its own (camvis.job.export's
    BUNDLE, camvis.data.store_build's STORE, camvis.data.synth's SYNTH, camvis.cluster.predict_launch's
    PREDICTIONS and MAPS), so this base module names no layer above it."""

    noun: str
    """What it is called in errors: "a camvis model bundle"."""
    command: str
    """The command that makes it: "camvis-export"."""
    folder: bool
    """A folder (True) or a file."""
    name: str
    """Its marker, as errors name it: "model.json", "header row"."""
    made_here: Callable[[Path], bool]
    """Whether a path carries the marker."""
    look_inside: bool = True
    """Whether protected folders below it refuse it (not for a store: its folders are its arrays)."""


def json_object(path: Path) -> dict:
    """The JSON object in `path`, or {} when it is missing, unreadable or not an object."""
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def check_replaceable(target: str | os.PathLike, *, kind: Marker, inputs: Iterable[str | os.PathLike] = (),
                      error: type[CamvisError] = CamvisError) -> None:
    """Raise `error` (one line) unless the command that makes `kind` may replace `target`."""
    noun, command, folder, marker, marked = kind.noun, kind.command, kind.folder, kind.name, kind.made_here
    path = Path(target).resolve()
    _not_an_input(path, inputs, error)
    if not os.path.lexists(path) or _empty(path):
        return
    if not (path.is_dir() if folder else path.is_file()):  # a FIFO is never opened: it could block
        kind_of = "a folder" if path.is_dir() else "a file" if path.is_file() else "not a regular file"
        raise error(f"{path} exists and is {kind_of}, not {noun}; refusing to replace it")
    own = marked(path)
    what = protected(path)
    if what and not own:
        raise error(f"{path} is {what}; {command} replaces only {noun} (its {marker}), refusing to replace it")
    if not own:
        raise error(f"{path} exists and is not {noun}; refusing to replace it (no camvis {marker}): "
                    "choose another path, or move it away yourself")
    if folder:
        inside = _protected_inside(path, kind)
        if inside is not None:
            sub, what = inside
            raise error(f"{path} contains {what} ({sub}); refusing to replace it")


def check_writable_into(folder: str | os.PathLike, *, command: str, error: type[CamvisError] = CamvisError) -> None:
    """Raise `error` (one line) when `folder`, which a command adds files to without replacing it, is
    a job folder, an experiment folder, a store or a raw folder: its files would mix with theirs."""
    path = Path(folder).resolve()
    what = protected(path)
    if what:
        raise error(f"{path} is {what}; {command} writes only into a new or empty folder or one it made")


def _not_an_input(path: Path, inputs: Iterable[str | os.PathLike], error: type[CamvisError]) -> None:
    for given in inputs:
        source = Path(given).resolve()
        if source == path:
            raise error(f"{path} is an input of this command; refusing to replace it")
        if path in source.parents:
            raise error(f"{path} contains {source}, an input of this command; refusing to replace it")


def _empty(path: Path) -> bool:
    try:
        if path.is_dir():
            with os.scandir(path) as entries:
                return next(entries, None) is None
        return path.is_file() and path.stat().st_size == 0
    except OSError:
        return False


def protected(path: Path) -> str | None:
    """What `path` is among what no other command may replace: a job folder, an experiment folder
    (outputs/<experiment>/ with its jobs' lock files, or jobs/<experiment>/ with its manifest), a
    store (any Zarr group) or a raw folder (images/ and depth_maps/); None otherwise."""
    if not path.is_dir():
        return None
    if any((path / name).exists() for name in JOB_FILES):
        return "a job folder"
    if any((path / name).exists() for name in ("zarr.json", ".zgroup", ".zarray")):
        return "a store"
    if (path / "images").is_dir() and (path / "depth_maps").is_dir():
        return "a raw folder"
    if (path / "manifest.json").is_file() or (path / ".launch.lock").exists():
        return "an experiment folder"
    try:
        with os.scandir(path) as entries:
            for entry in entries:
                if entry.name.startswith(".") and entry.name.endswith(".lock"):
                    return "an experiment folder"  # outputs/<experiment>/.<job>.lock
    except OSError:
        return None
    return None


def _protected_inside(root: Path, kind: Marker) -> tuple[Path, str] | None:
    """The first protected folder below `root` (a store's own folders are not looked into)."""
    if not kind.look_inside:
        return None
    stack = [root]
    while stack:
        folder = stack.pop()
        try:
            with os.scandir(folder) as entries:
                subs = [Path(e.path) for e in entries if e.is_dir(follow_symlinks=False)]
        except OSError:
            continue
        for sub in subs:
            what = protected(sub)
            if what:
                return sub, what
            stack.append(sub)
    return None
