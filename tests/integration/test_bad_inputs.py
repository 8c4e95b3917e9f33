"""The corpus of bad inputs (tests/data/bad_inputs/<class>/*.yaml), each run as a subprocess of the real
CLI in a copy of a finished demo project (the session's shrunk `make demo`, conftest.demo_run).

A case is a YAML mapping (the format: tests/data/bad_inputs/README.md):
    argv:   [camvis-predict, models/demo_cat, case/a.png, --depth, ...]   # run in the project's root
    env:    {CAMVIS_NUM_THREADS: abc}                                     # optional, added to os.environ
    setup:  [{write: case/a.png}, {copy: models/demo_cat, to: case/b}, ...]  # optional, under case/
    expect: case/a.png                                                    # what the one line must name
    xfail:  fixed by issue 20 part N                                      # optional, strict
Every case must exit 2 with exactly one stderr line `error: ...` naming `expect`, no traceback, and
leave the whole tree as it found it (checksummed before and after: nothing written, nothing deleted).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import stat
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml
from PIL import Image

from camvis.cli import demo

CORPUS = Path(__file__).resolve().parents[1] / "data" / "bad_inputs"
CASES = sorted(CORPUS.glob("*/*.yaml"))
CLASSES = ("predict", "export", "bundles", "stores", "destinations", "options", "environment")
BIN = Path(sys.executable).parent
TIMEOUT_S = 120  # a hang (a FIFO opened for reading) fails the case instead of the session

pytestmark = pytest.mark.slow


def load(case: Path) -> dict[str, Any]:
    spec = yaml.safe_load(case.read_text())
    assert isinstance(spec, dict) and spec.keys() <= {"argv", "env", "setup", "expect", "xfail", "about"}, case
    assert spec["argv"][0].startswith("camvis-") and spec["expect"], case
    return spec


def checksum(root: Path) -> dict[str, str]:
    """Every entry under root by relative path: a file's sha256 and mode, a folder's mode, a link's target."""
    found = {}
    for folder, dirs, files in os.walk(root):
        for name in dirs + files:
            path = Path(folder, name)
            st = path.lstat()
            if stat.S_ISREG(st.st_mode):
                with open(path, "rb") as f:
                    value = hashlib.file_digest(f, "sha256").hexdigest()
            elif stat.S_ISLNK(st.st_mode):
                value = "-> " + os.readlink(path)
            else:
                value = stat.S_IFMT(st.st_mode)
            found[path.relative_to(root).as_posix()] = f"{value} {stat.S_IMODE(st.st_mode):o}"
    return found


def _inside(root: Path, rel: str) -> Path:
    assert rel.startswith("case/"), f"setup writes only under case/: {rel}"
    return root / rel


def _set(data: dict[str, Any], dotted: str, value: Any) -> None:
    *parents, last = dotted.split(".")
    for key in parents:
        data = data[key]
    if value == "<delete>":
        del data[last]
    else:
        data[last] = value


