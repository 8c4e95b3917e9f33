"""Staging a patch store to node-local scratch, once per node (`data.stage`).

When the jobs of an array share a node, each one reading the store from the shared file system
reads it once per job; with `data.stage: PATH` the first job of the node copies the store to
PATH/camvis-stage/<digest>/ and every later job of the node opens that copy instead.

- One copy per node: the copy is made under an fcntl lock (camvis.locks) beside it, so jobs that
  start together wait for the first one's copy instead of each making their own.
- Nothing partial under the final name: the copy is written to `.DIGEST.tmp-<host>-<pid>` and
  renamed in (camvis.atomic_folder); a job killed mid-copy leaves only that scratch folder, which
  the next job of the node reaps (its pid is dead).
- Trusted by name and manifest: <digest> is a hash of the store's root attributes, which hold a
  CRC-32 of every block, so equal digests mean equal contents. A copy is reused only if its
  manifest (written last, inside the scratch folder, before the rename) names that digest and
  every file it lists is there with its size; else it is made afresh. A block altered in place
  is caught when a job maps it and its file's mtime no longer matches the node's verification
  marker (camvis.data.store_map): the job then `discard`s that copy and stages again
  (camvis.job.startup).
- Always mappable: the copy's level arrays are raw bytes (camvis.data.store_map), whatever the source's:
  a compressed store's levels are decoded (each block's CRC-32 checked) and written uncompressed,
  everything else is copied file for file; the root attributes, hence the digest, stay the same (the
  checksums are of the decoded values). Every block of the copy is then CRC-checked once through its
  maps and the node's verification marker written, so the node's jobs map it without checking again.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Mapping

from camvis import locks
from camvis.data import store_map
from camvis.data.store import PatchStore, open_store
from camvis.atomic_folder import remove_stale, scratch_dir, scratch_path, swap_in
from camvis.config import stage_problem
from camvis.errors import ConfigError, StoreError
from camvis.io import format_bytes, free_bytes, host, write_json

STAGE_DIR = "camvis-stage"
MANIFEST = ".camvis-stage.json"
FREE_MARGIN = 1 << 30
"""Space left free on the node-local disk after a copy (jobs write there too)."""
_VAR = re.compile(r"\$(?:\{(\w+)\}|(\w+))")


@dataclass(frozen=True)
class Staged:
    """Where a job reads its store from, and what staging it cost."""

    path: Path            # the staged copy, or the source where staging was skipped
    action: str           # "copied", "reused" or "skipped" (no room: the shared path is read)
    seconds: float        # waiting for the lock, checking and copying
    nbytes: int           # bytes copied (0 unless copied)
    copy_id: str | None   # the copy's id in its manifest (discard removes only that copy)
    note: str = ""        # why it was skipped


# --------------------------------------------------------------------------- the config value


def resolve_root(value: str, environ: Mapping[str, str] = os.environ) -> Path:
    """data.stage's folder on this node: variables expanded; an absolute, existing folder, else a
    ConfigError naming the key (variables are only known where the job runs)."""
    where = f"data.stage = {value!r}"
    problem = stage_problem(value)
    if problem:
        raise ConfigError(problem)
    unset = [a or b for a, b in _VAR.findall(value) if not environ.get(a or b)]
    if unset:
        raise ConfigError(f"{where}: environment variable {unset[0]} is not set (or empty) on host {host()}, "
                          "where the job runs; set it or name the folder")
    path = Path(_VAR.sub(lambda m: environ[m[1] or m[2]], value))
    if not path.is_absolute():
        raise ConfigError(f"{where}: expands to the relative path {str(path)!r} on host {host()}; "
                          "expected an absolute folder")
    if not path.is_dir():
        raise ConfigError(f"{where}: {path} is not an existing folder on host {host()}; expected a "
                          "node-local folder (camvis makes camvis-stage/ inside it)")
    return path


# --------------------------------------------------------------------------- identity


def store_digest(source: Path) -> str:
    """SHA-256 (16 hex digits) of the store's root attributes (store_map.digest_of): they hold a CRC-32
    of every block and a digest of every other attribute, so two stores with the same digest hold the
    same data."""
    meta = source / "zarr.json"
    try:
        attrs = json.loads(meta.read_text()).get("attributes")
    except (OSError, ValueError, AttributeError) as e:
        raise StoreError(f"{source}: cannot read {meta.name} to stage the store ({e}); is it a camvis "
                         "store? (build it with camvis-data build)") from e
    if not isinstance(attrs, dict) or not isinstance(attrs.get("checksums"), dict):
        raise StoreError(f"{source}: no block checksums in its attributes, so no digest to stage it "
                         "under; rebuild it with camvis-data build --force")
    return store_map.digest_of(attrs)


def _listing(root: Path) -> dict[str, int]:
    """Every file under `root` but the manifest: relative path -> size."""
    out = {}
    for dirpath, _, names in os.walk(root):
        for name in names:
            path = Path(dirpath) / name
            rel = path.relative_to(root).as_posix()
            if rel != MANIFEST:
                out[rel] = path.stat().st_size
    return out


def copy_problem(staged: Path, digest: str) -> str | None:
    """Why the copy at `staged` must not be used (None: use it): no manifest (never renamed in
    by a finished copy), another digest, or files missing, added or of another size."""
    try:
        manifest = json.loads((staged / MANIFEST).read_text())
    except FileNotFoundError:
        return "no manifest"
    except (OSError, ValueError) as e:
        return f"unreadable manifest ({e})"
    if not isinstance(manifest, dict) or manifest.get("digest") != digest:
        return "its manifest names another store"
    try:
        found = _listing(staged)
    except OSError as e:
        return f"unreadable ({e})"
    if found != manifest.get("files"):
        listed = manifest.get("files") if isinstance(manifest.get("files"), dict) else {}
        changed = sorted(set(found.items()) ^ set(listed.items()))
        return f"{len(changed)} files differ from its manifest (first: {changed[0][0] if changed else '?'})"
    try:
        same = store_digest(staged) == digest
    except StoreError as e:
        return str(e)
    return None if same else "its attributes differ from the source's"


def copy_id(staged: Path) -> str | None:
    try:
        return json.loads((staged / MANIFEST).read_text()).get("id")
    except (OSError, ValueError, AttributeError):
        return None


# --------------------------------------------------------------------------- staging


def stage_store(source: str | os.PathLike, root: Path, on_wait: Callable[[str], None] | None = None) -> Staged:
    """The store at `source` staged under root/camvis-stage/<digest>/ (copied by the first job of
    the node, reused by the others); the source itself where the node-local disk lacks room."""
    start = time.perf_counter()
    source = Path(source)
    if not source.is_dir():
        raise StoreError(f"{source}: no such store (build it with camvis-data build)")
    digest = store_digest(source)
    base = root / STAGE_DIR
    base.mkdir(exist_ok=True)
    final = base / digest
    with locks.exclusive(base / f".{digest}.lock", f"staging {source}", on_wait=on_wait):
        remove_stale(final)  # the scratch folder of a job killed mid-copy
        if copy_problem(final, digest) is None:
            return Staged(final, "reused", time.perf_counter() - start, 0, copy_id(final))
        if final.exists():  # a copy that must not be used (see copy_problem): never read, so removed now
            _remove(final)
        files = _listing(source)
        opened = open_store(source)
        packed = {} if opened.mapped else _level_files(files)  # compressed level files: decoded instead
        need = sum(files.values()) - sum(packed.values()) + sum(
            0 if opened.mapped else a.nbytes for pair in opened.levels.values() for a in pair)
        free = free_bytes(base)
        if free is not None and free < need + FREE_MARGIN:
            note = (f"data.stage: {base} has {format_bytes(free)} free, the store needs {format_bytes(need)} "
                    f"and {format_bytes(FREE_MARGIN)} is kept free: reading {source} instead")
            return Staged(source, "skipped", time.perf_counter() - start, 0, None, note)
        ident = uuid.uuid4().hex
        with scratch_dir(final, need) as tmp:
            _copy_files(source, tmp, {k: v for k, v in files.items() if k not in packed})
            if packed:
                _write_raw_levels(opened, tmp)
            if store_digest(tmp) != digest:  # rebuilt between the digest and the copy
                raise StoreError(f"{source}: its attributes changed while it was staged: was the store "
                                 "rebuilt meanwhile? run the job again")
            copy = open_store(tmp)  # maps every level file, sizes checked
            arrays = {a.name: a for pair in copy.levels.values() for a in pair}
            store_map.check_blocks(f"store {source} (its copy {final})", arrays, copy.attrs["checksums"])
            write_json(tmp / MANIFEST, {"digest": digest, "id": ident, "source": str(source), "host": host(),
                                        "files": _listing(tmp)})
            swap_in(tmp, final)
        # the files keep their sizes and mtimes through the rename: the node's jobs need not check again
        store_map.record_verified(final, digest, {k: v for a in arrays.values() for k, v in a.files.items()})
    return Staged(final, "copied", time.perf_counter() - start, need, ident)


def _level_files(files: Mapping[str, int]) -> dict[str, int]:
    """The level arrays' chunk files among `files` (their zarr.json too: the copy's differ)."""
    return {k: v for k, v in files.items() if k.startswith("levels/") and k.count("/") >= 3}


def _write_raw_levels(store: PatchStore, target: Path) -> None:
    """Every level array of the compressed `store` into `target`, uncompressed (the mappable layout):
    block by block, each checked against its CRC-32 as it is decoded."""
    import zarr

    from camvis.data.store_build import create_level_array

    root = zarr.open_group(target, mode="r+")
    for f, (images, depth) in store.levels.items():
        for kind, array, read in (("images", images, store.read_image), ("depth", depth, store.read_depth)):
            out = create_level_array(root, f"levels/{f}/{kind}", tuple(array.shape), compress=False)
            for k in range(array.shape[0]):
                out[k] = read(f, k)


def _copy_files(source: Path, target: Path, files: Mapping[str, int]) -> None:
    """Copy `files` (relative path -> size at listing time; shutil.copyfile: in-kernel on Linux); a
    file that changed size meanwhile (the store rebuilt under the job) is an error, not a copy of
    a store that never existed."""
    for rel, size in files.items():
        dst = target / rel
        dst.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(source / rel, dst)
        copied = dst.stat().st_size
        if copied != size:
            raise StoreError(f"{source}: {rel} changed size while it was staged ({size} -> {copied} bytes): "
                             "was the store rebuilt meanwhile? run the job again")


def discard(staged: Staged) -> bool:
    """Remove a staged copy a job found corrupt (a block failed its CRC-32), unless another job
    already replaced it (its manifest holds another id). True if this call removed it."""
    if staged.action != "copied" and staged.action != "reused":
        return False
    final = staged.path
    with locks.exclusive(final.parent / f".{final.name}.lock", f"discarding {final}"):
        if copy_id(final) != staged.copy_id:
            return False
        _remove(final)
    return True


def _remove(final: Path) -> None:
    """Out of the final name first (a scratch name, reaped if this process dies before the
    rmtree ends): no job ever opens a half-deleted copy."""
    aside = scratch_path(final, "tmp")
    shutil.rmtree(aside, ignore_errors=True)
    os.replace(final, aside)
    shutil.rmtree(aside, ignore_errors=True)
