"""What the launcher needs of a built store (its views = folds, and its levels), read from
the store's root metadata without importing zarr, and checked against each job's config."""

from __future__ import annotations

import json
import operator
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

from camvis.bounds import patch_size_problem
from camvis.config import JobConfig
from camvis.errors import ConfigError

FORMAT_NAME = "camvis-patch-store"
"""The `format` root attribute of a store (camvis.data.store_build writes it, both readers check it)."""
FORMAT_VERSION = 4
"""The store layout version this camvis writes (root attribute `format_version`); 3 added norm_rule and
the per-fold statistics (camvis.data.store_verify), 4 uncompressed level arrays that jobs memory-map
(camvis.data.store_map; `--compress` still writes zstd ones)."""
NORM_GLOBAL, NORM_PER_FOLD = "global", "per-fold"
NORM_RULES = (NORM_GLOBAL, NORM_PER_FOLD)
"""The `norm_rule` attribute: which statistics a job normalizes its inputs with. global: norm_mean /
norm_std, over every view (camvis2's rule, and every store of format version 2, which predates the key);
per-fold: its fold's row of norm_mean_folds / norm_std_folds, over its training views only."""
READABLE_VERSIONS = (2, 3, 4)
"""The versions this camvis reads: a version 2 store has only the global statistics (norm_rule global)."""
NORM_RULE_SINCE = 3
"""The format version that added norm_rule."""


def version_problem(found: object) -> str | None:
    """Why a store of format version `found` cannot be read, or None."""
    if isinstance(found, int) and not isinstance(found, bool) and found in READABLE_VERSIONS:
        return None
    older = ", ".join(map(str, READABLE_VERSIONS[:-1]))
    return (f"store format version {found!r}, this camvis reads version {FORMAT_VERSION} "
            f"(and {older}, with global statistics)")


def fold_view(views: Sequence[str], fold: object) -> str | None:
    """camvis2's leave-one-view-out folds, the one rule: fold k (1-based) holds out the k-th view
    in sorted order. None when `fold` is not an integer in 1..len(views)."""
    if isinstance(fold, bool) or not hasattr(fold, "__index__"):  # ints and numpy's, not floats or text
        return None
    k = operator.index(fold)
    return sorted(views)[k - 1] if 1 <= k <= len(views) else None


def missing_levels(factors: Sequence[int], levels: Sequence[int], where: str) -> str | None:
    """The problem when data.factors names a level the store (`where`) has not built, else None."""
    missing = [f for f in factors if f not in levels]
    if not missing:
        return None
    return f"data.factors {list(factors)}: {missing} not levels of {where} (levels: {list(levels)})"


def patch_count(store: str | Path) -> int | None:
    """Patches in a built store's table (its label array's shape, from metadata only); None if unknown.
    What bounds a batch: a train.batch_size above it trains on every patch at once."""
    try:
        shape = json.loads((Path(store) / "patches" / "label" / "zarr.json").read_text()).get("shape")
    except (OSError, ValueError, AttributeError):
        return None
    ok = isinstance(shape, list) and len(shape) == 1 and isinstance(shape[0], int) and shape[0] >= 0
    return shape[0] if ok else None


@dataclass(frozen=True)
class StoreInfo:
    """What the launcher needs of a built store: its views (= folds) and levels."""

    path: str
    views: tuple[str, ...]
    factors: tuple[int, ...]
    patch_size: object = None  # as the attributes say; problems() checks it

    @staticmethod
    def read(store: str) -> StoreInfo | None:
        """From the store's root attributes; None while it does not exist. Reads the Zarr v3
        root metadata document (zarr.json) directly: importing zarr costs more than a launch."""
        path = Path(store)
        if not path.exists():
            return None
        try:
            attrs = json.loads((path / "zarr.json").read_text()).get("attributes", {})
        except (OSError, ValueError, AttributeError) as e:
            raise ConfigError(f"data.store: {store} is not a Zarr v3 store ({e}); rebuild it with camvis-data build")
        views, factors = attrs.get("views"), attrs.get("factors")
        if attrs.get("format") != FORMAT_NAME or not isinstance(views, list) or not isinstance(factors, list):
            raise ConfigError(f"data.store: {store} has no {FORMAT_NAME} attributes (format, views, factors); "
                              f"rebuild it with camvis-data build")
        problem = version_problem(attrs.get("format_version"))
        if problem is not None:
            raise ConfigError(f"data.store: {store} has {problem}; rebuild it with "
                              f"camvis-data build RAW_DIR {store} --force")
        if not all(isinstance(f, int) and not isinstance(f, bool) for f in factors):
            raise ConfigError(f"data.store: {store}: attribute factors {factors!r} is not a list of ints; "
                              f"rebuild it with camvis-data build")
        return StoreInfo(store, tuple(map(str, views)), tuple(factors), attrs.get("patch_size"))

    @staticmethod
    def cache() -> Callable[..., StoreInfo | None]:
        """A reader that opens each store once and records its problems in `errors`."""
        seen: dict[str, StoreInfo | None] = {}

        def get(store: str, errors: list[str]) -> StoreInfo | None:
            if store not in seen:
                try:
                    seen[store] = StoreInfo.read(store)
                except ConfigError as e:
                    errors.append(str(e))
                    seen[store] = None
            return seen[store]
        return get

    def check(self, cfg: JobConfig, where: str, errors: list[str]) -> str | None:
        """The job's held-out view; records a fold or factor the store does not have."""
        missing = missing_levels(cfg.data.factors, self.factors, f"store {self.path}")
        if missing:
            errors.append(f"{where}: {missing}")
        view = fold_view(self.views, cfg.data.fold)
        if view is None:
            errors.append(f"{where}: data.fold {cfg.data.fold} out of range; store {self.path} has "
                          f"{len(self.views)} views")
        return view

    def problems(self, factors: set[int]) -> list[str]:
        """What jobs using `factors` would trip over after queueing, read from metadata only: a
        patch size the model cannot take, a level whose arrays are not there."""
        out = []
        p = self.patch_size
        if patch_size_problem(p) is not None:
            out.append(f"data.store: {self.path}: attribute patch_size {p!r} is not a power of 2 >= 4 "
                       f"(the model halves a patch down to 1 x 1); rebuild it with camvis-data build")
        for f in sorted(factors & set(self.factors)):
            for array in ("images", "depth"):
                meta = Path(self.path) / "levels" / str(f) / array / "zarr.json"
                if not meta.is_file():
                    out.append(f"data.store: {self.path}: level {f} has no {array} array ({meta} is missing); "
                               f"rebuild it with camvis-data build")
        return out
