"""C kernels shipped as source, compiled on first use for the CPU they run on.

A kernel `camvis/job/NAME.c` is built with the system C compiler (`$CC`, else `cc`) into
`$CAMVIS_CACHE_DIR/native/` (default `$XDG_CACHE_HOME/camvis`, else `~/.cache/camvis`) with
`-march=native`. Compiling where it runs, rather than at install time, is what makes
`-march=native` safe on a cluster whose login and compute nodes differ; the cache key holds
the source, the flags and the CPU, so nodes of different kinds sharing one home directory
each get their own build. A build is written under a temporary name and renamed, so
concurrent jobs never load half a library. No compiler, a failed build or `CAMVIS_NATIVE=0`
raises `NativeUnavailable` with the reason; callers fall back to torch ops.
"""

from __future__ import annotations

import ctypes
import functools
import hashlib
import os
import platform
import shutil
import subprocess
import tempfile
from pathlib import Path

FLAGS = ("-O3", "-march=native", "-ffp-contract=off", "-shared", "-fPIC", "-pthread")
SOURCE_DIR = Path(__file__).parent


class NativeUnavailable(RuntimeError):
    """A C kernel cannot be had on this host; the message says why."""


def cache_root() -> Path:
    """camvis's per-user cache: $CAMVIS_CACHE_DIR, else $XDG_CACHE_HOME/camvis, else ~/.cache/camvis."""
    root = os.environ.get("CAMVIS_CACHE_DIR") or Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "camvis"
    return Path(root)


def cache_dir() -> Path:
    return cache_root() / "native"


def load(name: str) -> ctypes.CDLL:
    """The compiled kernel `camvis/job/<name>.c`, built on first use; one try per process."""
    if os.environ.get("CAMVIS_NATIVE", "1") == "0":
        raise NativeUnavailable("C kernels are disabled by CAMVIS_NATIVE=0")
    result = _load(name, os.environ.get("CC") or "cc", str(cache_dir()))
    if isinstance(result, NativeUnavailable):
        raise result
    return result


@functools.cache
def _load(name: str, compiler: str, cache: str) -> ctypes.CDLL | NativeUnavailable:
    """The library, or why not: a failure is remembered too, so it is not retried per call."""
    source = SOURCE_DIR / f"{name}.c"
    key = hashlib.sha256(b"\0".join([source.read_bytes(), " ".join(FLAGS).encode(), _cpu_id().encode()]))
    library = Path(cache) / f"{name}-{key.hexdigest()[:16]}.so"
    try:
        if not library.exists():
            _compile(source, library, compiler)
        return ctypes.CDLL(str(library))
    except NativeUnavailable as e:
        return e
    except (OSError, subprocess.SubprocessError) as e:
        return NativeUnavailable(f"cannot build or load {library}: {e}")


def _compile(source: Path, library: Path, compiler: str) -> None:
    exe = shutil.which(compiler)
    if exe is None:
        raise NativeUnavailable(f"no C compiler {compiler!r} on PATH (install gcc, or set CC) to build {source.name}")
    library.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{library.name}.", dir=library.parent)
    os.close(fd)
    try:
        done = subprocess.run([exe, *FLAGS, str(source), "-o", tmp], capture_output=True, text=True, timeout=300)
        if done.returncode != 0:
            raise NativeUnavailable(f"{compiler} failed to build {source} (exit {done.returncode}): "
                                    f"{done.stderr.strip()[-2000:]}")
        os.replace(tmp, library)
    finally:
        Path(tmp).unlink(missing_ok=True)


def _cpu_id() -> str:
    """The CPU model and feature flags: what -march=native compiles for."""
    try:
        info = Path("/proc/cpuinfo").read_text().splitlines()
    except OSError:
        return f"{platform.machine()} {platform.processor()}"
    wanted = ("model name", "flags", "Features", "CPU part", "CPU implementer")
    fields = {}
    for line in info:
        key, _, value = line.partition(":")
        key = key.strip()
        if key in wanted and key not in fields:
            fields[key] = value.strip()
    return platform.machine() + " " + " | ".join(f"{k}={fields[k]}" for k in sorted(fields))
