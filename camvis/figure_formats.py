"""The file formats camvis writes its figures in, parsed without importing matplotlib (a command's
arguments are checked before, and apart from, the process that draws)."""

from __future__ import annotations

FORMATS = ("png", "pdf", "svg")


def parse_formats(text: str) -> tuple[str, ...]:
    """`png,pdf,svg` -> ("png", "pdf", "svg"); ValueError naming what is accepted."""
    formats = tuple(dict.fromkeys(f.strip().lower() for f in text.split(",") if f.strip()))
    bad = [f for f in formats if f not in FORMATS]
    if bad or not formats:
        raise ValueError(f"expected a comma-separated list of {', '.join(FORMATS)}, got {text!r}")
    return formats
