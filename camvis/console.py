"""The one rich Console factory of camvis's commands and reports (camvis-status, -aggregate,
-launch, -data, -model). Only rich here, no torch: the library (monitor, aggregate) and the
CLI both import it, on login nodes too.
"""

from __future__ import annotations

from typing import Any, Iterable

from rich.console import Console

# Columns when the output is not a terminal (piped, redirected, a batch job's log), where rich
# would otherwise fall back on 80 and wrap table cells: wide enough for every camvis table.
NON_TERMINAL_WIDTH = 160


def default_console(width: int | None = None, *, stderr: bool = False) -> Console:
    """On a terminal, the terminal's own console (its width). Piped, redirected or in a batch job,
    a console `width` columns wide (default NON_TERMINAL_WIDTH), or $COLUMNS when that is wider,
    rather than one that wraps table cells at 80."""
    console = Console(stderr=stderr)
    if console.is_terminal:
        return console
    return Console(stderr=stderr, width=max(console.width, width or NON_TERMINAL_WIDTH))


def plural(n: int, word: str, words: str | None = None) -> str:
    """`1 job`, `2 jobs` (`words` for irregular plurals)."""
    return f"{n} {word if n == 1 else (words or word + 's')}"


def shape_text(jobs: Iterable[Any]) -> str:
    """"2 groups x 4 folds x 3 replicates" of jobs with .group, .fold and .replicate (JobSpec, JobInfo)."""
    jobs = list(jobs)
    parts = [plural(len({j.group for j in jobs}), "group"), plural(len({j.fold for j in jobs}), "fold")]
    replicates = {j.replicate for j in jobs}  # said where there are any (--only replicate=2: "x 1 replicate")
    return " x ".join(parts + ([plural(len(replicates), "replicate")] if replicates - {1} else []))
