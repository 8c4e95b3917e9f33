"""Every writer and every option: a destination that is read-only, a file where a folder is expected or a
folder where a file is expected, a number out of its bounds (options and environment variables), a model
or batch that cannot fit, an --only value the grid lacks, a manifest naming a job outside outputs/: each
is exit 2 and one `error:` line naming the path, option, variable or key, from the real command in a real
process, and nothing in the folder it ran in is written or deleted (checksummed before and after)."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
GRID = {"experiment": "e", "folds": 3, "base": {"data": {"store": "store.zarr", "factors": [2, 4, 8]},
                                                "model": {"size_hidden": 4}, "train": {"device": "cpu"}},
        "axes": {"fold": "all"}, "slurm": {"time": 10, "mem_gb": 2, "signal_delay_s": 30}}


@pytest.fixture(scope="module")
def work(synth_raw: Path, synth_store, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A project folder: raw/, store.zarr, a job folder (job/: best.pt, config.yaml, scores.json), a grid,
    a file (afile), a folder (adir), a manifest naming a job ../../x, and ro/: a read-only tmpfs if
    this process may mount one."""
    import torch

    from camvis.config import load_job_config, to_dict
    from camvis.model import build_model

    root = tmp_path_factory.mktemp("bounds")
    shutil.copytree(synth_raw, root / "raw")
    shutil.copytree(synth_store.path, root / "store.zarr")
    cfg = load_job_config(None, ["data.store=store.zarr", "data.factors=[2,4,8]", "model.size_hidden=4",
                                 "train.device=cpu", "experiment=e", "name=j"])
    (root / "job").mkdir()
    torch.save({"model": build_model(cfg, synth_store.patch_size).state_dict(), "config": to_dict(cfg), "epoch": 0},
               root / "job" / "best.pt")
    (root / "job" / "config.yaml").write_text(yaml.safe_dump(to_dict(cfg)))
    (root / "job" / "scores.json").write_text(json.dumps({"view": "1148_1", "metrics": {"acc": 0.5}, "n_val": 3}))
    (root / "grid.yaml").write_text(yaml.safe_dump(GRID))
    (root / "afile").write_text("a file\n")
    (root / "adir").mkdir()
    (root / "jobs" / "bad").mkdir(parents=True)
    (root / "jobs" / "bad" / "manifest.json").write_text(json.dumps({"jobs": {"../../x": {"mode": "local"}}}))
    (root / "outputs" / "bad").mkdir(parents=True)
    # mounted outside pytest's basetemp (another session's pytest may rotate that away mid-run, and a mount
    # point cannot be removed), reached through the link ro -> it
    point = Path(tempfile.mkdtemp(prefix="camvis-test-ro-"))
    (root / "ro").symlink_to(point, target_is_directory=True)
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m,ro", "tmpfs", str(point)],
                             capture_output=True, text=True).returncode == 0
    try:
        yield root
    finally:
        if mounted:
            subprocess.run(["umount", str(point)], check=True)
        point.rmdir()


def read_only(work: Path) -> None:
    if not os.path.ismount((work / "ro").resolve()):
        pytest.skip("no read-only tmpfs: mounting one needs root (CAP_SYS_ADMIN); chmod does not stop root")


def image(work: Path) -> str:
    return sorted(p.name for p in (work / "raw" / "images").glob("1148_1_*.png")
                  if not p.name.endswith("visible.png"))[0]


def tree(root: Path) -> dict[str, str]:
    """Every path under root with a digest of its content (folders: 'dir')."""
    out = {}
    for path in sorted(root.rglob("*")):  # ro, a link to the read-only mount, is listed, not followed
        rel = str(path.relative_to(root))
        out[rel] = "dir" if path.is_dir() else hashlib.sha256(path.read_bytes()).hexdigest()
    return out


PREDICT = ["camvis.cli.predict", "job", "{image}", "--depth", "raw/depth_maps/1148_1.npy", "--device", "cpu"]
INFO = ["camvis.cli.data", "info", "store.zarr", "--plot", "{stem}"]
TRAIN = ["camvis.cli.train", "experiment=e", "name=t", "data.store=store.zarr", "data.factors=[2,4,8]",
         "model.size_hidden=4", "train.device=cpu", "train.max_epochs=1"]

