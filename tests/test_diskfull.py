"""A full disk and killed writers, on a real small file system (a 2 MiB tmpfs).

Every writer (synth, store build, checkpoint, scores/CSV, manifest, PNG figure) turns ENOSPC
(and EFBIG) into one DiskFullError / `error: ...` line with exit 2 naming the path, and leaves
nothing under a final name that could pass for good; the leftovers of killed writers (named
with this host and a dead pid) are reaped by the next run, a live writer's are kept.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from camvis import io
from camvis.bookkeeping import manifest
from camvis.data import store_build
from camvis.cli import data as data_cli
from camvis.cli import launch as launch_cli
from camvis.errors import DiskFullError

ROOT = Path(__file__).resolve().parents[1]
DEMO = ROOT / "configs" / "demo.yaml"
DEAD = 999_999_999  # above any pid_max: no such process
DISK_BYTES = 2 * 1024 * 1024
TRAIN = ["data.factors=[2,4,8]", "model.size_hidden=8", "train.batch_size=32", "train.epoch_patches=128",
         "train.max_epochs=1", "eval.bootstrap=50", "eval.figures=false", "experiment=e", "name=j"]


@pytest.fixture
def disk(tmp_path: Path) -> Iterator[Path]:
    """A 2 MiB tmpfs: writes beyond it fail with ENOSPC, as on a full disk."""
    mount = tmp_path / "disk"
    mount.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={DISK_BYTES}", "tmpfs", str(mount)],
                          capture_output=True, text=True)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a small tmpfs here (needs root / CAP_SYS_ADMIN): {done.stderr.strip()}")
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=True)


def fill(disk: Path, leave: int) -> None:
    """Take all but about `leave` bytes of the disk (tmpfs counts whole pages)."""
    free = shutil.disk_usage(disk).free
    with open(disk / "filler", "ab") as f:
        f.write(b"\0" * max(free - leave, 0))


def listing(folder: Path) -> list[str]:
    """Every entry under `folder`, hidden ones too, relative to it."""
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*"))


def one_error_line(err: str, *names: str) -> str:
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    assert "Traceback" not in err
    for name in names:
        assert name in lines[0], (name, lines[0])
    return lines[0]


@pytest.fixture
def live_pid() -> Iterator[int]:
    """A process of this host that is alive and is not this test's."""
    proc = subprocess.Popen(["sleep", "600"])
    try:
        yield proc.pid
    finally:
        proc.kill()
        proc.wait()


# --------------------------------------------------------------------------- synth


def test_synth_on_a_full_disk_is_one_line_not_a_bus_error(disk: Path) -> None:
    """The depth maps were memory-mapped sparse files: a full disk killed synth with SIGBUS."""
    out = disk / "raw"
    done = subprocess.run([sys.executable, "-m", "camvis.cli.data", "synth", str(out), "--views", "4",
                           "--size", "192x288"], capture_output=True, text=True)
    assert done.returncode == 2, (done.returncode, done.stderr)  # a bus error is -7
    line = one_error_line(done.stderr, f"disk full: cannot write {out}", "it needs at least 3.4 MiB")
    assert "2.0 MiB free" in line  # measured once the scratch folder is gone
    assert listing(disk) == ["raw"] and not shutil.disk_usage(disk).used


def test_synth_reaps_a_killed_runs_scratch_and_keeps_a_live_ones(tmp_path: Path, live_pid: int) -> None:
    from camvis.data.synth import synthesize

    out, host = tmp_path / "raw", io.host()
    killed, running = out / f".synth.tmp-{host}-{DEAD}", out / f".synth.tmp-{host}-{live_pid}"
    for scratch in (killed, running):
        (scratch / "images").mkdir(parents=True)
    synthesize(out, views=1, images_per_view=1, size=(64, 96), progress=False)
    assert sorted(p.name for p in out.iterdir()) == sorted(
        ["images", "depth_maps", "synth.json", "visibility.csv", running.name])
    assert (running / "images").is_dir()


# --------------------------------------------------------------------------- store build


def test_store_build_on_a_full_disk_leaves_no_store(disk: Path, synth_raw: Path,
                                                    capsys: pytest.CaptureFixture) -> None:
    fill(disk, 256 * 1024)
    store = disk / "s.zarr"
    code = data_cli.main(["build", str(synth_raw), str(store), "--factors", "2", "4", "8",
                          "--patch-size", "16", "--patches-per-image", "64"])
    assert code == 2
    one_error_line(capsys.readouterr().err, f"disk full: cannot write {store}", "it needs up to ")
    assert listing(disk) == ["filler"]  # no store, no scratch, no figure


