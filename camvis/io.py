"""Atomic file writing: a reader never sees a half-written file under its final name.

A file is written as `.NAME.<host>.<pid>.XXXXXXXX.tmp` beside its final place and renamed onto
it once complete. The host and pid in the name tell a killed writer's leftover from a live
one's: `reap_stale_tmp` removes those of this host whose process is gone (a pid means nothing
on another host of a shared file system, so other hosts' files are left alone).

A write that runs out of room (ENOSPC: disk full, EDQUOT: quota exceeded, EFBIG: file too
large) is a DiskFullError naming the file, the bytes it needed where known and the bytes free.
"""

from __future__ import annotations

import errno
import json
import os
import re
import shutil
import tempfile
from contextlib import contextmanager
from io import BytesIO
from pathlib import Path
from typing import Any, Iterator

from camvis.errors import CamvisError, DiskFullError, PathError
from camvis.host import host, pid_alive

DISK_FULL_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EFBIG})


# --------------------------------------------------------------------------- disk full


@contextmanager
def disk_full_as_error(path: str | os.PathLike, needed: int | str | None = None) -> Iterator[None]:
    """Inside this block, ENOSPC / EDQUOT / EFBIG become a DiskFullError naming `path` and
    `needed` (bytes, or words such as "up to 3.1 GiB" where only a bound is known)."""
    try:
        yield
    except DiskFullError:
        raise
    except OSError as e:
        if e.errno not in DISK_FULL_ERRNOS:
            raise
        raise disk_full_error(path, e, needed) from e


def disk_full_error(path: str | os.PathLike | None, error: OSError,
                    needed: int | str | None = None) -> DiskFullError:
    """One line: what could not be written, why, the space it needs and the space left.
    `path` None: the one the error names, if any (a writer camvis does not own)."""
    kind = _KINDS[error.errno]
    named = path if path is not None else error.filename
    if named is None:
        return _disk_full(f"{kind}: a write failed; {_REMEDY[error.errno]}", error, None)
    path, free = Path(named), free_bytes(named)
    if isinstance(needed, int):
        needed = format_bytes(needed)
    need = f"; it needs {needed}" if needed is not None else ""
    left = f", {format_bytes(free)} free there" if free is not None and error.errno != errno.EFBIG else ""
    return _disk_full(f"{kind}: cannot write {path}{need}{left}; {_REMEDY[error.errno]}", error, path)


def os_error(error: OSError) -> CamvisError | None:
    """The one-line CamvisError of an OSError a user can fix at a path (a full disk, a read-only or
    forbidden place, a file where a folder is expected or the reverse), naming the path; None for others."""
    if isinstance(error, CamvisError):
        return error
    if error.errno in DISK_FULL_ERRNOS:
        return disk_full_error(None, error)
    why = _PATH_PROBLEMS.get(error.errno)  # type: ignore[arg-type]
    if why is None:
        return None
    named = error.filename2 if error.filename2 is not None else error.filename  # a rename: its destination
    mapped = PathError(f"{final_name(named) if named is not None else 'a path'}: {why}")
    mapped.errno, mapped.strerror, mapped.filename = error.errno, error.strerror, error.filename
    return mapped


_TMP_NAME = re.compile(r"\.(.+)\.(?:tmp-[^/]+|[^./]+\.\d+\.[a-z0-9_]+\.tmp)")


def final_name(path: str | os.PathLike) -> str:
    """The name a camvis temporary (`.NAME.<host>.<pid>.XXXXXXXX.tmp`, `.NAME.tmp-<host>-<pid>`) stands for,
    so that an error names the user's path, not the scratch one; any other path as it is."""
    path = os.fsdecode(path)
    match = _TMP_NAME.fullmatch(os.path.basename(path))
    return os.path.join(os.path.dirname(path), match[1]) if match else path


_PATH_PROBLEMS = {
    errno.EROFS: "read-only file system: write somewhere writable",
    errno.EACCES: "permission denied: write somewhere you may, or fix the permissions",
    errno.EPERM: "operation not permitted: write somewhere you may, or fix the permissions",
    errno.ENOTDIR: "not a directory: a part of the path is a file where a folder is expected",
    errno.EISDIR: "is a directory: a file is expected there",
    errno.EEXIST: "exists and is not a folder: a folder is expected there",
}
_KINDS = {errno.ENOSPC: "disk full", errno.EDQUOT: "disk quota exceeded", errno.EFBIG: "file too large"}
_REMEDY = {
    errno.ENOSPC: "free some space or write elsewhere, then run again",
    errno.EDQUOT: "your quota is used up (see `quota -s`): free some of it or write elsewhere, "
                  "then run again",
    errno.EFBIG: "it is above the file system's or this process's file size limit (`ulimit -f`): "
                 "write elsewhere or raise the limit",
}


