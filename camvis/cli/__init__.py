"""Thin console entry points: argparse, one library call, domain errors as one line + exit 2."""

from __future__ import annotations

import argparse
import sys
from typing import Any

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


class SiteParser(argparse.ArgumentParser):
    """An ArgumentParser whose --outputs, --jobs-dir and --profile, when it has them and they are not
    given, come from the environment, camvis.yaml or the defaults (camvis.site.resolve); `args.site`
    says where each came from."""

    def parse_args(self, args: Any = None, namespace: Any = None) -> argparse.Namespace:  # type: ignore[override]
        return with_site(super().parse_args(args, namespace))

    def parse_intermixed_args(self, args: Any = None, namespace: Any = None) -> argparse.Namespace:
        return with_site(super().parse_intermixed_args(args, namespace))


def with_site(args: argparse.Namespace) -> argparse.Namespace:
    """`args` with its unset site settings resolved; a bad camvis.yaml is one error line, exit 2."""
    from camvis import site

    keys = [k for k in site.DEFAULTS if hasattr(args, k)]
    if keys:
        try:
            args.site = site.resolve({k: getattr(args, k) for k in keys})
        except CamvisError as e:
            sys.exit(fail(e))
        for key in keys:
            setattr(args, key, getattr(args.site, key))
    return args


SITE_DEFAULT = "default: $CAMVIS_{}, else camvis.yaml's {}, else {}"


def new_parser(prog: str, description: str | None, examples: str | None = None, *,
                 outputs: str | None = None, jobs_dir: str | None = None,
                 parents: list[argparse.ArgumentParser] | None = None) -> argparse.ArgumentParser:
    """The one way a camvis CLI builds its parser: `prog`, the module docstring as description,
    `examples` as the epilog (kept as written), `--version`, and the shared `--outputs` /
    `--jobs-dir` arguments when given the sentence of what this command does with them (their
    defaults: camvis.site)."""
    parser = SiteParser(prog=prog, description=description, epilog=examples, parents=parents or [],
                        formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--version", action="version", version=f"%(prog)s (camvis {__version__})")
    if outputs is not None:
        parser.add_argument("--outputs", help=f"{outputs} ({SITE_DEFAULT.format('OUTPUTS', 'outputs', 'outputs')})")
    if jobs_dir is not None:
        parser.add_argument("--jobs-dir", help=f"{jobs_dir} ({SITE_DEFAULT.format('JOBS_DIR', 'jobs_dir', 'jobs')})")
    return parser
