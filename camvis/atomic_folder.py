"""Staging a directory beside its final place, then renaming it in.

A directory that takes long to write (a patch store) is written under a scratch name
`.NAME.tmp-<host>-<pid>` beside its final place and renamed in once complete, so nothing
half-written ever sits under the final name; a directory it replaces is first renamed to
`.NAME.old-<host>-<pid>` and deleted only once the new one is in. A process killed midway
leaves its scratch entries behind; `remove_stale` reaps them at the next attempt.

The host is in the name because a pid only means something on its own host: directories
like these live on shared file systems, where another node's entry with a pid that is dead
here may belong to a build that still runs there. Only this host's dead entries are touched.

`scratch_dir` holds the scratch directory for the time of a write: it is removed on the way
out whatever happened, and running out of space inside is a DiskFullError naming the target.
"""

from __future__ import annotations

import os
import shutil
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from camvis.host import host, pid_alive
from camvis.io import disk_full_as_error

__all__ = ["host", "remove_stale", "scratch_dir", "scratch_path", "swap_in"]


def scratch_path(final: Path, kind: str) -> Path:
    """`.NAME.tmp-<host>-<pid>` / `.NAME.old-<host>-<pid>` beside `final` (kind "tmp" or "old"):
    the host is in the name because a pid only means something on its own host (stores live
    on shared file systems)."""
    return final.with_name(f".{final.name}.{kind}-{host()}-{os.getpid()}")


def remove_stale(final: Path) -> None:
    """Scratch dirs of `final` left on this host by processes that are gone (killed mid-build).

    An `.old-` directory whose process died between the two renames of `swap_in` is the last
    good one: it is put back when nothing took its place, not deleted. Entries of other hosts
    are left alone: whether their build still runs cannot be told from here."""
    this_host = host()
    for prefix in (f".{final.name}.tmp-", f".{final.name}.old-"):
        for path in final.parent.glob(prefix + "*"):
            owner, _, pid = path.name[len(prefix):].rpartition("-")
            if owner != this_host or not pid.isdigit() or pid_alive(int(pid)):
                continue
            if prefix.endswith(".old-") and not final.exists():
                os.replace(path, final)
            else:
                shutil.rmtree(path, ignore_errors=True)


@contextmanager
def scratch_dir(final: Path, needed: int | str | None = None,
                target: Path | None = None) -> Iterator[Path]:
    """A fresh scratch directory for `final` (this process's `.NAME.tmp-<host>-<pid>`), removed
    when the block ends, whether it moved its contents into place or failed. Running out of
    space inside is a DiskFullError naming `target` (default `final`) and `needed` bytes."""
    tmp = scratch_path(final, "tmp")
    with disk_full_as_error(target or final, needed):  # outside: the free space is told once tmp is gone
        try:
            shutil.rmtree(tmp, ignore_errors=True)
            tmp.mkdir(parents=True)
            yield tmp
        finally:
            shutil.rmtree(tmp, ignore_errors=True)


def swap_in(tmp: Path, final: Path) -> None:
    """Rename the complete `tmp` into place; an old `final` goes only once the new one is in."""
    if not final.exists():
        os.replace(tmp, final)
        return
    old = scratch_path(final, "old")
    shutil.rmtree(old, ignore_errors=True)
    os.replace(final, old)
    try:
        os.replace(tmp, final)
    except BaseException:
        os.replace(old, final)
        raise
    shutil.rmtree(old, ignore_errors=True)
