"""Memory-mapped stores (camvis.data.store_map): what jobs read is the page cache's one copy, equal to
the compressed store's, checked once per node, and a broken file is one line, never a signal."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest
import torch
import zarr

from camvis.data import stage, store_build, store_map, store_verify
from camvis.data.store import open_store
from camvis.errors import StoreError
from camvis.job import batches
from camvis.job.batches import BatchSource

BUILD = dict(factors=(2, 4, 8), patch_size=16, patches_per_image=30, seed=1, progress=False, figure=False)
FACTORS = (2, 4, 8)


@pytest.fixture(scope="module")
def stores(synth_raw: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """The same build, mappable (the default) and --compress."""
    root = tmp_path_factory.mktemp("map")
    return {"mapped": store_build.build(synth_raw, root / "m.zarr", **BUILD).path,
            "compressed": store_build.build(synth_raw, root / "c.zarr", compress=True, **BUILD).path}


@pytest.fixture
def mapped(stores: dict[str, Path], tmp_path: Path) -> Path:
    """A private copy of the mapped store, for tests that break it."""
    import shutil

    return Path(shutil.copytree(stores["mapped"], tmp_path / "m.zarr"))


def chunk(path: Path, name: str, k: int) -> Path:
    return path / store_map.block_files(name, zarr.open_array(path / name, mode="r"))[k]


def all_batches(source: BatchSource) -> torch.Tensor:
    return source.batch(torch.arange(source.store.n_patches))[0].clone()


# --------------------------------------------------------------------------- layout


def test_layout_is_raw_bytes_one_file_per_block(stores: dict[str, Path]) -> None:
    opened = open_store(stores["mapped"])
    assert opened.mapped and not open_store(stores["compressed"]).mapped
    assert opened.attrs["format_version"] == 4 and opened.attrs["build"]["compress"] is False
    for f in opened.factors:
        images = zarr.open_array(stores["mapped"] / f"levels/{f}/images", mode="r")
        for k in range(images.shape[0]):
            raw = chunk(stores["mapped"], f"levels/{f}/images", k).read_bytes()
            np.testing.assert_array_equal(np.frombuffer(raw, np.uint8).reshape(images.shape[1:]), images[k])
            # the build's CRC-32 of the decoded block is the file's
            assert store_verify.block_crc(images[k]) == opened.attrs["checksums"][f"levels/{f}/images"]["crc32"][k]
        block = opened.levels[f][1].blocks[0]
        assert isinstance(block, np.memmap) and not block.flags.writeable  # mapped read-only, not copied
    rc = subprocess.run([sys.executable, "-m", "camvis.cli.data", "check-store", str(stores["mapped"])],
                        capture_output=True, text=True)
    assert rc.returncode == 0, rc.stderr


@pytest.mark.parametrize("kernel", [True, False])
def test_mapped_batches_equal_compressed_ones_bit_for_bit(stores: dict[str, Path], kernel: bool) -> None:
    a = BatchSource(open_store(stores["mapped"]), FACTORS, kernel=kernel, fold=1)
    b = BatchSource(open_store(stores["compressed"]), FACTORS, kernel=kernel, fold=1)
    assert a.uses_kernel == b.uses_kernel
    x, y = all_batches(a), all_batches(b)
    assert torch.equal(x, y) and x.abs().sum() > 0
    if a.uses_kernel:  # the kernel reads the maps in place; the compressed store's blocks are decoded once
        assert a.nbytes == 0 < b.nbytes
        assert torch.equal(x, all_batches(BatchSource(open_store(stores["mapped"]), FACTORS, kernel=False, fold=1)))


def test_an_older_store_still_opens_and_gives_the_same_batches(stores: dict[str, Path], tmp_path: Path) -> None:
    """A format version 3 store (zstd levels, no `compress` build key) opens and trains as before."""
    import shutil

    old = Path(shutil.copytree(stores["compressed"], tmp_path / "v3.zarr"))
    root = zarr.open_group(old, mode="r+")
    attrs = dict(root.attrs)
    attrs["format_version"] = 3
    attrs["build"] = {k: v for k, v in attrs["build"].items() if k != "compress"}
    attrs["digest"] = store_verify.attrs_digest(json.loads(json.dumps(attrs)))
    root.attrs.update(attrs)
    opened = open_store(old)
    assert not opened.mapped and opened.attrs["format_version"] == 3
    x = all_batches(BatchSource(opened, FACTORS, fold=1))
    assert torch.equal(x, all_batches(BatchSource(open_store(stores["mapped"]), FACTORS, fold=1)))


# --------------------------------------------------------------------------- never a signal


CHILD = textwrap.dedent("""
    import sys, torch
    from camvis.data.store import open_store
    from camvis.errors import CamvisError
    from camvis.job.batches import BatchSource
    try:
        source = BatchSource(open_store(sys.argv[1]), (2, 4, 8))
        source.batch(torch.arange(source.store.n_patches))
    except CamvisError as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)
    print("read every patch")
