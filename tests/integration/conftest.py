"""One `make demo` per session, shrunk (1 epoch of 64 patches, hidden 4, 10 resamples), shared by
test_demo.py and test_examples.py: the demo's 8 jobs train once, not once per module."""

from __future__ import annotations

import contextlib
import io
import os
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

DEMO_SHRINK = ["train.max_epochs=1", "train.epoch_patches=64", "model.size_hidden=4", "eval.bootstrap=10",
               "eval.figures=false", "slurm.array_parallelism=2"]
"""Overrides of configs/demo.yaml that keep `make demo`'s paths, data and store but make its jobs tiny."""


@dataclass(frozen=True)
class DemoRun:
    path: Path      # the folder `make demo` ran in: data/, outputs/demo/, jobs/demo/, models/demo_cat/
    pristine: Path  # a copy of it taken right after the run
    status: int     # demo.main's exit status
    out: str        # what it printed
    overrides: tuple[str, ...] = tuple(DEMO_SHRINK)  # what it ran with


@pytest.fixture(scope="session")
def demo_run(tmp_path_factory: pytest.TempPathFactory) -> DemoRun:
    """`python -m camvis.cli.demo` with DEMO_SHRINK in a fresh folder. Use it through `after_demo`."""
    from camvis.cli import demo

    path = tmp_path_factory.mktemp("demo") / "checkout"
    path.mkdir()
    before = Path.cwd()
    out = io.StringIO()
    os.chdir(path)
    try:
        with contextlib.redirect_stdout(out):
            status = demo.main(DEMO_SHRINK)
    finally:
        os.chdir(before)
    pristine = shutil.copytree(path, path.with_name("pristine"), symlinks=True)
    return DemoRun(path, pristine, status, out.getvalue())


@pytest.fixture
def after_demo(demo_run: DemoRun, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """The cwd: the folder `make demo` ran in, as the run left it (restored for each test, at the
    same absolute path: a store records the raw folder it was built from, the manifest its log
    files). Its files are hard links to the pristine copy's, as cheap as that for 60 tests:
    camvis replaces a file by renaming a new one into place, never writes into one (lock files,
    written in place, are copied). A test that wrote into a linked file fails here."""
    before = _fingerprint(demo_run.pristine)
    shutil.rmtree(demo_run.path)
    shutil.copytree(demo_run.pristine, demo_run.path, symlinks=True, copy_function=_link_or_copy)
    monkeypatch.chdir(demo_run.path)
    yield demo_run.path
    changed = sorted(k for k, v in _fingerprint(demo_run.pristine).items() if before.get(k) != v)
    assert not changed, f"written in place, not replaced: {changed} (a hard link into the demo's files)"


def _link_or_copy(src: str, dst: str) -> None:
    if src.endswith(".lock"):
        shutil.copy2(src, dst)
    else:
        os.link(src, dst)


def _fingerprint(root: Path) -> dict[str, tuple[int, int]]:
    """(size, mtime) of every file under root, by relative path."""
    found = {}
    for folder, _, files in os.walk(root):
        for name in files:
            stat = os.lstat(os.path.join(folder, name))
            found[os.path.relpath(os.path.join(folder, name), root)] = (stat.st_size, stat.st_mtime_ns)
    return found
