"""Which training speed-ups a job uses: torch.compile of the forward and Adam's fused kernel.

train.compile and train.fused_adam are "auto", true or false. true/false force a speed-up (on the CPU
too: torch has both there). "auto" is off on the CPU, so CPU training stays what it was bit for bit;
on CUDA it follows the verdict the GPU check (benchmarks/gpu_check.py, `make gpu-check`) recorded for
this GPU model and torch version, at $CAMVIS_CACHE_DIR/speedups/<GPU>-torch<version>.json (camvis's
cache, camvis.job.native.cache_root); with no verdict, off (what camvis did before it measured).

The verdict takes the fastest variant measured only if it beats plain eager training by MIN_GAIN:
anything closer is noise, and eager is the path every test covers. It is JSON and only read as data.
Neither key is in any hash (camvis.config.NOT_HASHED): a speed-up never changes a job's identity.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from camvis.config import JobConfig
from camvis.errors import CamvisError
from camvis.host import now_iso
from camvis.io import write_json
from camvis.job.native import cache_root

MIN_GAIN = 0.03
"""A variant must train this much faster than eager (samples/s) to be chosen."""
VARIANTS = {"eager": (False, False), "eager_fused_adam": (False, True), "compiled": (True, False),
            "compiled_fused_adam": (True, True)}
"""The GPU check's training variants -> (compile, fused_adam)."""
FORMAT = "camvis-speedups"


class VerdictError(CamvisError):
    """A verdict file that is not what the GPU check writes."""


@dataclass(frozen=True)
class Speedups:
    compile: bool
    fused_adam: bool
    chosen_by: str
    """config (both forced), cpu (auto is off on the CPU), verdict (the GPU check's), no verdict
    (auto on CUDA with none recorded: off); config+<reason> when one key is forced, one auto."""

    def record(self) -> dict[str, Any]:
        """For progress.json and scores.json."""
        return {"compile": self.compile, "fused_adam": self.fused_adam, "chosen_by": self.chosen_by}


def choose(cfg: JobConfig, device: torch.device, device_name: str | None = None,
           torch_version: str | None = None) -> Speedups:
    """The speed-ups `cfg` asks for on `device`. Reads the verdict file only when a key is auto on CUDA
    (`device_name`: torch.cuda.get_device_name(device) when None)."""
    wanted = {"compile": cfg.train.compile, "fused_adam": cfg.train.fused_adam}
    auto = [key for key, value in wanted.items() if value == "auto"]
    if not auto:
        return Speedups(bool(wanted["compile"]), bool(wanted["fused_adam"]), "config")
    if device.type != "cuda":
        verdict, reason = {"compile": False, "fused_adam": False}, "cpu"
    else:
        name = device_name if device_name is not None else torch.cuda.get_device_name(device)
        version = torch_version if torch_version is not None else torch.__version__
        path = verdict_path(name, version)
        found = read_verdict(path)
        if found is not None and (found["device"], found["torch"]) != (name, version):
            raise VerdictError(f"{path}: records {found['device']} with torch {found['torch']}, expected this "
                               f"job's {name} with torch {version}: delete it or rerun make gpu-check")
        verdict, reason = (found["chosen"], "verdict") if found else ({"compile": False, "fused_adam": False},
                                                                      "no verdict")
    flags = {key: bool(verdict[key]) if key in auto else bool(wanted[key]) for key in wanted}
    return Speedups(flags["compile"], flags["fused_adam"], reason if len(auto) == 2 else f"config+{reason}")


# --------------------------------------------------------------------------- the verdict file


def slug(text: str) -> str:
    """A file-name-safe form of a device name or version ('NVIDIA H100 80GB HBM3' -> 'NVIDIA-H100-80GB-HBM3')."""
    return re.sub(r"[^A-Za-z0-9.+]+", "-", text).strip("-.") or "unknown"


def verdict_path(device_name: str, torch_version: str | None = None) -> Path:
    version = torch_version if torch_version is not None else torch.__version__
    return cache_root() / "speedups" / f"{slug(device_name)}-torch{slug(version)}.json"


def verdict_from_training(training: dict[str, Any], device_name: str, torch_version: str | None = None
                          ) -> dict[str, Any] | None:
    """The verdict of the GPU check's `training` part ({"variants": {name: {"samples_per_s": ...}}}), or
    None when eager was not measured (nothing to compare with)."""
    rates = {name: float(result["samples_per_s"]) for name, result in (training.get("variants") or {}).items()
             if name in VARIANTS and isinstance(result, dict) and isinstance(result.get("samples_per_s"), (int, float))
             and result["samples_per_s"] > 0}
    if "eager" not in rates:
        return None
    fastest = max(rates, key=rates.get)
    pick = fastest if rates[fastest] >= rates["eager"] * (1 + MIN_GAIN) else "eager"
    compile_, fused = VARIANTS[pick]
    return {"format": FORMAT, "device": device_name,
            "torch": torch_version if torch_version is not None else torch.__version__,
            "samples_per_s": rates, "fastest": fastest, "picked": pick, "min_gain": MIN_GAIN,
            "chosen": {"compile": compile_, "fused_adam": fused}, "measured": now_iso()}


def write_verdict(verdict: dict[str, Any], path: Path | None = None) -> Path:
    """Write `verdict` (atomically) where jobs on its GPU and torch look for it; returns the path."""
    path = path if path is not None else verdict_path(verdict["device"], verdict["torch"])
    write_json(path, verdict)
    return path


def read_verdict(path: Path) -> dict[str, Any] | None:
    """The verdict in `path`, None if there is none; a file that is not one is a VerdictError naming it."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return None
    except (OSError, UnicodeDecodeError) as e:
        raise VerdictError(f"{path}: cannot read the GPU check's speed-up verdict ({e}); delete it or rerun "
                           f"make gpu-check") from e
    try:
        data = json.loads(text)
    except ValueError as e:
        raise VerdictError(f"{path}: not JSON ({e}); expected the GPU check's speed-up verdict: delete it or "
                           f"rerun make gpu-check") from e
    problem = _verdict_problem(data)
    if problem:
        raise VerdictError(f"{path}: {problem}; expected a JSON object with device, torch and chosen "
                           f"{{compile: bool, fused_adam: bool}} (benchmarks/gpu_check.py writes it): delete it or "
                           f"rerun make gpu-check")
    return data


def _verdict_problem(data: Any) -> str | None:
    if not isinstance(data, dict):
        return f"expected a JSON object, got {type(data).__name__}"
    for key in ("device", "torch"):
        if not isinstance(data.get(key), str):
            return f"{key}: expected a string, got {data.get(key)!r}"
    chosen = data.get("chosen")
    if not isinstance(chosen, dict):
        return f"chosen: expected an object, got {chosen!r}"
    for key in ("compile", "fused_adam"):
        if not isinstance(chosen.get(key), bool):
            return f"chosen.{key}: expected true or false, got {chosen.get(key)!r}"
    return None
