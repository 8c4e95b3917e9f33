"""zarr's internal names that camvis uses, all of them, each with why (layer: base).

zarr 3 declares everything under `zarr.core` private. pyproject.toml pins zarr to the range
tests/test_adapters.py passed with; that test pins each behaviour below, so an upgrade that changes
one fails there first, naming this module.

- `run`: `zarr.core.sync.sync`, which runs a coroutine of zarr's public async API on zarr's own event
  loop thread and returns its result (or raises its exception), as zarr's sync API does inside.
  camvis.data.store_verify.open_arrays fetches every array of a store and its patch table in ONE such
  round trip instead of one per array and per read. Measured gain: notes/h-adapters.md
  (benchmarks/bench_store_open.py).
- `as_array`: `zarr.Array(async_array)`, the sync array around an AsyncArray (its one dataclass
  field, `_async_array`): the arrays fetched asynchronously are read synchronously afterwards.
"""

from __future__ import annotations

from typing import Any, Coroutine, TypeVar

import zarr
from zarr.core.sync import sync

T = TypeVar("T")


def run(coro: Coroutine[Any, Any, T]) -> T:
    """`coro`'s result, run on zarr's event loop (its exception raised here)."""
    return sync(coro)


def as_array(node: Any) -> Any:
    """A zarr.AsyncArray as the zarr.Array that wraps it; anything else unchanged."""
    return zarr.Array(node) if isinstance(node, zarr.AsyncArray) else node
