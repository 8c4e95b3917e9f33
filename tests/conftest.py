"""Shared fixtures: one tiny synthetic raw data set per session (and a store built from it)."""

from __future__ import annotations

import os
import random
import shutil
import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from camvis.data.synth import synthesize

SYNTH_RAW = {"views": 3, "images_per_view": 4, "size": (96, 144), "seed": 0}
"""What `synth_raw` holds: 3 views (1148_1, 1148_2, 1148_3) x 4 images of 96 x 144, png."""
SYNTH_STORE = {"factors": (2, 4, 8), "patch_size": 16, "patches_per_image": 64, "seed": 0}
"""How `synth_store` is built from `synth_raw`."""


REPO = Path(__file__).resolve().parents[1]
REPO_STATE = ("data", "outputs", "jobs", "models")
"""What `make demo` and users make in the checkout: no test may read or write them."""


def repo_state() -> dict[str, tuple[int, int]]:
    """(size, mtime) of every entry under the checkout's data/, outputs/, jobs/ and models/."""
    found = {}
    for top in REPO_STATE:
        for folder, dirs, files in os.walk(REPO / top):
            for name in dirs + files:
                path = os.path.join(folder, name)
                stat = os.lstat(path)
                found[os.path.relpath(path, REPO)] = (stat.st_size, stat.st_mtime_ns)
    return found


@pytest.fixture(scope="session", autouse=True)
def repo_untouched() -> Iterator[None]:
    """Fails the session if any test changed the checkout's data/, outputs/, jobs/ or models/."""
    before = repo_state()
    yield
    after = repo_state()
    changed = sorted(k for k in before.keys() | after.keys() if before.get(k) != after.get(k))
    assert not changed, (f"the checkout's own files changed during the tests (a test must use tmp_path; "
                         f"or a demo ran beside them): {changed[:10]}")


@pytest.fixture(autouse=True)
def hermetic_cwd(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Every test starts in an empty folder of its own: a relative path (the demo grid's
    data/processed/demo.zarr, the default outputs/ and jobs/) never reaches the checkout's files,
    whatever `make demo` left there. Tests that need another cwd chdir after this."""
    path = tmp_path_factory.mktemp("cwd")
    monkeypatch.chdir(path)
    return path


@pytest.fixture(scope="session", autouse=True)
def native_cache(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """C kernels are built once per session into a private cache (not ~/.cache); the jobs
    that tests start inherit it."""
    path = tmp_path_factory.mktemp("camvis-cache")
    before = os.environ.get("CAMVIS_CACHE_DIR")
    os.environ["CAMVIS_CACHE_DIR"] = str(path)
    os.environ["CAMVIS_NODE_DIR"] = str(tmp_path_factory.mktemp("node"))  # store_map's verification markers
    yield path
    if before is None:
        os.environ.pop("CAMVIS_CACHE_DIR", None)
    else:
        os.environ["CAMVIS_CACHE_DIR"] = before


@pytest.fixture(scope="session")
def synth_raw(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A raw data dir in camvis2's layout (see SYNTH_RAW). Shared by the whole session: read it,
    never change it; tests that break files use `raw_copy`."""
    return synthesize(tmp_path_factory.mktemp("synth") / "raw", progress=False, **SYNTH_RAW)


@pytest.fixture
def raw_copy(synth_raw: Path, tmp_path: Path) -> Path:
    """A private copy of `synth_raw` that a test may change."""
    return Path(shutil.copytree(synth_raw, tmp_path / "raw"))


@pytest.fixture(scope="session")
def synth_store(synth_raw: Path, tmp_path_factory: pytest.TempPathFactory) -> Any:
    """camvis.data.store.PatchStore built from `synth_raw` (see SYNTH_STORE); shared, read-only."""
    from camvis.data import store_build

    return store_build.build(synth_raw, tmp_path_factory.mktemp("store") / "synth.zarr", progress=False,
                             figure=False, **SYNTH_STORE)


CAMVIS2_FIXTURES = Path(__file__).parent / "data" / "camvis2"


@pytest.fixture(scope="session")
def camvis2_ref() -> dict[str, Any]:
    """tests/data/camvis2/reference.npz: what camvis2's own code made (make_fixtures.py)."""
    import numpy as np

    pytest.importorskip("cv2")  # camvis[camvis2]; requirements.lock installs it
    return dict(np.load(CAMVIS2_FIXTURES / "reference.npz"))


@pytest.fixture(scope="session")
def camvis2_raw_dir(camvis2_ref: dict[str, Any], tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The raw dir make_fixtures.py made, made again with the same synth call (checked by digest)."""
    import hashlib

    shape = tuple(int(v) for v in camvis2_ref["image_shape"])
    root = synthesize(tmp_path_factory.mktemp("c2") / "raw", views=2, images_per_view=2, size=shape,
                      seed=3, progress=False)
    for key, digest in camvis2_ref.items():
        if key.startswith("sha256_") and key.endswith((".png", ".npy")):
            path = root / key.removeprefix("sha256_")
            assert hashlib.sha256(path.read_bytes()).hexdigest() == str(digest), f"synth no longer makes {path}"
    return root


@pytest.fixture(scope="session")
def camvis2_store(camvis2_ref: dict[str, Any], camvis2_raw_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Any:
    """camvis's `--preprocessing camvis2` store of that raw dir, with the fixture's parameters."""
    from camvis.data import store_build

    ref = camvis2_ref
    return store_build.build(camvis2_raw_dir, tmp_path_factory.mktemp("c2s") / "c2.zarr",
                             factors=tuple(int(f) for f in ref["factors"]), patch_size=int(ref["patch_size"]),
                             patches_per_image=int(ref["patch_number"]), seed=int(ref["seed"]), progress=False,
                             figure=False, preprocessing="camvis2")


@pytest.fixture
def rendezvous_port() -> int:
    """A free port for a test's gloo rendezvous, below Linux's ephemeral range (32768-60999), as camvis
    picks its jobs' (distributed.master_port): an ephemeral port found free can be taken by any outgoing
    connection (a SLURM daemon's, on a busy CI machine) before rank 0 binds it."""
    for _ in range(200):
        port = random.randint(20000, 32767)
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
        return port
    pytest.fail("no free port in 20000-32767 for the rendezvous")