def test_store_build_reaps_a_killed_builds_leftovers(tmp_path: Path, synth_raw: Path, live_pid: int) -> None:
    final, host = tmp_path / "s.zarr", io.host()
    dead_scratch = tmp_path / f".s.zarr.tmp-{host}-{DEAD}"
    (dead_scratch / "levels").mkdir(parents=True)
    dead_png = tmp_path / f".s.zarr.sampling.png.{host}.{DEAD}.abcd_123.tmp"
    live_png = tmp_path / f".s.zarr.sampling.png.{host}.{live_pid}.abcd_123.tmp"
    for tmp in (dead_png, live_png):
        tmp.write_bytes(b"half a png")
    store_build.build(synth_raw, final, factors=(2, 4), patch_size=16, patches_per_image=8, progress=False)
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
        [final.name, "s.zarr.sampling.png", live_png.name])


# --------------------------------------------------------------------------- training job


def test_job_on_a_full_disk_fails_cleanly_and_the_rerun_reaps_and_finishes(disk: Path, synth_store,
                                                                         live_pid: int) -> None:
    """camvis-train: the checkpoint does not fit -> one line, exit 2, no checkpoint under its name;
    once space is freed, a rerun reaps the killed run's .tmp (a live writer's stays) and finishes."""
    fill(disk, 56 * 1024)
    outputs, job = disk / "out", disk / "out" / "e" / "j"
    cmd = [sys.executable, "-m", "camvis.cli.train", f"data.store={synth_store.path}", *TRAIN,
           "--outputs", str(outputs)]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    done = subprocess.run(cmd, capture_output=True, text=True, env=env)
    assert done.returncode == 2, done.stderr
    err = done.stderr.strip().splitlines()[-1]  # the training log comes first
    assert "Traceback" not in done.stderr and err.startswith(f"error: disk full: cannot write {job}/")
    assert "pt; it needs " in err
    assert not (job / "checkpoint.pt").exists() and not (job / "scores.json").exists()
    assert not list(job.rglob("*.tmp"))

    (disk / "filler").unlink()
    killed = job / f".checkpoint.pt.{io.host()}.{DEAD}.x1y2z3_4.tmp"
    running = job / f".best.pt.{io.host()}.{live_pid}.x1y2z3_4.tmp"
    for tmp in (killed, running):
        tmp.write_bytes(b"half a checkpoint")
    done = subprocess.run(cmd, capture_output=True, text=True, env=env)
    assert done.returncode == 0, done.stderr
    assert json.loads((job / "scores.json").read_text())["metrics"]
    assert not killed.exists() and running.exists()


def test_checkpoint_that_does_not_fit_keeps_the_last_good_one(disk: Path) -> None:
    import torch

    path = disk / "checkpoint.pt"
    io.write_torch(path, {"epoch": 1, "w": torch.ones(10)})
    fill(disk, 16 * 1024)
    with pytest.raises(DiskFullError, match=rf"disk full: cannot write {path}; it needs 3\d\d\.\d KiB"):
        io.write_torch(path, {"epoch": 2, "w": torch.ones(100_000)})
    assert torch.load(path, weights_only=True)["epoch"] == 1
    assert listing(disk) == ["checkpoint.pt", "filler"]


# --------------------------------------------------------------------------- scores, CSV, manifest, figures


def test_scores_and_csv_that_do_not_fit_keep_the_last_good_ones(disk: Path) -> None:
    import pandas as pd

    scores, csv = disk / "scores.json", disk / "predictions.csv"
    io.write_json(scores, {"acc": 0.5})
    io.write_csv(pd.DataFrame({"x": [1]}), csv)
    fill(disk, 8 * 1024)
    with pytest.raises(DiskFullError, match=rf"cannot write {scores}; it needs \d+\.\d KiB, 8\.0 KiB free"):
        io.write_json(scores, {"acc": 0.75, "bootstrap": list(range(10_000))})
    with pytest.raises(DiskFullError, match=rf"cannot write {csv}; it needs"):
        io.write_csv(pd.DataFrame({"x": range(10_000)}), csv)
    assert json.loads(scores.read_text()) == {"acc": 0.5} and csv.read_text() == "x\n1\n"
    assert listing(disk) == ["filler", "predictions.csv", "scores.json"]


def test_manifest_that_does_not_fit_keeps_the_last_one_and_reaps(disk: Path, tmp_path: Path) -> None:
    from camvis.cluster.launch import launch

    result = launch(DEMO, ["folds=3"], dry_run=True, outputs=tmp_path / "outputs", jobs_dir=disk / "jobs")
    exp_dir = disk / "jobs" / "demo"
    killed = exp_dir / f".manifest.json.{io.host()}.{DEAD}.abcdefgh.tmp"
    exp_dir.mkdir(parents=True)
    killed.write_text("{half")
    path = manifest.record(exp_dir, result.grid, result.record(), tmp_path / "outputs", {})
    assert not killed.exists()
    first = path.read_text()
    fill(disk, 0)
    with pytest.raises(DiskFullError, match=rf"disk full: cannot write {path}; it needs \d+\.\d KiB, 0 B free"):
        manifest.record(exp_dir, result.grid, result.record(), tmp_path / "outputs", {})
    assert path.read_text() == first
    assert listing(exp_dir) == [".manifest.lock", "manifest.json"]


