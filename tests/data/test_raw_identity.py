"""A store names its raw data by digest and project-relative path (camvis.data.raw_identity): a moved
project's store is reused; other raw data is refused; stores from before the digests still open."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest

from camvis.data import raw, raw_identity, store_build
from camvis.data.store import open_store
from camvis.data.store_verify import attrs_digest
from camvis.errors import StoreError

BUILD = {"factors": (2, 4), "patch_size": 16, "patches_per_image": 16, "seed": 0, "figure": False, "progress": False}


def _identity(path: Path) -> tuple[int, int]:
    stat = (path / "zarr.json").stat()
    return stat.st_ino, stat.st_mtime_ns


@pytest.fixture
def project(synth_raw: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A project root (the cwd) with data/raw/x and a store data/processed/x.zarr built from it."""
    root = tmp_path / "project"
    shutil.copytree(synth_raw, root / "data/raw/x")
    monkeypatch.chdir(root)
    store_build.build("data/raw/x", "data/processed/x.zarr", **BUILD)
    return root


def test_the_build_records_the_raw_folder_relative_to_the_project_and_its_digests(project: Path) -> None:
    built = open_store(project / "data/processed/x.zarr").attrs["build"]
    ds = raw.scan(project / "data/raw/x")
    assert built["raw_dir"] == "data/raw/x" and built["raw_listing"] == raw_identity.listing_digest(ds)
    assert built["raw_digest"] == raw_identity.content_digest(ds) != built["raw_listing"]
    assert len(raw_identity.files(ds)) == 3 * 12 + 3 + 1  # images and masks, depth maps, visibility.csv


def test_a_moved_project_reuses_its_store(project: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    moved = Path(shutil.copytree(project, tmp_path / "moved"))
    shutil.rmtree(project)  # nothing of the old place is left to read
    monkeypatch.chdir(moved)
    before = _identity(moved / "data/processed/x.zarr")
    store_build.build("data/raw/x", "data/processed/x.zarr", **BUILD)
    assert _identity(moved / "data/processed/x.zarr") == before


def test_the_raw_folder_moved_elsewhere_is_recognized_by_its_contents(project: Path, tmp_path: Path) -> None:
    elsewhere = Path(shutil.copytree(project / "data/raw/x", tmp_path / "outside" / "renamed"))
    before = _identity(project / "data/processed/x.zarr")
    store_build.build(elsewhere, "data/processed/x.zarr", **BUILD)  # absolute, outside the project
    assert _identity(project / "data/processed/x.zarr") == before


def test_other_raw_data_is_refused_naming_what_differs(project: Path, tmp_path: Path) -> None:
    other = Path(shutil.copytree(project / "data/raw/x", tmp_path / "other"))
    depth = other / "depth_maps" / "1148_1.npy"
    np.save(depth, np.load(depth) + 1.0)  # the same names and sizes, other contents
    with pytest.raises(StoreError, match="raw_dir='data/raw/x'.*same file names and sizes, other contents"):
        store_build.build(other, "data/processed/x.zarr", **BUILD)
    for path in (other / "images").glob(next((other / "images").glob("*_0002_visible.png")).name[:-17] + "*"):
        path.unlink()  # one image fewer, with its masks
    with pytest.raises(StoreError, match="other raw data.*--force"):
        store_build.build(other, "data/processed/x.zarr", **BUILD)


def test_raw_data_changed_in_place_is_refused(project: Path) -> None:
    with open(project / "data/raw/x/visibility.csv", "a") as f:
        f.write("\n")
    with pytest.raises(StoreError, match=r"changed since the build \(files added, removed or resized\)"):
        store_build.build("data/raw/x", "data/processed/x.zarr", **BUILD)


def test_the_store_is_kept_when_its_raw_data_is_gone(project: Path) -> None:
    shutil.rmtree(project / "data/raw/x/images")
    before = _identity(project / "data/processed/x.zarr")
    store_build.build("data/raw/x", "data/processed/x.zarr", **BUILD)
    assert _identity(project / "data/processed/x.zarr") == before


def _as_before_the_digests(store: Path, raw_dir: Path) -> None:
    """The build attributes an earlier camvis wrote: the absolute raw_dir only (attribute digest resealed)."""
    meta = json.loads((store / "zarr.json").read_text())
    attrs = meta["attributes"]
    attrs["build"] = {k: v for k, v in attrs["build"].items() if k not in ("raw_listing", "raw_digest")}
    attrs["build"]["raw_dir"] = attrs["provenance"]["raw_dir"] = str(raw_dir.resolve())
    attrs["digest"] = attrs_digest(attrs)
    (store / "zarr.json").write_text(json.dumps(meta))


def test_a_store_from_before_the_digests_opens_and_is_reused_by_its_path(project: Path, tmp_path: Path) -> None:
    store = project / "data/processed/x.zarr"
    _as_before_the_digests(store, project / "data/raw/x")
    assert open_store(store).attrs["build"]["raw_dir"] == str(project / "data/raw/x")
    before = _identity(store)
    store_build.build("data/raw/x", store, **BUILD)
    store_build.build(project / "data/raw/x", store, **BUILD)
    assert _identity(store) == before
    elsewhere = shutil.copytree(project / "data/raw/x", tmp_path / "copy")  # no digest to recognize it by
    with pytest.raises(StoreError, match=f"raw_dir='{project}/data/raw/x'"):
        store_build.build(elsewhere, store, **BUILD)


def test_as_given_is_relative_inside_the_project_only(project: Path) -> None:
    assert raw_identity.as_given("data/raw/x") == "data/raw/x" == raw_identity.as_given(project / "data/raw/x")
    assert raw_identity.as_given("../elsewhere/raw") == os.path.abspath("../elsewhere/raw")
    assert raw_identity.as_given(".") == "."
