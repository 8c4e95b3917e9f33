"""The progress bars of camvis's long loops (synth, check, build, train, predict, local
launches, aggregate): one rich bar on stderr, or nothing. rich is imported only when a bar
is shown, so a disabled bar (batch jobs, ranks > 0, tests) costs nothing. No torch here:
the data commands and the launcher use it too.
"""

from __future__ import annotations

import sys
from contextlib import contextmanager
from typing import TYPE_CHECKING, Iterator, Protocol, Sequence, TypeVar

if TYPE_CHECKING:
    from rich.console import Console

T = TypeVar("T")


class Advance(Protocol):
    """Moves a bar `n` steps on."""

    def __call__(self, n: int = 1) -> None: ...


def _no_advance(n: int = 1) -> None:
    pass


@contextmanager
def progress_bar(description: str, total: int, *, enabled: bool | None = None,
                 transient: bool = False, console: Console | None = None) -> Iterator[Advance]:
    """A rich bar on stderr (or `console`) counting to `total`; yields its `advance(n=1)`.

    `enabled=None`: only when stderr is a terminal (a batch job's log gets no bar frames).
    Disabled, `advance` does nothing. `transient`: the bar is erased when done.
    """
    if not (sys.stderr.isatty() if enabled is None else enabled):
        yield _no_advance
        return
    from rich.console import Console
    from rich.progress import MofNCompleteColumn, Progress

    columns = list(Progress.get_default_columns())
    columns.insert(-1, MofNCompleteColumn())  # the count (images, patches) beside the percentage
    with Progress(*columns, console=console or Console(stderr=True), transient=transient) as bar:
        task = bar.add_task(description, total=total)
        yield lambda n=1: bar.advance(task, n)


def track(items: Sequence[T], description: str, *, enabled: bool | None = None,
          transient: bool = False, console: Console | None = None) -> Iterator[T]:
    """`items` in order, with a progress_bar advanced once per item (none for no items)."""
    with progress_bar(description, len(items), enabled=enabled if items else False,
                      transient=transient, console=console) as advance:
        for item in items:
            yield item
            advance()