def test_launch_whose_jobs_folder_is_full_is_one_line(disk: Path, tmp_path: Path, synth_store,
                                                      capsys: pytest.CaptureFixture) -> None:
    """submitit's job pickles are not camvis's writes: the CLI still shows one line, exit 2."""
    fill(disk, 0)
    code = launch_cli.main([str(DEMO), f"data.store={synth_store.path}", "folds=3", "data.factors=[2,4,8]",
                            "--local", "--only", "fold=1", "--only", "group=cat",
                            "--jobs-dir", str(disk / "jobs"), "--outputs", str(tmp_path / "outputs")])
    assert code == 2
    one_error_line(capsys.readouterr().err, "disk full")


def test_png_that_does_not_fit_keeps_the_last_good_one(disk: Path) -> None:
    import numpy as np
    from matplotlib.figure import Figure

    from camvis.plots import save_png

    path = disk / "figure.png"
    small = Figure(figsize=(1, 1))
    save_png(small, path)
    good = path.read_bytes()
    fill(disk, 4 * 1024)
    big = Figure(figsize=(6, 6))
    big.add_subplot().imshow(np.random.default_rng(0).random((200, 200)))
    with pytest.raises(DiskFullError, match=rf"cannot write {path}; it needs \d+\.\d KiB"):
        save_png(big, path)
    assert path.read_bytes() == good and listing(disk) == ["figure.png", "filler"]


def test_file_size_limit_is_a_clear_error(tmp_path: Path) -> None:
    """EFBIG (the process's `ulimit -f`) is the same one-line error, in its own words."""
    code = ("import resource, sys\n"
            "from camvis.io import write_json\n"
            "from camvis.errors import DiskFullError\n"
            "resource.setrlimit(resource.RLIMIT_FSIZE, (4096, 4096))\n"
            "try:\n"
            f"    write_json({str(tmp_path / 'big.json')!r}, list(range(10000)))\n"
            "except DiskFullError as e:\n"
            "    print(e)\n")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.startswith(f"file too large: cannot write {tmp_path / 'big.json'}; it needs ")
    assert "ulimit -f" in done.stdout and listing(tmp_path) == []


# --------------------------------------------------------------------------- killed writers


def test_tmp_names_carry_host_and_pid_and_only_dead_ones_are_reaped(tmp_path: Path, live_pid: int) -> None:
    host = io.host()
    with io.atomic_path(tmp_path / "scores.json") as tmp:
        assert tmp.name.startswith(f".scores.json.{host}.{os.getpid()}.") and tmp.name.endswith(".tmp")
        mine_now = tmp.name
        (tmp_path / "sub").mkdir()
        dead = [tmp_path / f".a.json.{host}.{DEAD}.abc_1234.tmp",
                tmp_path / "sub" / f".b.png.{host}.{DEAD}.abc_1234.tmp"]
        kept = [tmp_path / f".a.json.{host}.{live_pid}.abc_1234.tmp",  # a live writer
                tmp_path / f".a.json.not-{host}.{DEAD}.abc_1234.tmp",  # another host's: cannot tell
                tmp_path / ".a.json.abc_1234.tmp",  # no host and pid: cannot tell
                tmp_path / "a.json.tmp"]  # not ours at all
        for path in dead + kept:
            path.write_text("x")
        assert io.reap_stale_tmp(tmp_path) == [dead[0]]
        assert io.reap_stale_tmp(tmp_path, recursive=True) == [dead[1]]
        assert not any(p.exists() for p in dead) and all(p.exists() for p in kept)
        assert tmp.exists()  # this process's own write in progress
    assert mine_now not in listing(tmp_path)


def test_cli_shows_a_foreign_writers_full_disk_as_one_line(disk: Path, capsys: pytest.CaptureFixture) -> None:
    """A plain ENOSPC OSError (a writer camvis does not own) -> one line; other OSErrors keep
    their traceback."""
    from camvis.cli import fail

    fill(disk, 0)
    with pytest.raises(OSError) as full:
        with open(disk / "foreign.pkl", "wb") as f:
            f.write(b"x" * 65536)
    assert fail(full.value) == 2
    one_error_line(capsys.readouterr().err, "disk full")
    with pytest.raises(FileNotFoundError):
        fail(FileNotFoundError(2, "No such file or directory", "nowhere"))


def test_quota_is_told_as_a_quota(tmp_path: Path) -> None:
    """EDQUOT needs a quota-enabled file system to happen for real; its message is checked here."""
    import errno

    error = io.disk_full_error(tmp_path / "scores.json", OSError(errno.EDQUOT, "Disk quota exceeded"), 1536)
    assert str(error).startswith(f"disk quota exceeded: cannot write {tmp_path / 'scores.json'}; "
                                 "it needs 1.5 KiB, ")
    assert "quota -s" in str(error) and error.errno == errno.EDQUOT and isinstance(error, OSError)
