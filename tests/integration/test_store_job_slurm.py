"""Store builds as jobs on the real local SLURM (camvis.cluster.store_job): a grid whose data.store is
missing but has a `store:` section is launched as a build job and arrays that wait for it (afterok);
a relaunch (or a concurrent launch) while the build is queued reuses it; a failed build is reported
by camvis-status and released by the next launch; a broken raw dir submits nothing; camvis-data build
--slurm writes the bytes a local build writes. Jobs are tiny (1 epoch of 32 patches) and everything
submitted here is cancelled at the end.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml
from test_slurm import REQUIRED, TINY, all_ended, cluster_up, states, wait_for

from camvis.cluster import monitor
from camvis.cluster.launch import LaunchResult, launch

pytestmark = [pytest.mark.slurm, pytest.mark.slow]

HOLD = {"hold": True}  # a held job stays pending (no compute) until `scontrol release`


@pytest.fixture(scope="module")
def cluster() -> None:
    if not REQUIRED:
        pytest.skip("SLURM integration tests: set CAMVIS_SLURM=1 with the local cluster up (bash slurm/cluster.sh start)")
    up, detail = cluster_up()
    if not up:
        pytest.fail(f"CAMVIS_SLURM=1 but the local SLURM cluster is not up ({detail or 'no node'})")


def grid_file(root: Path, raw: Path, experiment: str, store: dict[str, Any] | None = None,
              additional: dict[str, Any] | None = None) -> Path:
    """A 3-fold CPU grid on root/store.zarr (not built), built from `raw` by a 1-CPU job."""
    grid = {"experiment": experiment, "folds": 3,
            "base": {"data": {"store": str(root / "store.zarr"), "factors": [2, 4, 8]},
                     "model": {"size_hidden": 4}, "train": {"device": "cpu", "max_epochs": 1}},
            "axes": {"fold": "all"},
            "store": {"raw": str(raw), "patch_size": 16, "patches_per_image": 64,
                      "slurm": {"time": 5, "cpus_per_task": 1, "mem_gb": 1, **(store or {})}},
            "slurm": {"time": 10, "mem_gb": 2, "signal_delay_s": 30, "aggregate_time": 5,
                      "additional": additional or {}}}
    path = root / f"{experiment}.yaml"
    path.write_text(yaml.safe_dump(grid))
    return path


def go(grid: Path, root: Path, *only: str, extra: tuple[str, ...] = ()) -> LaunchResult:
    small = [o for o in TINY if not o.startswith(("data.factors", "folds"))]
    return launch(grid, [*small, *extra], only=list(only), outputs=root / "outputs", jobs_dir=root / "jobs")


def scontrol(job_id: str) -> str:
    return subprocess.run(["scontrol", "show", "job", job_id], capture_output=True, text=True).stdout


def dependency(job_id: str) -> str:
    out = subprocess.run(["squeue", "-h", "-j", job_id, "-o", "%E"], capture_output=True, text=True).stdout
    return out.strip().splitlines()[0] if out.strip() else ""


def cancel_all(root: Path, experiment: str) -> None:
    manifest = json.loads((root / "jobs" / experiment / "manifest.json").read_text())
    ids = [str(x[k]) for x in manifest["launches"] for k in ("array_id", "aggregate_id") if x.get(k)]
    ids += [str(b["job_id"]) for b in manifest.get("store_builds", [])]
    subprocess.run(["scancel", *ids], capture_output=True)


# --------------------------------------------------------------------------- build, then train


@pytest.fixture(scope="module")
def built(cluster: None, synth_raw: Path, tmp_path_factory: pytest.TempPathFactory) -> Any:
    """One job (fold 1) behind a held build job: the dependency is looked at, then the build released."""
    root = tmp_path_factory.mktemp("storejob")
    grid = grid_file(root, synth_raw, "sj-run", store={"additional": HOLD})
    result = go(grid, root, "fold=1")
    yield {"root": root, "result": result}
    cancel_all(root, "sj-run")


def test_a_missing_store_is_built_by_a_job_the_array_waits_for(built: Any) -> None:
    result: LaunchResult = built["result"]
    build = result.store_build
    assert build is not None and not build.reused and result.submitted == ["default_fold1"]
    assert dependency(result.array_id) == f"afterok:{build.job_id}(unfulfilled)"
    assert "JobState=PENDING" in scontrol(build.job_id) and not (built["root"] / "store.zarr").exists()
    manifest = json.loads(result.manifest.read_text())
    assert [b["job_id"] for b in manifest["store_builds"]] == [build.job_id]
    status = monitor.collect("sj-run", built["root"] / "jobs", built["root"] / "outputs")
    assert status.store_builds == [(f"store build job {build.job_id} PENDING: {built['root'] / 'store.zarr'} from "
                                    f"{manifest['store_builds'][0]['raw']} (log: {build.stdout})", False)]
    subprocess.run(["scontrol", "release", build.job_id], check=True)
    ids = [build.job_id, result.job_ids["default_fold1"], result.aggregate_id]
    rows = wait_for("the build, the job and the aggregate", lambda: all_ended(ids), timeout=900)
    assert {i: rows[i].state for i in ids} == {i: "COMPLETED" for i in ids}, Path(build.stderr).read_text()[-2000:]
    scores = json.loads((built["root"] / "outputs" / "sj-run" / "default_fold1" / "scores.json").read_text())
    assert scores["job"] == "default_fold1"
    attrs = json.loads((built["root"] / "store.zarr" / "zarr.json").read_text())["attributes"]
    assert attrs["factors"] == [2, 4, 8] and attrs["patch_size"] == 16
    times = {i: (s, e) for i, s, e in (line.split("|") for line in subprocess.run(
        ["sacct", "-X", "-n", "-P", "-j", f"{build.job_id},{result.array_id}", "-o", "JobID,Start,End"],
        capture_output=True, text=True).stdout.splitlines() if line)}
    assert times[result.job_ids["default_fold1"]][0] >= times[build.job_id][1], times  # afterok: after the build
    status = monitor.collect("sj-run", built["root"] / "jobs", built["root"] / "outputs")
    assert status.store_builds == [(f"store build job {build.job_id} COMPLETED: {built['root'] / 'store.zarr'}", False)]


# --------------------------------------------------------------------------- one build for every launch


def test_launches_while_the_build_is_queued_share_it(cluster: None, synth_raw: Path, tmp_path: Path) -> None:
    """Two launch processes started together (folds 1 and 2), then a third launch (fold 3): one build job,
    every array waiting for it."""
    grid = grid_file(tmp_path, synth_raw, "sj-share", store={"additional": HOLD}, additional=HOLD)
    cmd = [sys.executable, "-m", "camvis.cli.launch", str(grid), *[o for o in TINY if o.startswith(("model", "train"))],
           "--outputs", str(tmp_path / "outputs"), "--jobs-dir", str(tmp_path / "jobs")]
    try:
        procs = [subprocess.Popen([*cmd, "--only", f"fold={k}"], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                  text=True) for k in (1, 2)]
        outs = [p.communicate(timeout=300)[0] for p in procs]
        assert [p.returncode for p in procs] == [0, 0], outs
        third = go(grid, tmp_path, "fold=3")
        manifest = json.loads((tmp_path / "jobs" / "sj-share" / "manifest.json").read_text())
        assert len(manifest["store_builds"]) == 1, manifest["store_builds"]
        build = manifest["store_builds"][0]["job_id"]
        assert sum(f"submitted job {build}" in out for out in outs) == 1
        assert sum(f"wait for job {build} of an earlier launch" in out for out in outs) == 1
        assert third.store_build.reused and third.store_build.job_id == build
        arrays = [x["array_id"] for x in manifest["launches"]]
        assert len(arrays) == 3 and all(dependency(a) == f"afterok:{build}(unfulfilled)" for a in arrays), arrays
        assert not (tmp_path / "store.zarr").exists()
        lines = monitor.cancel_experiment("sj-share", None, tmp_path / "jobs", tmp_path / "outputs")
        assert f"cancelled store build job {build}" in lines and len(lines) == 5, lines  # 3 arrays, the last aggregate
    finally:
        cancel_all(tmp_path, "sj-share")


# --------------------------------------------------------------------------- failures


def test_a_broken_raw_dir_submits_nothing(cluster: None, raw_copy: Path, tmp_path: Path) -> None:
    from camvis.errors import SubmissionError

    shutil.rmtree(raw_copy / "depth_maps")
    with pytest.raises(SubmissionError, match="depth_maps: folder missing"):
        go(grid_file(tmp_path, raw_copy, "sj-broken"), tmp_path)
    out = subprocess.run(["squeue", "-h", "-n", "camvis-sj-broken,camvis-sj-broken-store,camvis-sj-broken-aggregate"],
                         capture_output=True, text=True).stdout
    assert out.strip() == "" and not (tmp_path / "jobs").exists()


def test_a_failed_build_is_reported_then_released_by_the_next_launch(cluster: None, raw_copy: Path,
                                                                     tmp_path: Path) -> None:
    """A raw dir whose layout is fine but whose image is not: the build job fails, the array waits for
    ever (DependencyNeverSatisfied); camvis-status says so, and a relaunch cancels it and builds again."""
    image = sorted(p for p in (raw_copy / "images").glob("*.png") if "_000" not in p.name)[0]
    good = image.read_bytes()
    image.write_bytes(b"not a png")
    grid = grid_file(tmp_path, raw_copy, "sj-fail")
    try:
        first = go(grid, tmp_path, "fold=1")
        build = first.store_build.job_id
        wait_for("the build to fail", lambda: states([build]).get(build) and states([build])[build].state == "FAILED")
        wait_for("DependencyNeverSatisfied", lambda: "failed" in dependency(first.array_id), timeout=120)
        status = monitor.collect("sj-fail", tmp_path / "jobs", tmp_path / "outputs")
        (line, failed), = status.store_builds
        assert failed and line.startswith(f"store build failed: see {first.store_build.stderr} (job {build} FAILED")
        assert status.stuck == {first.job_ids["default_fold1"]} and not status.active
        assert "not a png" in Path(first.store_build.stderr).read_text() or image.name in \
            Path(first.store_build.stderr).read_text()
        image.write_bytes(good)
        again = go(grid, tmp_path, "fold=1", extra=("slurm.additional.hold=true",))  # no training needed
        assert again.released == [first.job_ids["default_fold1"]] and again.submitted == ["default_fold1"]
        assert again.store_build.job_id != build and not again.store_build.reused
        assert dependency(again.array_id) in (f"afterok:{again.store_build.job_id}(unfulfilled)", "(null)")
        cancelled = wait_for("the stuck task cancelled", lambda: (r := states([first.array_id]).get(
            first.job_ids["default_fold1"])) and r.state == "CANCELLED" and r)
        assert cancelled.state == "CANCELLED"
    finally:
        cancel_all(tmp_path, "sj-fail")


# --------------------------------------------------------------------------- camvis-data build --slurm


def _files(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def _root_attrs(data: bytes) -> dict:
    meta = json.loads(data)
    meta["attributes"]["provenance"].pop("created")  # the build time, and the digest over it
    meta["attributes"].pop("digest")
    return meta


def test_camvis_data_build_slurm_writes_the_bytes_of_a_local_build(cluster: None, synth_raw: Path,
                                                                  synth_store: Any, tmp_path: Path) -> None:
    """synth_store was built here, serially; the job builds the same parameters with 2 workers."""
    attrs = json.loads((synth_store.path / "zarr.json").read_text())["attributes"]["build"]
    store = tmp_path / "slurm.zarr"
    cmd = [sys.executable, "-m", "camvis.cli.data", "build", str(synth_raw), str(store), "--slurm", "--wait",
           "--factors", *map(str, attrs["factors"]), "--patch-size", str(attrs["patch_size"]),
           "--patches-per-image", str(attrs["patches_per_image"]), "--seed", str(attrs["seed"]),
           "--workers", "2", "--mem", "1", "--time", "5", "--jobs-dir", str(tmp_path / "jobs")]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    job_id = proc.stdout.split("submitted store build job ", 1)[-1].split()[0]
    try:
        assert proc.returncode == 0, proc.stdout + proc.stderr
        assert f"log: {tmp_path / 'jobs' / 'store-builds' / job_id}" in proc.stdout
        assert "#SBATCH --cpus-per-task=2" in next((tmp_path / "jobs" / "store-builds").rglob("*.sh")).read_text() \
            or "NumCPUs=2" in scontrol(job_id)
        assert "with 2 workers" in next((tmp_path / "jobs" / "store-builds" / job_id).glob("*_log.out")).read_text()
        local, remote = _files(synth_store.path), _files(store)
        assert sorted(local) == sorted(remote) and any("/c/" in name for name in local)
        for name in local:
            if name == "zarr.json":
                assert _root_attrs(local[name]) == _root_attrs(remote[name])
            else:
                assert local[name] == remote[name], name
    finally:
        subprocess.run(["scancel", job_id], capture_output=True)


def _job_pids(job_id: str) -> list[int]:
    """The processes of SLURM job `job_id` on this machine (every node of the local cluster runs here),
    found by SLURM_JOB_ID in their environment: `scontrol listpids` only asks the local slurmd."""
    pids = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and entry.name != str(os.getpid()):
            with contextlib.suppress(OSError):
                if f"SLURM_JOB_ID={job_id}".encode() in (entry / "environ").read_bytes().split(b"\0"):
                    pids.append(int(entry.name))
    assert pids, f"no process of job {job_id} found"
    return pids


def test_a_build_job_killed_midway_leaves_no_store(cluster: None, tmp_path: Path) -> None:
    """scancel while the job writes its scratch directory: nothing under the store's name."""
    import time

    from camvis.data.synth import synthesize

    raw = synthesize(tmp_path / "raw", views=2, images_per_view=3, size=(768, 1152), progress=False)
    store = tmp_path / "big.zarr"
    proc = subprocess.run([sys.executable, "-m", "camvis.cli.data", "build", str(raw), str(store), "--slurm",
                           "--factors", "2", "4", "8", "--patch-size", "32", "--workers", "1", "--mem", "2",
                           "--time", "5", "--jobs-dir", str(tmp_path / "jobs")], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    job_id = proc.stdout.split("submitted store build job ", 1)[1].split()[0]
    try:
        end = time.monotonic() + 300
        while not list(tmp_path.glob(".big.zarr.tmp-*")) and time.monotonic() < end:
            assert not store.exists(), "the build ended before it could be killed: make the raw dir bigger"
            time.sleep(0.2)
        assert list(tmp_path.glob(".big.zarr.tmp-*")), "the build job never started writing"
        # SIGKILL to the job's processes themselves (as the OOM killer or a node crash would): scancel
        # sends SIGTERM, which submitit bypasses, so the build would finish within KillWait.
        for pid in _job_pids(job_id):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        wait_for("the build job to end", lambda: all_ended([job_id]), timeout=120)
        assert not store.exists() and states([job_id])[job_id].state != "COMPLETED"
    finally:
        subprocess.run(["scancel", job_id], capture_output=True)
