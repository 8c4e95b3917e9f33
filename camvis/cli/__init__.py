"""Thin console entry points: argparse, one library call, domain errors as one line + exit 2."""

from __future__ import annotations

import sys

from camvis.errors import CamvisError


def fail(error: CamvisError) -> int:
    """Print a domain error as `error: ...` (no traceback) and return the exit status 2."""
    print(f"error: {error}", file=sys.stderr)
    return 2


def config_and_overrides(config: str | None, overrides: list[str]) -> tuple[str | None, list[str]]:
    """`camvis-train train.lr=1e-4` has no config file: its first positional is an override."""
    if config is not None and "=" in config:
        return None, [config, *overrides]
    return config, list(overrides)