""")


def run_child(path: Path, node: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "CAMVIS_NODE_DIR": str(node)}
    return subprocess.run([sys.executable, "-c", CHILD, str(path)], capture_output=True, text=True, env=env,
                          timeout=300)


def test_a_truncated_chunk_file_is_one_line_not_a_bus_error(mapped: Path, tmp_path: Path) -> None:
    assert run_child(mapped, tmp_path / "node").returncode == 0  # mapped and verified on this "node"
    file = chunk(mapped, "levels/4/images", 5)
    with open(file, "r+b") as f:
        f.truncate(file.stat().st_size // 2)
    done = run_child(mapped, tmp_path / "node")
    assert done.returncode == 2, (done.returncode, done.stderr)  # a signal would be negative (SIGBUS: -7)
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and "levels/4/images/c/5/0/0/0" in lines[0] and "truncated" in lines[0], done.stderr
    file.unlink()
    done = run_child(mapped, tmp_path / "node")
    assert done.returncode == 2 and "levels/4/images/c/5/0/0/0 is missing" in done.stderr


def test_a_corrupt_block_is_caught_once_per_node_then_remembered(mapped: Path, tmp_path: Path) -> None:
    node = tmp_path / "node"
    assert run_child(mapped, node).returncode == 0
    markers = list((node / "verified").glob("*.json"))
    assert len(markers) == 1
    first = markers[0].stat().st_mtime_ns
    assert run_child(mapped, node).returncode == 0 and markers[0].stat().st_mtime_ns == first  # not checked again
    file = chunk(mapped, "levels/2/depth", 1)
    data = bytearray(file.read_bytes())
    data[40] ^= 0xFF  # same size, other bytes: only the CRC-32 tells
    file.write_bytes(bytes(data))
    done = run_child(mapped, node)  # the changed mtime invalidates the marker: checked again, caught
    assert done.returncode == 2, done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and "levels/2/depth: block 1" in lines[0] and "c/1/0/0/0" in lines[0], done.stderr


def test_verify_once_checks_under_the_lock_and_skips_when_the_marker_matches(mapped: Path) -> None:
    opened = open_store(mapped)
    assert opened.verify_levels() is True
    assert opened.verify_levels() is False
    assert open_store(mapped).verify_levels() is False  # a later open of the same files
    os.utime(chunk(mapped, "levels/8/images", 0))  # touched: this node checks again
    assert open_store(mapped).verify_levels() is True


def test_a_store_rebuilt_while_a_job_runs_does_not_disturb_it(mapped: Path, synth_raw: Path) -> None:
    source = BatchSource(open_store(mapped), FACTORS, fold=1)
    before = all_batches(source)
    store_build.build(synth_raw, mapped, force=True, **{**BUILD, "seed": 7})  # a new folder renamed in
    assert open_store(mapped).attrs["build"]["seed"] == 7
    assert torch.equal(all_batches(source), before)  # the job reads the files it mapped
    assert not torch.equal(all_batches(BatchSource(open_store(mapped), FACTORS, fold=1))[:10], before[:10])


# --------------------------------------------------------------------------- staging


@pytest.mark.parametrize("kind", ["compressed", "mapped"])
def test_staging_writes_a_mappable_verified_copy_of_either_kind(stores: dict[str, Path], kind: str,
                                                                 tmp_path: Path) -> None:
    staged = stage.stage_store(stores[kind], tmp_path)
    copy = open_store(staged.path)
    assert staged.action == "copied" and copy.mapped
    assert stage.store_digest(staged.path) == stage.store_digest(stores[kind])
    assert copy.verify_levels() is False  # staging checked it and wrote this node's marker
    assert stage.stage_store(stores[kind], tmp_path).action == "reused"
    x = all_batches(BatchSource(copy, FACTORS, fold=2))
    assert torch.equal(x, all_batches(BatchSource(open_store(stores["compressed"]), FACTORS, fold=2)))


# --------------------------------------------------------------------------- GPU upload, on the CPU


def test_pinned_chunk_upload_equals_the_direct_fill(stores: dict[str, Path]) -> None:
    """The GPU path's chunked copy (two alternating host buffers), run with device cpu at a chunk size
    that leaves a partial last chunk: the padded level it writes equals the direct fill's."""
    from concurrent.futures import ThreadPoolExecutor

    opened = open_store(stores["mapped"])
    images = opened.levels[2][0]
    n, c, h, w = images.shape
    inner = (slice(None), slice(3, 3 + h), slice(2, 2 + w))
    read = batches._reader(opened, 2, "images")
    direct, chunked = (torch.zeros((n, c, h + 5, w + 4), dtype=torch.uint8) for _ in range(2))
    with ThreadPoolExecutor(2) as pool:
        batches._fill(pool, direct, inner, read)
        batches._upload(pool, chunked, inner, read, chunk_bytes=images.blocks[0].nbytes * 5)  # 12 images: 5, 5, 2
    assert torch.equal(direct, chunked) and int(direct.sum()) > 0
    assert torch.equal(direct[:, :, 3:3 + h, 2:2 + w], torch.from_numpy(np.stack(images.blocks)))


