"""Projects move: a finished demo project copied elsewhere works there, and never touches the old copy.

The store names its raw data by a digest and a project-relative path, the manifest its logs relative
to jobs/<experiment>/ (camvis.data.raw_identity, camvis.bookkeeping.manifest). The old folder is renamed
away while the copy runs (a path into it fails) and checksummed before and after.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from camvis.cli import demo

pytestmark = pytest.mark.slow


def checksum(root: Path) -> dict[str, str]:
    """sha256 of every file (and the target of every link) under root, by relative path."""
    found = {}
    for folder, dirs, files in os.walk(root):
        for name in files + dirs:
            path = Path(folder, name)
            key = path.relative_to(root).as_posix()
            if path.is_symlink():
                found[key] = "-> " + os.readlink(path)
            elif path.is_file():
                found[key] = hashlib.sha256(path.read_bytes()).hexdigest()
            else:
                found[key] = "dir"
    return found


def cli(name: str, *args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    code = f"import sys; from camvis.cli.{name} import main; sys.exit(main(sys.argv[1:]))"
    return subprocess.run([sys.executable, "-c", code, *args], cwd=cwd, capture_output=True, text=True,
                          timeout=600)


def manifest_entry(root: Path, job: str) -> dict:
    return json.loads((root / "jobs/demo/manifest.json").read_text())["jobs"][job]


def test_a_moved_project_runs_where_it_now_is(demo_run, tmp_path: Path) -> None:
    assert demo_run.status == 0
    new = Path(shutil.copytree(demo_run.pristine, tmp_path / "elsewhere" / "project", symlinks=True))
    old = demo_run.path
    away = old.with_name(old.name + ".away")
    os.rename(old, away)  # the old copy is gone from its place: whatever still points there fails
    before = checksum(away)
    store_before = checksum(new / demo.STORE)
    try:
        status = cli("status", "demo", cwd=new)
        assert status.returncode == 0, status.stderr
        assert "cat_fold1" in status.stdout and "align_fold4" in status.stdout

        logs = cli("status", "demo", "--logs", "cat_fold1", cwd=new)
        assert logs.returncode == 0, logs.stderr
        log = (new / "jobs/demo" / manifest_entry(new, "cat_fold1")["stdout"]).read_text().splitlines()
        heads = [line for line in logs.stdout.splitlines() if "stdout: " in line or "stderr: " in line]
        assert len(heads) == 2 and all("jobs/demo/" in h and str(old) not in h for h in heads)  # this copy's
        assert log[-1] in logs.stdout and "(no file)" not in logs.stdout

        agg = cli("aggregate", "demo", cwd=new)
        assert agg.returncode == 0, agg.stderr
        assert (new / "outputs/demo/summary.md").stat().st_size > 0

        b = demo.BUILD  # the README's example, as make demo built it: reused, not rebuilt
        build = cli("data", "build", str(demo.RAW), str(demo.STORE), "--factors", *map(str, b["factors"]),
                    "--patch-size", str(b["patch_size"]), "--patches-per-image", str(b["patches_per_image"]),
                    cwd=new)
        assert build.returncode == 0, build.stderr
        assert checksum(new / demo.STORE) == store_before

        launch = cli("launch", str(demo.GRID), "--local", *demo_run.overrides, cwd=new)
        assert launch.returncode == 0, launch.stderr
        manifest = json.loads((new / "jobs/demo/manifest.json").read_text())
        assert manifest["launches"][-1]["submitted"] == [] and len(manifest["launches"][-1]["skipped"]) == 8

        images = sorted(str(p.relative_to(new)) for p in (new / demo.RAW / "images").glob("1148_1_*[0-9].png"))
        predict = cli("predict", str(demo.BUNDLE), *images, "--raw", str(demo.RAW), "--out", "moved.csv", cwd=new)
        assert predict.returncode == 0, predict.stderr
        assert len((new / "moved.csv").read_text().splitlines()) == 1 + len(images)
    finally:
        os.rename(away, old)
    assert checksum(old) == before, "the old copy changed"
    assert not [p for p in new.rglob("*") if str(old) in str(p)]


def test_the_store_and_manifest_name_nothing_absolute_inside_the_project(demo_run) -> None:
    """What makes the move work: no path of the project's own is recorded absolute."""
    attrs = json.loads((demo_run.pristine / demo.STORE / "zarr.json").read_text())["attributes"]
    assert attrs["build"]["raw_dir"] == str(demo.RAW) and attrs["build"]["raw_digest"].startswith("sha256:")
    manifest = json.loads((demo_run.pristine / "jobs/demo/manifest.json").read_text())
    for entry in manifest["jobs"].values():
        assert not os.path.isabs(entry["stdout"]) and not os.path.isabs(entry["stderr"])
        assert (demo_run.pristine / "jobs/demo" / entry["stdout"]).is_file()
