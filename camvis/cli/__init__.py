"""Thin console entry points: argparse, one library call, domain errors as one line + exit 2."""

from __future__ import annotations

import argparse
import sys
from typing import Any, Callable, NoReturn

from camvis import __version__
from camvis.bounds import number
from camvis.errors import CamvisError

ERRORS = (CamvisError, OSError)
"""What every entry point catches and hands to `fail`."""


def fail(error: CamvisError | OSError) -> int:
    """Print a domain error as `error: ...` (no traceback) and return the exit status 2.

    An OSError of a destination or a full disk (camvis.io.os_error: read-only, not permitted, not a
    directory, a directory, ENOSPC/EDQUOT/EFBIG) is one line naming the path; any other OSError keeps
    its traceback."""
    if not isinstance(error, CamvisError):
        from camvis.io import os_error

        mapped = os_error(error)
        if mapped is None:
            raise error
        error = mapped
    print(f"error: {error}", file=sys.stderr)
    return 2


def bounded(kind: type, lo: float | None = None, hi: float | None = None, *,
            exclusive_lo: bool = False) -> Callable[[str], int | float]:
    """An argparse `type`: `kind` (int or float, finite) within [lo, hi] (camvis.bounds.number);
    argparse turns the refusal into one usage error naming the option, exit 2."""
    def parse(text: str) -> int | float:
        try:
            return number(text, kind, lo, hi, exclusive_lo)
        except ValueError as e:
            raise argparse.ArgumentTypeError(str(e)) from None

    parse.__name__ = kind.__name__
    return parse


def config_and_overrides(config: str | None, overrides: list[str]) -> tuple[str | None, list[str]]:
    """`camvis-train train.lr=1e-4` has no config file: its first positional is an override."""
    if config is not None and "=" in config:
        return None, [config, *overrides]
    return config, list(overrides)


class _Parser(argparse.ArgumentParser):
    """argparse with camvis's one-line errors: a bad option is `error: PROG: ...` and exit 2, no usage block."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"error: {self.prog}: {' '.join(message.split())} (see {self.prog} --help)\n")


class SiteParser(_Parser):
    """A camvis parser whose --outputs, --jobs-dir and --profile, when it has them and they are not
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
