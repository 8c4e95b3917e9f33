"""What makes a model bundle trustworthy before it predicts: model.json's schema, its digest, and
the SHA-256 of every file it names (camvis.job.export writes them; load_bundle checks them).

- Schema: every field a prediction uses is typed and bounded; an error is one line naming the field.
- Files: `weights.file` and `onnx.file` are plain file names inside the bundle (no folders, no
  absolute paths, no symlink out of it), read once: the bytes hashed are the bytes loaded.
- Digest: model.json carries the SHA-256 of its own canonical content (every key but `digest`),
  so an edited `factors` or a swapped file with its hash rewritten by hand is refused too.
These checks catch swapped, edited and corrupted bundles; they are not a signature (anyone who
recomputes every hash can forge one: keep bundles where only their owners write).
"""

from __future__ import annotations

import hashlib
import json
import math
import re
from pathlib import Path
from typing import Any

from camvis.errors import PredictError
from camvis.job.inputs import read_regular

MAX_JSON_BYTES = 16 << 20      # model.json: text, a config and scores
MAX_FILE_BYTES = 4 << 30       # weights.pt / model.onnx of any architecture camvis builds
FILE_NAME = re.compile(r"[A-Za-z0-9_-][A-Za-z0-9._-]{0,127}")
SHA256 = re.compile(r"[0-9a-f]{64}")
LIMITS = {"num_levels": (1, 16), "size_hidden": (1, 4096), "factors": (1, 4096), "patch_size": (4, 1024)}


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def digest(info: dict[str, Any]) -> str:
    """SHA-256 of model.json's canonical content without its `digest` key."""
    body = {k: v for k, v in info.items() if k != "digest"}
    return sha256_bytes(json.dumps(body, sort_keys=True, separators=(",", ":")).encode())


# --------------------------------------------------------------------------- schema


def _where(path: Path, key: str) -> str:
    return f"{path}: {key}"


def _int(info: dict[str, Any], key: str, lo: int, hi: int, where: Path, label: str | None = None) -> int:
    value = info.get(key)
    if isinstance(value, bool) or not isinstance(value, int) or not lo <= value <= hi:
        raise PredictError(f"{_where(where, label or key)} must be an integer in [{lo}, {hi}], got {value!r}")
    return value


def _str(info: dict[str, Any], key: str, where: Path, label: str | None = None, max_len: int = 300) -> str:
    value = info.get(key)
    if not isinstance(value, str) or not value or len(value) > max_len or not value.isprintable():
        raise PredictError(f"{_where(where, label or key)} must be a one-line string of 1..{max_len} "
                           f"characters, got {_short(value)}")
    return value


def _bool(info: dict[str, Any], key: str, where: Path, label: str) -> None:
    if not isinstance(info.get(key), bool):
        raise PredictError(f"{_where(where, label)} must be true or false, got {_short(info.get(key))}")


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _matrix(info: dict[str, Any], key: str, rows: int, where: Path, positive: bool) -> None:
    value = info.get(key)
    shaped = isinstance(value, list) and len(value) == rows and all(
        isinstance(r, list) and len(r) == 4 for r in value)
    if not shaped:
        raise PredictError(f"{_where(where, key)} must be {rows} x 4 numbers (one row per factor: R, G, B, "
                           f"log-depth), got {_short(value)}")
    for row in value:
        for x in row:
            ok = (not isinstance(x, bool) and isinstance(x, (int, float)) and math.isfinite(x) and abs(x) <= 1e6
                  and (x > 0 or not positive))
            if not ok:
                raise PredictError(f"{_where(where, key)} must hold finite numbers{' > 0' if positive else ''} "
                                   f"of at most 1e6, got {_short(x)}")


