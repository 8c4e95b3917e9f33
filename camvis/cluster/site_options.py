"""One set of site options for every command that submits to SLURM: camvis-launch, camvis-data build
--slurm, camvis-predict --slurm and camvis-doctor --on-node take the same --profile, --partition,
--account, --qos, --setup, --time and --mem-gb, defined here once (`site_parser`, an argparse parent
parser), and read them through one resolver (`site_settings`: the profile's `slurm:` section with the
flags over it). No torch here: login side.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from camvis.cluster.slurm_settings import SlurmSettings, parse_slurm_settings
from camvis.errors import ConfigError

FLAGS = {"partition": "--partition", "account": "--account", "qos": "--qos", "time": "--time", "mem_gb": "--mem-gb"}


def site_parser() -> argparse.ArgumentParser:
    """The parent parser of the site options (argparse `parents=[site_parser()]`)."""
    parent = argparse.ArgumentParser(add_help=False)
    group = parent.add_argument_group("site (SLURM) options, over the site profile's slurm: section")
    group.add_argument("--profile", metavar="FILE",
                       help="site profile YAML with a slurm: section, e.g. slurm/profiles/example-site.yaml "
                            "(default: $CAMVIS_PROFILE, else camvis.yaml's profile)")
    for key in ("partition", "account", "qos"):
        group.add_argument(f"--{key}", help=f"SLURM {key} (default: the profile's, else the cluster's)")
    group.add_argument("--setup", action="append", default=[], metavar="LINE",
                       help="shell line the job script runs first, after the profile's (repeatable)")
    group.add_argument("--time", type=int, metavar="MIN", help="time limit in minutes")
    group.add_argument("--mem-gb", type=float, metavar="GB", help="memory per node in GB (default: the cluster's)")
    return parent


def load_profile(path: str | Path) -> dict[str, Any]:
    """A site profile's `slurm:` mapping (unchecked: the grid or `site_settings` checks its keys)."""
    from camvis.config import load_yaml

    prof = load_yaml(path)
    if [k for k in prof if k != "slurm"] or not isinstance(prof.get("slurm") or {}, dict):
        raise ConfigError(f"{path}: a site profile holds one `slurm:` mapping, got keys {sorted(prof)}")
    return dict(prof.get("slurm") or {})


def flag_values(args: argparse.Namespace) -> dict[str, Any]:
    """The site flags given on the command line, as slurm-section keys (setup: the lines to append)."""
    given = {key: getattr(args, key) for key in FLAGS if getattr(args, key, None) is not None}
    setup = list(getattr(args, "setup", None) or [])
    return {**given, **({"setup": setup} if setup else {})}


def site_settings(args: argparse.Namespace, **defaults: Any) -> SlurmSettings:
    """The resources of a job of `args`: `defaults` (the command's own, e.g. time=60), under the profile's
    slurm section, under the flags; setup lines add up (the profile's, then --setup's). One ConfigError
    names the profile or the flag of every problem."""
    profile = getattr(args, "profile", None)
    raw = {**defaults, **(load_profile(profile) if profile else {})}
    flags = flag_values(args)
    own = raw.get("setup") or []
    setup = [*(own if isinstance(own, list) else [own]), *flags.pop("setup", [])]  # one line may go as text
    errors: list[str] = []
    settings = parse_slurm_settings({**raw, **flags, "setup": setup}, errors)
    if errors:
        where = f" (profile {profile})" if profile else ""
        raise ConfigError(f"site options{where}: " + "; ".join(_flag_names(e) for e in errors))
    return settings


def _flag_names(problem: str) -> str:
    for key, flag in FLAGS.items():
        problem = problem.replace(f"slurm.{key}:", f"{flag}:")
    return problem


def launch_overrides(args: argparse.Namespace) -> list[str]:
    """camvis-launch's site flags as slurm.* overrides (JSON values are YAML): they go before the
    command line's own key=value overrides, which win over them."""
    out = [f"slurm.{key}={json.dumps(value)}" for key, value in flag_values(args).items() if key != "setup"]
    setup = flag_values(args).get("setup")
    return out + ([f"slurm.setup+={json.dumps(setup)}"] if setup else [])