CASES = {  # id: (argv, environment, what the error line names, needs the read-only mount)
    # destinations
    "predict_out_read_only": ([*PREDICT, "--out", "ro/p.csv"], {}, "read-only file system", True),
    "predict_out_under_a_file": ([*PREDICT, "--out", "afile/p.csv"], {}, "afile/p.csv", False),
    "predict_out_a_folder": ([*PREDICT, "--out", "adir"], {}, "adir", False),
    "export_read_only": (["camvis.cli.export", "job", "ro/bundle", "--no-onnx"], {}, "bundle: read-only", True),
    "export_under_a_file": (["camvis.cli.export", "job", "afile/bundle", "--no-onnx"], {}, "not a directory", False),
    "info_plot_read_only": ([*INFO, "--out", "ro/x.png"], {}, "ro/x.png: read-only", True),
    "info_plot_into_a_folder": ([*INFO, "--out", "adir"], {}, "adir: is a directory", False),
    "info_plot_under_a_file": ([*INFO, "--out", "afile/x.png"], {}, "afile", False),
    "build_read_only": (["camvis.cli.data", "build", "raw", "ro/s.zarr", "--patch-size", "16"], {},
                        "s.zarr: read-only", True),
    "build_under_a_file": (["camvis.cli.data", "build", "raw", "afile/s.zarr", "--patch-size", "16"], {},
                           "afile/s.zarr: not a directory", False),
    "synth_read_only": (["camvis.cli.data", "synth", "ro/raw", "--views", "1", "--images-per-view", "1"], {},
                        "ro/raw: read-only", True),
    "synth_to_a_file": (["camvis.cli.data", "synth", "afile", "--views", "1", "--images-per-view", "1"], {},
                        "afile", False),
    "train_outputs_a_file": ([*TRAIN, "--outputs", "afile"], {}, "afile/e: not a directory", False),
    # options
    "predict_seed_negative": ([*PREDICT, "--seed", "-1"], {}, "--seed: expected an integer in [0, 4294967295]", False),
    "aggregate_seed_negative": (["camvis.cli.aggregate", "e", "--seed", "-1"], {}, "--seed", False),
    "aggregate_confidence": (["camvis.cli.aggregate", "e", "--confidence", "1.5"], {}, "--confidence", False),
    "status_watch_nan": (["camvis.cli.status", "e", "--watch", "nan"], {}, "--watch: expected a finite", False),
    "status_watch_inf": (["camvis.cli.status", "e", "--watch", "inf"], {}, "--watch", False),
    "status_watch_zero": (["camvis.cli.status", "e", "--watch", "0"], {}, "--watch", False),
    "status_interval_nan": (["camvis.cli.status", "e", "--watch", "--interval", "nan"], {}, "--interval", False),
    "status_lines_zero": (["camvis.cli.status", "e", "--logs", "j", "--lines", "0"], {}, "--lines", False),
    "status_count_zero": (["camvis.cli.status", "e", "--watch", "--count", "0"], {}, "--count", False),
    "predict_local_gpus_negative": ([*PREDICT, "--local", "--gpus", "-1"], {}, "--gpus", False),
    "predict_mem_gb_negative": ([*PREDICT, "--slurm", "--mem-gb", "-5"], {}, "--mem-gb", False),
    "predict_patches_zero": ([*PREDICT, "--patches", "0"], {}, "--patches", False),
    "predict_batch_size_zero": ([*PREDICT, "--batch-size", "0"], {}, "--batch-size", False),
    "build_patch_size_3": (["camvis.cli.data", "build", "raw", "s.zarr", "--patch-size", "3"], {},
                           "--patch-size: patch_size must be a power of 2 >= 4", False),
    "build_patch_size_12": (["camvis.cli.data", "build", "raw", "s.zarr", "--patch-size", "12"], {},
                            "power of 2", False),
    "build_workers_zero": (["camvis.cli.data", "build", "raw", "s.zarr", "--workers", "0"], {}, "--workers", False),
    "synth_views_zero": (["camvis.cli.data", "synth", "new", "--views", "0"], {}, "--views", False),
    "synth_vis_range_nan": (["camvis.cli.data", "synth", "new", "--vis-range", "100", "nan"], {}, "--vis-range", False),
    # environment variables
    "threads_abc_launch": (["camvis.cli.launch", "grid.yaml", "--dry-run"], {"CAMVIS_NUM_THREADS": "abc"},
                           "CAMVIS_NUM_THREADS: expected an integer in [1, 4096], got 'abc'", False),
    "threads_zero_predict": ([*PREDICT, "--out", "p.csv"], {"CAMVIS_NUM_THREADS": "0"}, "CAMVIS_NUM_THREADS", False),
    "threads_abc_train": ([*TRAIN, "--outputs", "outputs"], {"CAMVIS_NUM_THREADS": "abc"}, "CAMVIS_NUM_THREADS", False),
    # sizes before allocating
    "train_size_hidden_huge": ([*TRAIN, "model.size_hidden=100000", "--outputs", "outputs"], {},
                               "model.size_hidden=100000", False),
    "train_batch_size_huge": ([*TRAIN, "model.size_hidden=512", "train.batch_size=100000", "--outputs", "outputs"],
                              {"SLURM_MEM_PER_NODE": "2048"}, "train.batch_size=100000", False),
    "launch_size_hidden_huge": (["camvis.cli.launch", "grid.yaml", "model.size_hidden=100000", "--local"], {},
                                "model.size_hidden=100000", False),
    "launch_mem_gb_above_the_machine": (["camvis.cli.launch", "grid.yaml", "slurm.mem_gb=100000", "--local"], {},
                                        "slurm.mem_gb=100000: more than this machine has", False),
    # selection and manifests
    "launch_only_unknown_value": (["camvis.cli.launch", "grid.yaml", "--dry-run", "--only", "fold=1,x"], {},
                                  "--only fold=x: the grid has no job with fold x", False),
    "status_manifest_outside": (["camvis.cli.status", "bad"], {}, "got '../../x'", False),
    "aggregate_manifest_outside": (["camvis.cli.aggregate", "bad"], {}, "got '../../x'", False),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_bad_input_is_one_line_exit_2_and_writes_nothing(work: Path, case: str) -> None:
    argv, environ, named, needs_ro = CASES[case]
    if needs_ro:
        read_only(work)
    name = image(work)
    args = [a.format(image=f"raw/images/{name}", stem=name.rsplit(".", 1)[0]) for a in argv]
    before = tree(work)
    env = {**os.environ, "PYTHONPATH": str(ROOT), **environ}
    if not environ:
        env.pop("CAMVIS_NUM_THREADS", None)
    done = subprocess.run([sys.executable, "-m", *args], cwd=work, env=env, capture_output=True, text=True,
                          timeout=300)
    errors = [line for line in done.stderr.splitlines() if "error:" in line]
    assert done.returncode == 2, (done.returncode, done.stdout[-1000:], done.stderr[-2000:])
    assert "Traceback" not in done.stderr, done.stderr[-3000:]
    assert len(errors) == 1, done.stderr
    assert named in errors[0], errors[0]
    assert tree(work) == before, "a refused command wrote or deleted something"


def test_the_read_only_mount_is_read_only(work: Path) -> None:
    read_only(work)
    with pytest.raises(OSError):
        (work / "ro" / "x").write_text("x")


def test_os_errors_map_to_one_line_naming_the_users_path() -> None:
    import errno

    from camvis.errors import PathError
    from camvis.io import os_error

    renamed = os_error(IsADirectoryError(errno.EISDIR, "Is a directory", "/a/.x.png.host.12.ab12cd34.tmp", "/a/x.png"))
    assert isinstance(renamed, PathError) and str(renamed) == "/a/x.png: is a directory: a file is expected there"
    scratch = os_error(NotADirectoryError(errno.ENOTDIR, "Not a directory", "f/.s.zarr.tmp-host-77"))
    assert str(scratch).startswith("f/s.zarr: not a directory") and scratch.errno == errno.ENOTDIR
    assert str(os_error(PermissionError(errno.EACCES, "Permission denied", "p"))).startswith("p: permission denied")
    assert "read-only" in str(os_error(OSError(errno.EROFS, "Read-only file system", "r")))
    assert os_error(OSError(errno.EIO, "I/O error", "x")) is None  # not a path's fault: keeps its traceback


def test_a_store_the_model_cannot_train_on_is_refused_at_build(synth_raw: Path, tmp_path: Path) -> None:
    """build --patch-size 12 once made a store that training refused later."""
    from camvis.data import store_build
    from camvis.errors import StoreError

    with pytest.raises(StoreError, match=r"patch_size must be a power of 2 >= 4 .* got 12"):
        store_build.build(synth_raw, tmp_path / "s.zarr", factors=(2, 4), patch_size=12, progress=False, figure=False)
    assert list(tmp_path.iterdir()) == []
