"""Staging a directory beside its final place: scratch names, reaping killed builds, swap-in."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from camvis import atomic_folder
from camvis import host as host_mod

DEAD = 999_999_999  # above any pid_max: no such process


def _dir(path: Path, content: str) -> Path:
    path.mkdir(parents=True)
    (path / "data.txt").write_text(content)
    return path


def _listing(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir())


def test_scratch_names_carry_a_file_name_safe_host(monkeypatch: pytest.MonkeyPatch,
                                                   tmp_path: Path) -> None:
    monkeypatch.setattr(host_mod.socket, "gethostname", lambda: "node-7.cluster/a b")
    name = atomic_folder.scratch_path(tmp_path / "s.zarr", "tmp").name
    assert name == f".s.zarr.tmp-node-7.cluster_a_b-{os.getpid()}"


def test_leftovers_of_a_killed_process_are_cleaned_or_restored(tmp_path: Path) -> None:
    final, host = tmp_path / "s.zarr", atomic_folder.host()
    _dir(tmp_path / f".s.zarr.tmp-{host}-{DEAD}", "half written")   # died while writing
    _dir(tmp_path / f".s.zarr.old-{host}-{DEAD}", "last good")      # died between renames
    running = _dir(tmp_path / f".s.zarr.tmp-{host}-{os.getpid()}", "still being written")
    atomic_folder.remove_stale(final)
    assert (final / "data.txt").read_text() == "last good"
    assert (running / "data.txt").read_text() == "still being written"
    assert _listing(tmp_path) == sorted(["s.zarr", running.name])


def test_leftovers_of_other_hosts_are_left_alone(tmp_path: Path) -> None:
    """On a shared file system a pid says nothing about another node's build: only this
    host's dead builds are reaped (an `.old-` one too, once a newer store is in place)."""
    final = _dir(tmp_path / "s.zarr", "current")
    other, mine = f"not-{atomic_folder.host()}", atomic_folder.host()
    theirs = [tmp_path / f".s.zarr.tmp-{other}-{DEAD}", tmp_path / f".s.zarr.old-{other}-{DEAD}"]
    for leftover in theirs + [tmp_path / f".s.zarr.tmp-{mine}-{DEAD}",
                              tmp_path / f".s.zarr.old-{mine}-{DEAD}"]:
        (leftover / "levels").mkdir(parents=True)
    atomic_folder.remove_stale(final)
    assert _listing(tmp_path) == sorted(["s.zarr"] + [p.name for p in theirs])
    assert all((p / "levels").is_dir() for p in theirs)
    assert (final / "data.txt").read_text() == "current"


def test_swap_in_renames_into_place_and_drops_the_old_one(tmp_path: Path) -> None:
    final = tmp_path / "s.zarr"
    atomic_folder.swap_in(_dir(atomic_folder.scratch_path(final, "tmp"), "first"), final)
    assert _listing(tmp_path) == ["s.zarr"] and (final / "data.txt").read_text() == "first"
    atomic_folder.swap_in(_dir(atomic_folder.scratch_path(final, "tmp"), "second"), final)
    assert _listing(tmp_path) == ["s.zarr"] and (final / "data.txt").read_text() == "second"


def test_failed_swap_in_puts_the_old_one_back(tmp_path: Path,
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    final = _dir(tmp_path / "s.zarr", "old")
    tmp = _dir(atomic_folder.scratch_path(final, "tmp"), "new")
    real = os.replace

    def failing(src: str | os.PathLike, dst: str | os.PathLike) -> None:
        if Path(src) == tmp:
            raise OSError("rename failed (simulated)")
        real(src, dst)

    monkeypatch.setattr(atomic_folder.os, "replace", failing)
    with pytest.raises(OSError, match="simulated"):
        atomic_folder.swap_in(tmp, final)
    assert (final / "data.txt").read_text() == "old"
    assert _listing(tmp_path) == sorted(["s.zarr", tmp.name])  # the caller removes its tmp


def test_scratch_dir_goes_whatever_happens(tmp_path: Path) -> None:
    final = tmp_path / "s.zarr"
    with atomic_folder.scratch_dir(final) as tmp:
        (tmp / "data").write_text("complete")
        atomic_folder.swap_in(tmp, final)
    with pytest.raises(RuntimeError), atomic_folder.scratch_dir(final) as tmp:
        (tmp / "data").write_text("half")
        raise RuntimeError("writer failed")
    assert _listing(tmp_path) == ["s.zarr"] and (final / "data").read_text() == "complete"
