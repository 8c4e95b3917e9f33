"""Thin console entry points: argparse, one library call, domain errors as one line + exit 2."""

from __future__ import annotations

import argparse
import sys
from typing import NoReturn

from camvis import __version__
from camvis.errors import CamvisError


def fail(error: CamvisError | OSError) -> int:
    """Print a domain error as `error: ...` (no traceback) and return the exit status 2.

    Entry points that run writers camvis does not own (submitit's job pickles, TensorBoard's
    event files) catch `(CamvisError, OSError)`: a disk-full OSError (ENOSPC, EDQUOT, EFBIG)
    is shown as camvis's own DiskFullError; any other OSError keeps its traceback."""
    if not isinstance(error, CamvisError):
        from camvis.io import DISK_FULL_ERRNOS, disk_full_error

        if error.errno not in DISK_FULL_ERRNOS:
            raise error
        error = disk_full_error(None, error)
    print(f"error: {error}", file=sys.stderr)
    return 2


def config_and_overrides(config: str | None, overrides: list[str]) -> tuple[str | None, list[str]]:
    """`camvis-train train.lr=1e-4` has no config file: its first positional is an override."""
    if config is not None and "=" in config:
        return None, [config, *overrides]
    return config, list(overrides)


class _Parser(argparse.ArgumentParser):
    """argparse with camvis's one-line errors: a bad option is `error: PROG: ...` and exit 2, no usage block."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"error: {self.prog}: {' '.join(message.split())} (see {self.prog} --help)\n")


def new_parser(prog: str, description: str | None, examples: str | None = None, *,
                 outputs: str | None = None, jobs_dir: str | None = None) -> argparse.ArgumentParser:
    """The one way a camvis CLI builds its parser: `prog`, the module docstring as description,
    `examples` as the epilog (kept as written), `--version`, and the shared `--outputs` /
    `--jobs-dir` arguments when given the sentence of what this command does with them."""
    parser = _Parser(prog=prog, description=description, epilog=examples,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--version", action="version", version=f"%(prog)s (camvis {__version__})")
    if outputs is not None:
        parser.add_argument("--outputs", default="outputs", help=f"{outputs} (default: outputs)")
    if jobs_dir is not None:
        parser.add_argument("--jobs-dir", default="jobs", help=f"{jobs_dir} (default: jobs)")
    return parser
