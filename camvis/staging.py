"""Staging a directory beside its final place, then renaming it in.

A directory that takes long to write (a patch store) is written under a scratch name
`.NAME.tmp-<host>-<pid>` beside its final place and renamed in once complete, so nothing
half-written ever sits under the final name; a directory it replaces is first renamed to
`.NAME.old-<host>-<pid>` and deleted only once the new one is in. A process killed midway
leaves its scratch entries behind; `remove_stale` reaps them at the next attempt.

The host is in the name because a pid only means something on its own host: directories
like these live on shared file systems, where another node's entry with a pid that is dead
here may belong to a build that still runs there. Only this host's dead entries are touched.
"""

from __future__ import annotations

import os
import re
import shutil
import socket
from pathlib import Path


def host() -> str:
    """This machine's name, safe in a file name (pid is parsed after its last '-')."""
    return re.sub(r"[^A-Za-z0-9._-]", "_", socket.gethostname()) or "unknown-host"


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
            if owner != this_host or not pid.isdigit() or _alive(int(pid)):
                continue
            if prefix.endswith(".old-") and not final.exists():
                os.replace(path, final)
            else:
                shutil.rmtree(path, ignore_errors=True)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


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