def _file_entry(info: dict[str, Any], key: str, where: Path) -> dict[str, Any]:
    entry = info.get(key)
    if not isinstance(entry, dict):
        raise PredictError(f"{_where(where, key)} must be an object with file and sha256, got {_short(entry)}")
    name = entry.get("file")
    if not isinstance(name, str) or not FILE_NAME.fullmatch(name):
        raise PredictError(f"{_where(where, key + '.file')} must be a file name inside the bundle (letters, "
                           f"digits, . _ -; no folders), got {_short(name)}")
    if not isinstance(entry.get("sha256"), str) or not SHA256.fullmatch(entry["sha256"]):
        raise PredictError(f"{_where(where, key + '.sha256')} must be 64 lowercase hex digits, got "
                           f"{_short(entry.get('sha256'))}")
    return entry


def check_schema(info: Any, where: Path, preprocessing: tuple[str, ...]) -> None:
    """Every field a prediction reads: type and bounds; one line naming the first bad field."""
    if not isinstance(info, dict):
        raise PredictError(f"{where}: expected a JSON object, got {type(info).__name__}")
    _str(info, "model_id", where)
    arch = info.get("architecture")
    if not isinstance(arch, dict):
        raise PredictError(f"{_where(where, 'architecture')} must be an object, got {_short(arch)}")
    levels = _int(arch, "num_levels", *LIMITS["num_levels"], where, "architecture.num_levels")
    _int(arch, "num_channels", 4, 4, where, "architecture.num_channels")
    _int(arch, "size_hidden", *LIMITS["size_hidden"], where, "architecture.size_hidden")
    for key in ("share_weights", "use_mlp", "align_features"):
        _bool(arch, key, where, f"architecture.{key}")
    extra = sorted(set(arch) - {"num_levels", "num_channels", "size_hidden", "share_weights", "use_mlp",
                                "align_features", "patch_size"})
    if extra:
        raise PredictError(f"{_where(where, 'architecture')} has unknown key(s) {', '.join(extra)}")
    patch = _int(info, "patch_size", *LIMITS["patch_size"], where)
    if patch & (patch - 1):
        raise PredictError(f"{_where(where, 'patch_size')} must be a power of 2, got {patch}")
    if arch.get("patch_size") != patch:
        raise PredictError(f"{_where(where, 'architecture.patch_size')} must equal patch_size ({patch}), "
                           f"got {_short(arch.get('patch_size'))}")
    factors = info.get("factors")
    lo, hi = LIMITS["factors"]
    if (not isinstance(factors, list) or len(factors) != levels
            or any(isinstance(f, bool) or not isinstance(f, int) or not lo <= f <= hi for f in factors)
            or any(a >= b for a, b in zip(factors, factors[1:]))):
        raise PredictError(f"{_where(where, 'factors')} must be {levels} increasing integers in [{lo}, {hi}] "
                           f"(architecture.num_levels), got {_short(factors)}")
    _matrix(info, "norm_mean", levels, where, positive=False)
    _matrix(info, "norm_std", levels, where, positive=True)
    mode = info.get("preprocessing", "exact")
    if mode not in preprocessing:
        raise PredictError(f"{_where(where, 'preprocessing')} must be one of {', '.join(preprocessing)}, "
                           f"got {_short(mode)}")
    _file_entry(info, "weights", where)
    if info.get("onnx") is not None:
        _file_entry(info, "onnx", where)
    if not isinstance(info.get("digest"), str) or not SHA256.fullmatch(info["digest"]):
        raise PredictError(f"{_where(where, 'digest')} must be 64 lowercase hex digits, got "
                           f"{_short(info.get('digest'))}")


# --------------------------------------------------------------------------- files


def verified_file(bundle: Path, entry: dict[str, Any], what: str) -> bytes:
    """The bytes of a file the bundle names, once they match their recorded SHA-256."""
    path = bundle / entry["file"]
    if path.is_symlink() or not path.resolve().is_relative_to(bundle.resolve()):
        raise PredictError(f"{path}: the bundle's {what} must be a file inside the bundle, not a link")
    data = read_regular(path, MAX_FILE_BYTES, f"bundle's {what}")
    if sha256_bytes(data) != entry["sha256"]:
        raise PredictError(f"{path}: the bundle's {what} does not match the SHA-256 in model.json (replaced "
                           f"or corrupted after export); export the job again")
    return data
