"""A store is verified before it is trusted: every corruption of a real Zarr store is one clean
StoreError from open_store, from loading the levels to the device, from check-store and info."""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import zarr

from camvis.data import store
from camvis.data import store_build
from camvis.data import store_verify
from camvis.job.batches import BatchSource
from camvis.cli.data import main
from camvis.errors import StoreError
from camvis.data.store import open_store

BUILD = dict(factors=(2, 4), patch_size=16, patches_per_image=30, seed=1, progress=False, figure=False,
             compress=True)  # zstd levels, checked block by block as read (mapped ones: test_store_map.py)


@pytest.fixture(scope="module")
def pristine(synth_raw: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny store built once; tests corrupt copies of it (never the shared synth_store)."""
    return store_build.build(synth_raw, tmp_path_factory.mktemp("verify") / "s.zarr", **BUILD).path


@pytest.fixture
def path(pristine: Path, tmp_path: Path) -> Path:
    return Path(shutil.copytree(pristine, tmp_path / "s.zarr"))


# --------------------------------------------------------------------------- corruptions


def chunk_file(path: Path, name: str, k: int = 0) -> Path:
    """The chunk file holding row k of array `name`."""
    array = zarr.open_array(path / name, mode="r")
    key = array.metadata.encode_chunk_key((k // array.chunks[0],) + (0,) * (array.ndim - 1))
    assert (path / name / key).is_file(), key
    return path / name / key


def truncate(file: Path) -> None:
    data = file.read_bytes()
    file.write_bytes(data[: len(data) // 2])


def edit_attrs(path: Path, **changes: Any) -> None:
    """Edits zarr.json by hand, as a user would: the digest is not updated."""
    meta = json.loads((path / "zarr.json").read_text())
    meta["attributes"].update(changes)
    (path / "zarr.json").write_text(json.dumps(meta))


def drop_attrs(path: Path, *keys: str) -> None:
    meta = json.loads((path / "zarr.json").read_text())
    for key in keys:
        meta["attributes"].pop(key)
    (path / "zarr.json").write_text(json.dumps(meta))


def resign(path: Path) -> None:
    """Records the store's current blocks and attributes as the build would, so that only the
    schema and content checks can catch what a test changed."""
    root = zarr.open_group(path, mode="r+")
    attrs = dict(root.attrs)
    attrs["checksums"] = store_verify.record_checksums(root, list(attrs["checksums"]))
    attrs["digest"] = store_verify.attrs_digest(json.loads(json.dumps(attrs)))
    root.attrs.update(attrs)


def write(path: Path, name: str, index: Any, value: Any, signed: bool = True) -> None:
    zarr.open_array(path / name, mode="r+")[index] = value
    if signed:
        resign(path)


def attrs_of(path: Path) -> dict[str, Any]:
    return json.loads((path / "zarr.json").read_text())["attributes"]


def add_factor(path: Path) -> None:
    """factors gains 8 with consistent statistics and a digest, but no level 8 arrays."""
    a = attrs_of(path)
    edit_attrs(path, factors=[2, 4, 8], norm_mean=a["norm_mean"] + [a["norm_mean"][-1]],
               norm_std=a["norm_std"] + [a["norm_std"][-1]],
               **{k: [rows + [rows[-1]] for rows in a[k]] for k in ("norm_mean_folds", "norm_std_folds")})
    a = attrs_of(path)
    a["checksums"].update({"levels/8/images": {"rows": 1, "crc32": [0] * 12},
                           "levels/8/depth": {"rows": 1, "crc32": [0] * 3}})
    edit_attrs(path, checksums=a["checksums"], digest=store_verify.attrs_digest(a))


def flip_labels(path: Path) -> None:
    """Valid labels, but not the ones built: only the checksum can tell."""
    labels = zarr.open_array(path / "patches/label", mode="r+")
    labels[:5] = 1 - labels[:5]


# Each: what is done to the store, and words the one-line error must hold.
CAUGHT_AT_OPEN: dict[str, tuple[Callable[[Path], None], tuple[str, ...]]] = {
    "deleted label chunk": (lambda p: chunk_file(p, "patches/label").unlink(),
                            ("patches/label", "missing", "fill value 0")),
    "truncated table chunk": (lambda p: truncate(chunk_file(p, "patches/center_h")),
                              ("patches/center_h", "cannot be decoded")),
    "labels flipped on disk": (flip_labels, ("patches/label", "checksum", "altered")),
    "labels outside 0/1": (lambda p: write(p, "patches/label", 7, 2),
                           ("patches/label", "[2]", "expected only 0", "1 (visible)")),
    "image index out of range": (lambda p: write(p, "patches/image", 3, 99),
                                 ("patches/image", "0..11")),
    "view column disagrees": (lambda p: write(p, "patches/view", 0, 2), ("patches/view", "image_view")),
    "centre outside the image": (lambda p: write(p, "patches/center_w", 4, 500),
                                 ("patch 4", "patch_size // 2 = 8", "96 x 144")),
    "table columns of unequal length": (lambda p: (zarr.open_array(p / "patches/depth", mode="r+").resize((5,)),
                                                   resign(p)), ("equal", "'depth': 5")),
    "patch_size edited": (lambda p: edit_attrs(p, patch_size=8),
                          ("attribute patch_size (changed)", "digest", "zarr.json was edited")),
    "patch_size too large for the table": (lambda p: (edit_attrs(p, patch_size=64), resign(p)),
                                           ("patch_size // 2 = 32",)),
    "patch_size not an int": (lambda p: edit_attrs(p, patch_size="16"), ("attribute patch_size", "integer")),
    "factors of strings": (lambda p: edit_attrs(p, factors=["2", "4"]), ("attribute factors", "integers")),
    "factors not increasing": (lambda p: edit_attrs(p, factors=[4, 2]), ("attribute factors", "increasing")),
    "factor zero": (lambda p: edit_attrs(p, factors=[0, 4]), ("attribute factors", ">= 1")),
    "factor without a level": (add_factor, ("array levels/8/images is missing",)),
    "norm_mean a string": (lambda p: edit_attrs(p, norm_mean="fast"), ("attribute norm_mean", "2 x 4")),
    "norm_mean wrong shape": (lambda p: edit_attrs(p, norm_mean=[[1.0, 2.0, 3.0]]),
                              ("attribute norm_mean", "2 x 4")),
    "norm_mean NaN": (lambda p: edit_attrs(p, norm_mean=[[float("nan")] * 4] * 2),
                      ("attribute norm_mean", "finite")),
    "norm_std zero": (lambda p: edit_attrs(p, norm_std=[[0.0] * 4] * 2), ("attribute norm_std", "> 0")),
    "norm_rule unknown": (lambda p: edit_attrs(p, norm_rule="local"), ("attribute norm_rule", "global or per-fold")),
    "norm_rule removed": (lambda p: drop_attrs(p, "norm_rule"), ("attribute norm_rule is missing",)),
    "norm_mean_folds wrong shape": (lambda p: edit_attrs(p, norm_mean_folds=[[[1.0] * 4] * 2]),
                                    ("attribute norm_mean_folds", "3 x 2 x 4")),
    "norm_mean_folds of strings": (lambda p: edit_attrs(p, norm_mean_folds=[[["1"] * 4] * 2] * 3),
                                   ("attribute norm_mean_folds", "finite numbers")),
    "norm_std_folds zero": (lambda p: edit_attrs(p, norm_std_folds=[[[0.0] * 4] * 2] * 3),
                            ("attribute norm_std_folds", "> 0")),
    "norm_mean_folds edited": (lambda p: edit_attrs(p, norm_mean_folds=[[[1.0] * 4] * 2] * 3),
                               ("attribute norm_mean_folds (changed)", "digest")),
    "image_view out of range": (lambda p: edit_attrs(p, image_view=[7] * 12), ("attribute image_view", "<= 2")),
    "views not strings": (lambda p: edit_attrs(p, views=[1, 2, 3]), ("attribute views", "strings")),
    "checksums removed": (lambda p: edit_attrs(p, checksums={}), ("attribute checksums", "levels/2/images")),
    "provenance edited": (lambda p: edit_attrs(p, provenance={}), ("attribute provenance (changed)",)),
    "attribute added": (lambda p: edit_attrs(p, note="x"), ("attribute note (added)",)),
    "digest removed": (lambda p: edit_attrs(p, digest=None), ("attribute digest = None",)),
    "level array deleted": (lambda p: shutil.rmtree(p / "levels/4/depth"),
                            ("array levels/4/depth is missing",)),
    "level of another shape": (lambda p: (zarr.open_array(p / "levels/2/images", mode="r+").resize((12, 3, 48, 70)),
                                          resign(p)), ("levels/2/images", "(12, 3, 48, 72)")),
}
CAUGHT_AT_LOAD: dict[str, tuple[Callable[[Path], None], tuple[str, ...]]] = {
    "deleted image chunk": (lambda p: chunk_file(p, "levels/2/images", 3).unlink(),
                            ("levels/2/images", "block 3", "c/3/0/0/0 is missing", "fill value 0")),
    "deleted depth chunk": (lambda p: chunk_file(p, "levels/4/depth", 1).unlink(),
                            ("levels/4/depth", "block 1", "missing", "fill value -1")),
    "truncated image chunk": (lambda p: truncate(chunk_file(p, "levels/4/images", 0)),
                              ("levels/4/images", "block 0", "cannot be decoded")),
    "image changed on disk": (lambda p: write(p, "levels/2/images", (5, 0, 0, 0), 7, signed=False),
                              ("levels/2/images", "block 5", "altered")),
}


def check_one_line(message: str, path: Path, words: tuple[str, ...]) -> None:
    assert "\n" not in message and f"store {path}" in message and "camvis-data build --force" in message
    for word in words:
        assert word in message, (word, message)


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    rc = main(list(argv))
    out, err = capsys.readouterr()
    return rc, out, err


def check_cli_error(rc: int, err: str, path: Path, words: tuple[str, ...] = ()) -> None:
    lines = err.strip().splitlines()
    assert rc == 2 and len(lines) == 1 and lines[0].startswith("error: "), err
    check_one_line(lines[0], path, words)


@pytest.mark.parametrize("case", CAUGHT_AT_OPEN)
def test_corruption_caught_at_open(case: str, path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    corrupt, words = CAUGHT_AT_OPEN[case]
    corrupt(path)
    with pytest.raises(StoreError) as e:
        open_store(path)
    check_one_line(str(e.value), path, words)
    for command in (["info", str(path)], ["check-store", str(path)]):
        rc, out, err = run(capsys, *command)
        check_cli_error(rc, err, path, words)
        assert out == ""


@pytest.mark.parametrize("case", CAUGHT_AT_LOAD)
def test_corruption_caught_when_levels_are_loaded(case: str, path: Path,
                                                  capsys: pytest.CaptureFixture[str]) -> None:
    corrupt, words = CAUGHT_AT_LOAD[case]
    corrupt(path)
    opened = open_store(path)  # cheap: the levels are not read at open
    with pytest.raises(StoreError) as e:
        BatchSource(opened, (2, 4), kernel=False)
    check_one_line(str(e.value), path, words)
    for command in (["check-store", str(path)], ["info", "--verify", str(path)]):
        rc, out, err = run(capsys, *command)
        check_cli_error(rc, err, path, ("1 of", "blocks fail verification"))
        problems = [line for line in out.splitlines() if line.startswith("problem: ")]
        assert len(problems) == 1 and all(word in problems[0] for word in words), out
    assert run(capsys, "info", str(path))[0] == 0  # info alone reads no level block


def test_good_store_passes_every_check(path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    opened = open_store(path)
    source = BatchSource(opened, (2, 4), kernel=False)
    assert source.nbytes > 0 and opened.n_patches > 0
    np.testing.assert_array_equal(opened.read_image(4, 11), opened.levels[4][0][11])
    rc, out, err = run(capsys, "check-store", str(path))
    assert rc == 0 and err == "" and "FAILED" not in out
    assert "ok: 12 arrays, 60 blocks" in out, out
    rc, out, _ = run(capsys, "info", "--verify", str(path))
    assert rc == 0 and "every checksum matches" in out


def test_build_records_a_checksum_per_block_and_a_digest(pristine: Path) -> None:
    attrs = attrs_of(pristine)
    sums = attrs["checksums"]
    assert len(sums) == 12 and all(len(sums[f"levels/{f}/images"]["crc32"]) == 12 for f in (2, 4))
    assert all(len(sums[f"levels/{f}/depth"]["crc32"]) == 3 for f in (2, 4))
    root = zarr.open_group(pristine, mode="r")
    assert sums["levels/2/images"]["crc32"][7] == store_verify.block_crc(root["levels/2/images"][7:8])
    assert sums["patches/label"] == {"rows": root["patches/label"].shape[0],
                                     "crc32": [store_verify.block_crc(root["patches/label"][:])]}
    assert attrs["digest"] == store_verify.attrs_digest(attrs)
    assert sorted(attrs["digest"]) == sorted(k for k in attrs if k != "digest")


def test_a_store_of_format_version_1_is_refused_with_a_rebuild_hint(path: Path) -> None:
    """Stores of version 1 have no checksums: they must be rebuilt, not read unverified."""
    edit_attrs(path, format_version=1)
    with pytest.raises(StoreError, match="version 1, this camvis reads version 4.*--force"):
        open_store(path)


def test_sampling_figure_reads_checked_blocks(path: Path, tmp_path: Path) -> None:
    chunk_file(path, "levels/2/images", 0).unlink()
    with pytest.raises(StoreError, match="levels/2/images: block 0 does not match"):
        store.sampling_figure(path, None, tmp_path / "fig.png")
    assert not (tmp_path / "fig.png").exists()


def as_format_version_2(path: Path) -> None:
    """The store as camvis wrote it in format version 2: global statistics only, no norm_rule."""
    drop_attrs(path, "norm_rule", "norm_mean_folds", "norm_std_folds")
    edit_attrs(path, format_version=2)
    a = attrs_of(path)
    edit_attrs(path, digest=store_verify.attrs_digest(a))


def test_a_store_of_format_version_2_opens_with_global_statistics(path: Path,
                                                                   capsys: pytest.CaptureFixture[str]) -> None:
    """Stores built before per-fold statistics still open; their jobs normalize globally, and info says why."""
    as_format_version_2(path)
    opened = open_store(path)
    assert opened.norm_rule == "global" and opened.norm_mean_folds is None
    norm = BatchSource(opened, (2, 4), kernel=False, fold=1).normalization
    assert norm.rule == "global" and norm.label == "global (all views)"
    np.testing.assert_array_equal(norm.mean, opened.norm_mean)
    rc, out, _ = run(capsys, "info", str(path))
    assert rc == 0 and "normalization: global" in out and "format version 2 predates per-fold" in " ".join(out.split())
