"""camvis-data build --workers N: the same bytes as a serial build, problems reported the same."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from camvis.data import store_build
from camvis.errors import RawDataError, StoreError

BUILD = dict(factors=(2, 4), patch_size=16, patches_per_image=40, seed=3, progress=False, figure=False)


def _files(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def _root_attrs(data: bytes) -> dict:
    """The root zarr.json without what differs between any two builds: the build time (and the
    digest over it)."""
    meta = json.loads(data)
    meta["attributes"]["provenance"].pop("created")
    meta["attributes"].pop("digest")
    return meta


def test_parallel_build_writes_the_same_bytes_as_a_serial_one(synth_raw: Path, tmp_path: Path) -> None:
    serial = store_build.build(synth_raw, tmp_path / "serial.zarr", **BUILD, workers=1)
    parallel = store_build.build(synth_raw, tmp_path / "parallel.zarr", **BUILD, workers=3)
    a, b = _files(serial.path), _files(parallel.path)
    assert sorted(a) == sorted(b)
    assert sum(name.endswith("zarr.json") for name in a) > 5 and any("/c/" in name for name in a)
    for name in a:
        if name == "zarr.json":
            assert _root_attrs(a[name]) == _root_attrs(b[name])
        else:
            assert a[name] == b[name], name
    np.testing.assert_array_equal(parallel.norm_mean, serial.norm_mean)


def test_parallel_build_reports_every_problem(raw_copy: Path, tmp_path: Path) -> None:
    broken = sorted((raw_copy / "images").rglob("*.png"))[1]
    broken.write_bytes(b"not a png")
    with pytest.raises(RawDataError, match=broken.name):
        store_build.build(raw_copy, tmp_path / "s.zarr", **BUILD, workers=2)
    assert not (tmp_path / "s.zarr").exists()


def test_workers_must_be_a_positive_integer(synth_raw: Path, tmp_path: Path) -> None:
    with pytest.raises(StoreError, match="workers"):
        store_build.build(synth_raw, tmp_path / "s.zarr", **BUILD, workers=0)
