"""One `make demo` per session, shrunk (1 epoch of 64 patches, hidden 4, 10 resamples), shared by
test_demo.py and test_examples.py: the demo's 8 jobs train once, not once per module."""

from __future__ import annotations

import contextlib
import io
import os
import shutil
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
def after_demo(demo_run: DemoRun, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The cwd: the folder `make demo` ran in, as the run left it (restored for each test, at the
    same absolute path: a store records the raw folder it was built from, the manifest its log
    files). data/ is hard-linked to the pristine copy: camvis replaces files by renaming them
    into place, never writes into one."""
    for entry in demo_run.path.iterdir():
        shutil.rmtree(entry) if entry.is_dir() and not entry.is_symlink() else entry.unlink()
    for entry in demo_run.pristine.iterdir():
        if entry.name == "data":
            shutil.copytree(entry, demo_run.path / entry.name, copy_function=os.link)
        elif entry.is_dir():
            shutil.copytree(entry, demo_run.path / entry.name, symlinks=True)
        else:
            shutil.copy2(entry, demo_run.path / entry.name)
    monkeypatch.chdir(demo_run.path)
    return demo_run.path
