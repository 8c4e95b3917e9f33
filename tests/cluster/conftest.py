"""Fixtures of the cluster tests."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Callable, Mapping

import pytest


@pytest.fixture
def install_shims(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Callable[[Mapping[str, str]], Path]:
    """A function writing stand-in commands ({name: sh body}) to tmp_path/shim, first on PATH, with $SHIM
    naming that folder (where the bodies keep their state); it returns the folder."""
    def install(shims: Mapping[str, str]) -> Path:
        folder = tmp_path / "shim"
        folder.mkdir()
        for name, body in shims.items():
            (folder / name).write_text(f"#!/bin/sh\n{body}\n")
            (folder / name).chmod(0o755)
        monkeypatch.setenv("SHIM", str(folder))
        monkeypatch.setenv("PATH", f"{folder}{os.pathsep}{os.environ['PATH']}")
        return folder
    return install
