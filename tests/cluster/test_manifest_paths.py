"""Manifests keep log paths relative to jobs/<experiment>/; readers find logs from there, also for
older manifests with absolute paths into a project's old place (issue 20 part 7)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from camvis.bookkeeping import experiment_files, manifest
from camvis.io import write_json


def _experiment(root: Path, stdout: str, log_text: str) -> None:
    exp = root / "jobs" / "e"
    (exp / "7_0").mkdir(parents=True)
    (exp / "7_0" / "7_0_0_log.out").write_text(log_text)
    write_json(exp / "manifest.json", {"experiment": "e", "launches": [], "jobs": {
        "cat_fold1": {"group": "cat", "fold": 1, "mode": "slurm", "job_id": "7_0", "stdout": stdout, "stderr": None}}})


def test_relative_logs_keeps_paths_inside_the_jobs_folder_relative(tmp_path: Path) -> None:
    exp = tmp_path / "jobs" / "e"
    entry = {"stdout": str(exp / "7_0" / "7_0_0_log.out"), "stderr": "/elsewhere/x.err", "job_id": "7_0"}
    kept = manifest.relative_logs(entry, exp)
    assert kept == {"stdout": "7_0/7_0_0_log.out", "stderr": "/elsewhere/x.err", "job_id": "7_0"}
    assert manifest.log_path(kept["stdout"], exp) == str(exp / "7_0" / "7_0_0_log.out")
    assert manifest.log_path(None, exp) is None and manifest.log_path("", exp) is None


def test_logs_are_read_from_the_moved_copy_not_the_old_one(tmp_path: Path) -> None:
    old = tmp_path / "old"
    _experiment(old, str(old / "jobs" / "e" / "7_0" / "7_0_0_log.out"), "the old copy's log\n")  # as before
    new = Path(shutil.copytree(old, tmp_path / "new"))
    (new / "jobs" / "e" / "7_0" / "7_0_0_log.out").write_text("the moved copy's log\n")
    [(stream, path, lines), *_] = experiment_files.job_logs("e", "cat_fold1", new / "jobs", new / "outputs")
    assert (stream, path, lines) == ("stdout", str(new / "jobs/e/7_0/7_0_0_log.out"), ["the moved copy's log"])
    shutil.rmtree(new / "jobs" / "e" / "7_0")  # not in the copy: the recorded path, as it is
    [(_, path, lines), *_] = experiment_files.job_logs("e", "cat_fold1", new / "jobs", new / "outputs")
    assert (path, lines) == (str(old / "jobs/e/7_0/7_0_0_log.out"), ["the old copy's log"])


def test_a_relative_manifest_moves_with_its_project(tmp_path: Path) -> None:
    _experiment(tmp_path / "a", "7_0/7_0_0_log.out", "log\n")
    moved = Path(shutil.move(tmp_path / "a", tmp_path / "b"))
    [(_, path, lines), *_] = experiment_files.job_logs("e", "7_0", moved / "jobs", moved / "outputs")
    assert (path, lines) == (str(moved / "jobs/e/7_0/7_0_0_log.out"), ["log"])
    assert json.loads((moved / "jobs/e/manifest.json").read_text())["jobs"]["cat_fold1"]["stdout"] == "7_0/7_0_0_log.out"