# --------------------------------------------------------------------------- sharing


SHARER = textwrap.dedent("""
    import sys, time, torch
    from pathlib import Path
    from camvis.data.store import open_store
    from camvis.job.batches import BatchSource
    store, ready, go = sys.argv[1], Path(sys.argv[2]), Path(sys.argv[3])
    source = BatchSource(open_store(store), (2, 4, 8))
    source.batch(torch.arange(source.store.n_patches))  # every window read from the maps
    for block in (b for pair in source.store.levels.values() for a in pair for b in a.blocks):
        int(block.sum())  # and every page of every level touched
    ready.write_text("")
    while not go.exists():
        time.sleep(0.05)
    rss = pss = 0
    inside = False
    for line in open("/proc/self/smaps"):
        head = line.split()
        if "-" in head[0] and len(head) >= 5:  # a mapping's header line: its path, if any, last
            inside = len(head) >= 6 and head[5].startswith(store)
        elif inside and head[0] in ("Rss:", "Pss:"):
            kib = int(head[1])
            rss, pss = (rss + kib, pss) if head[0] == "Rss:" else (rss, pss + kib)
    print(rss, pss, source.nbytes)
""")


def test_four_processes_share_one_mapping(stores: dict[str, Path], tmp_path: Path) -> None:
    """Four real processes map the same store: the kernel counts each resident page once for all of them,
    so each process's proportional share (PSS) of the store's mappings is a quarter of its resident size."""
    if not Path("/proc/self/smaps").exists():
        pytest.skip("no /proc/self/smaps")
    store = str(stores["mapped"].resolve())
    env = {**os.environ, "CAMVIS_NODE_DIR": str(tmp_path / "node")}
    go = tmp_path / "go"
    procs = [subprocess.Popen([sys.executable, "-c", SHARER, store, str(tmp_path / f"ready{k}"), str(go)],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env) for k in range(4)]
    deadline = time.monotonic() + 300
    while not all((tmp_path / f"ready{k}").exists() for k in range(4)):
        assert all(p.poll() is None for p in procs), [p.communicate() for p in procs]
        assert time.monotonic() < deadline
        time.sleep(0.05)
    go.write_text("")
    results = []
    for p in procs:
        out, err = p.communicate(timeout=120)
        assert p.returncode == 0, err
        results.append([int(v) for v in out.split()])
    level_kib = sum(a.nbytes for pair in open_store(store).levels.values() for a in pair) / 1024
    print("level KiB", level_kib, "rss, pss, private per process", results)
    for rss, pss, private in results:
        assert rss >= level_kib * 0.9  # every level page resident in each process's maps
        assert pss <= rss / 4 + 8 * 4  # a quarter of it each (a few pages of slack: partial pages)
        assert private == 0  # and no copy of its own
    assert sum(pss for _, pss, _ in results) <= results[0][0] * 1.05


def test_cli_build_compress_keeps_the_zstd_layout(synth_raw: Path, tmp_path: Path,
                                                  capsys: pytest.CaptureFixture[str]) -> None:
    from camvis.cli.data import main

    args = ["--factors", "4", "8", "--patch-size", "16", "--patches-per-image", "8", "--workers", "1"]
    assert main(["build", str(synth_raw), str(tmp_path / "z.zarr"), "--compress", *args]) == 0
    assert "levels compressed (zstd)" in capsys.readouterr().out
    assert not open_store(tmp_path / "z.zarr").mapped
    assert main(["build", str(synth_raw), str(tmp_path / "r.zarr"), *args]) == 0
    assert "levels uncompressed, memory-mapped" in capsys.readouterr().out
    # the same store asked uncompressed: an error naming the difference, not a silent replacement
    assert main(["build", str(synth_raw), str(tmp_path / "z.zarr"), *args]) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and "compress=True (asked False)" in err, err


@pytest.mark.parametrize("kernel", [True, False])
def test_levels_of_the_wrong_shape_are_refused_before_the_kernel_reads_them(kernel: bool) -> None:
    """The kernel trusts every block's shape: a level whose depth disagrees with its images is an error."""
    import dataclasses

    sys.path.insert(0, str(Path(__file__).parents[1] / "job"))
    from test_batches import make_store

    good = make_store(40, 60, 8)
    images, depth = good.levels[2]
    bad = dataclasses.replace(good, levels={**good.levels, 2: (images, depth[:, :, :-1])})
    with pytest.raises(StoreError, match="level 2 has images"):
        BatchSource(bad, (2, 4), kernel=kernel)