def set_up(root: Path, steps: list[dict[str, Any]]) -> None:
    """The case's files, made under root/case/ before the tree is checksummed."""
    for step in steps:
        if "copy" in step:
            src, dst = root / step["copy"], _inside(root, step["to"])
            if "*" in step["copy"]:  # the first match (the demo's image names are drawn at random)
                src = sorted(root.glob(step["copy"]))[0]
            dst.parent.mkdir(parents=True, exist_ok=True)
            if src.is_dir():
                shutil.copytree(src, dst, symlinks=True)
            else:
                shutil.copy2(src, dst)
            continue
        kind = next(k for k in ("write", "mkdir", "fifo", "png", "npy", "truncate", "json", "remove", "symlink")
                    if k in step)
        path = _inside(root, step[kind])
        if "*" in step[kind] and step.get("all"):
            for match in root.glob(step[kind]):
                match.unlink()
            continue
        if "*" in step[kind]:  # the first match
            path = sorted(root.glob(step[kind]))[0]
        path.parent.mkdir(parents=True, exist_ok=True)
        if kind == "write":
            data = bytes.fromhex(step["hex"]) if "hex" in step else step.get("text", "").encode()
            path.write_bytes(data * step.get("repeat", 1))
        elif kind == "mkdir":
            path.mkdir(exist_ok=True)
        elif kind == "fifo":
            os.mkfifo(path)
        elif kind == "png":
            h, w = step.get("size", [8, 8])
            Image.fromarray(np.full((h, w, 3), 128, np.uint8)).save(path)
        elif kind == "npy":
            np.save(path, np.full(step["shape"], step.get("fill", 100.0), step.get("dtype", "float32")))
        elif kind == "truncate":
            with open(path, "r+b") as f:
                f.truncate(step.get("to_bytes", 0) if step.get("to_bytes", 0) >= 0
                           else max(0, path.stat().st_size + step["to_bytes"]))
        elif kind == "json":
            data = json.loads(path.read_text())
            for dotted, value in step["set"].items():
                _set(data, dotted, value)
            path.write_text(json.dumps(data))
        elif kind == "remove":
            shutil.rmtree(path) if path.is_dir() else path.unlink()
        elif kind == "symlink":
            os.symlink(step["target"], path)


def placed(arg: str, root: Path) -> str:
    """@GRID@: the checkout's configs/demo.yaml; @IMAGE@: the name of the demo's first image."""
    if "@IMAGE@" in arg:
        first = min(p.stem for p in (root / demo.RAW / "images").glob("*.png") if not p.stem.endswith("visible"))
        arg = arg.replace("@IMAGE@", first)
    return arg.replace("@GRID@", str(demo.GRID))


@pytest.fixture(scope="module")
def project(demo_run, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, str]]:
    """A private copy of the finished demo project, and its checksum: cases run in it one after another."""
    assert demo_run.status == 0
    root = Path(shutil.copytree(demo_run.pristine, tmp_path_factory.mktemp("bad-inputs") / "project", symlinks=True))
    return root, checksum(root)


def test_corpus_is_large_enough() -> None:
    counts = {c: len(list((CORPUS / c).glob("*.yaml"))) for c in CLASSES}
    assert len(CASES) >= 80 and all(counts.values()), counts
    assert {p.parent.name for p in CASES} <= set(CLASSES)


@pytest.mark.parametrize("case", CASES, ids=lambda p: f"{p.parent.name}/{p.stem}")
def test_bad_input_is_one_line_and_changes_nothing(case: Path, project, request) -> None:
    spec = load(case)
    if spec.get("xfail"):
        request.applymarker(pytest.mark.xfail(reason=spec["xfail"], strict=True))
    root, pristine = project
    try:
        set_up(root, spec.get("setup") or [])
        before = checksum(root)
        argv = [str(BIN / spec["argv"][0]), *(placed(str(a), root) for a in spec["argv"][1:])]
        env = {**os.environ, **{k: str(v) for k, v in (spec.get("env") or {}).items()}}
        try:
            proc = subprocess.run(argv, cwd=root, env=env, capture_output=True, timeout=TIMEOUT_S,
                                  stdin=subprocess.DEVNULL)
        except subprocess.TimeoutExpired:
            pytest.fail(f"{case.name}: still running after {TIMEOUT_S} s")
        err = proc.stderr.decode("utf-8", "replace")
        after = checksum(root)
        changed = sorted(k for k in before.keys() | after.keys() if before.get(k) != after.get(k))
        assert proc.returncode == 2, f"{case.name}: exit {proc.returncode}, stderr {err[-2000:]!r}"
        assert "Traceback" not in err
        lines = err.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("error: "), lines[-20:]
        assert spec["expect"] in lines[0], f"{case.name}: {spec['expect']!r} not in {lines[0]!r}"
        assert not changed, f"{case.name}: written or deleted: {changed[:20]}"
    finally:
        shutil.rmtree(root / "case", ignore_errors=True)
        if checksum(root) != pristine:  # a case that wrote or deleted: the next one starts clean
            shutil.rmtree(root)
            shutil.copytree(request.getfixturevalue("demo_run").pristine, root, symlinks=True)