def _disk_full(text: str, error: OSError, path: Path | None) -> DiskFullError:
    full = DiskFullError(text)  # with the cause's errno, for code that looks at it
    full.errno, full.strerror = error.errno, error.strerror
    full.filename = str(path) if path is not None else None
    return full


def free_bytes(path: str | os.PathLike) -> int | None:
    """Bytes free to this user on the file system holding `path` (or its nearest existing parent)."""
    probe = Path(path).absolute()
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    try:
        return shutil.disk_usage(probe).free
    except OSError:
        return None


def format_bytes(n: int) -> str:
    size = float(n)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if size < 1024 or unit == "TiB":
            return f"{int(size)} B" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    raise AssertionError("unreachable")


# --------------------------------------------------------------------------- atomic writes


@contextmanager
def atomic_path(path: str | os.PathLike, needed: int | str | None = None) -> Iterator[Path]:
    """Yield a temporary path beside `path`; rename it onto `path` only if the block succeeds.
    The temporary file goes in every case; running out of space is a DiskFullError (`needed`:
    the bytes to write, for its message)."""
    path = Path(path)
    with disk_full_as_error(path, needed):
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=tmp_prefix(path.name), suffix=".tmp")
        os.close(fd)
        tmp_path = Path(tmp)
        try:
            os.chmod(tmp_path, 0o666 & ~_UMASK)  # mkstemp makes 0600; results are shared on a cluster
            yield tmp_path
            os.replace(tmp_path, path)
        finally:
            tmp_path.unlink(missing_ok=True)


def tmp_prefix(name: str) -> str:
    """`.NAME.<host>.<pid>.`: mkstemp appends 8 characters of [a-z0-9_] and `.tmp`."""
    return f".{name}.{host()}.{os.getpid()}."


def reap_stale_tmp(directory: str | os.PathLike, recursive: bool = False) -> list[Path]:
    """Remove the temporary files that killed writers of this host left in `directory` (its
    subfolders too if `recursive`); a live writer's and other hosts' are kept. Returns the removed."""
    directory = Path(directory)
    if not directory.is_dir():
        return []
    mine = re.compile(rf"\..+\.{re.escape(host())}\.(\d+)\.[a-z0-9_]+\.tmp")
    removed = []
    for path in directory.rglob(".*.tmp") if recursive else directory.glob(".*.tmp"):
        match = mine.fullmatch(path.name)
        if match and path.is_file() and not pid_alive(int(match[1])):
            path.unlink(missing_ok=True)
            removed.append(path)
    return removed


def _read_umask() -> int:
    """The process umask (read once: setting it back and forth per write would race with threads)."""
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


_UMASK = _read_umask()


def write_bytes(path: str | os.PathLike, data: bytes | memoryview) -> None:
    with atomic_path(path, needed=len(data)) as tmp:
        tmp.write_bytes(data)


def write_text(path: str | os.PathLike, text: str) -> None:
    write_bytes(path, text.encode("utf-8"))


def write_csv(frame: Any, path: str | os.PathLike, **to_csv: Any) -> None:
    """A pandas DataFrame as CSV (no index unless asked); rendered first, so its size is known."""
    write_text(path, frame.to_csv(None, **{"index": False, **to_csv}))


def write_json(path: str | os.PathLike, obj: Any) -> None:
    write_text(path, json.dumps(obj, indent=2, sort_keys=True, default=_jsonable) + "\n")


def write_torch(path: str | os.PathLike, payload: Any) -> None:
    """torch.save, atomically. Serialized in memory first: torch's zip writer reports a full disk
    as a bare RuntimeError ("unexpected pos"); a plain write reports ENOSPC, and the size is known."""
    import torch  # here, not at module level: the launcher side imports camvis.io

    buffer = BytesIO()
    torch.save(payload, buffer)
    write_bytes(path, buffer.getbuffer())


def json_copy(obj: Any) -> Any:
    """A deep copy in JSON's own types (tuples and sets as lists, keys as strings): what a YAML or
    JSON file would give back, so configs and digests see the same value however it was built."""
    return json.loads(json.dumps(obj, default=list))


def _jsonable(value: Any) -> Any:
    """numpy scalars and arrays, paths: what json cannot write by itself."""
    if hasattr(value, "tolist"):
        return value.tolist()
    if isinstance(value, os.PathLike):
        return os.fspath(value)
    raise TypeError(f"cannot write {type(value).__name__} as JSON")
