"""What an experiment's files say about its jobs (camvis.bookkeeping.experiment_files); the join with SLURM and the
manifest-based cases run through camvis-status in test_monitor.py."""

from __future__ import annotations

from pathlib import Path

from camvis.bookkeeping import experiment_files


def test_tail(tmp_path: Path) -> None:
    path = tmp_path / "log"
    path.write_text("".join(f"line {i}\n" for i in range(100)))
    assert experiment_files.tail(path, 3) == ["line 97", "line 98", "line 99"]
    assert experiment_files.tail(path, 3, max_bytes=20)[-1] == "line 99"
    assert experiment_files.tail(tmp_path / "absent", 3) is None and experiment_files.tail(None) is None
