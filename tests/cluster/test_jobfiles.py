"""What an experiment's files say about its jobs (camvis.cluster.jobfiles); the join with SLURM and the
manifest-based cases run through camvis-status in test_monitor.py."""

from __future__ import annotations

from pathlib import Path

from camvis.cluster import jobfiles


def test_tail(tmp_path: Path) -> None:
    path = tmp_path / "log"
    path.write_text("".join(f"line {i}\n" for i in range(100)))
    assert jobfiles.tail(path, 3) == ["line 97", "line 98", "line 99"]
    assert jobfiles.tail(path, 3, max_bytes=20)[-1] == "line 99"
    assert jobfiles.tail(tmp_path / "absent", 3) is None and jobfiles.tail(None) is None
