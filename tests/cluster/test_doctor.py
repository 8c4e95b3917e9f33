"""camvis-doctor's login-side checks (camvis.cluster.doctor) with stand-in SLURM commands; the real cluster
and --on-node run in tests/integration/test_first_run.py."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from camvis.cli import doctor as doctor_cli
from camvis.cluster import doctor
from camvis.cluster.slurm_settings import SlurmSettings

SBATCH = ('echo "$@" >> "$SHIM/sbatch.txt"; case "$*" in *partition=nope*) '
          'echo "sbatch: error: invalid partition specified: nope" >&2; exit 1;; esac; '
          'echo "sbatch: Job 1 to start at now" >&2')
SHIMS = {"sbatch": SBATCH, "sinfo": 'echo "debug* up infinite 2"', **{c: "true" for c in ("squeue", "sacct",
                                                                                         "scancel", "scontrol")}}


def test_the_login_side_never_imports_torch() -> None:
    code = ("import sys; from camvis.cli import doctor; from camvis.cluster import doctor as d; "
            "d.checks(d.SlurmSettings(), 'x', None, 'o', 'j'); print('torch' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, cwd="/tmp")
    assert out.stdout.strip().splitlines()[-1] == "False", out.stderr


def test_resources_by_sbatch_test_only(install_shims, tmp_path: Path) -> None:
    shim = install_shims(SHIMS)
    s = SlurmSettings(partition="gpu", account="lab", qos="high", gpus_per_node=2, time=30, mem_gb=4)
    ok = doctor.check_resources(s, "profile p.yaml")
    assert ok.state == "ok" and "partition gpu, account lab, qos high, gpus_per_node 2" in ok.detail
    called = (shim / "sbatch.txt").read_text()
    for option in ("--test-only", "--partition=gpu", "--account=lab", "--qos=high", "--gpus-per-node=2",
                   "--time=30", "--mem=4096M", "--ntasks-per-node=2"):
        assert option in called, option
    bad = doctor.check_resources(SlurmSettings(partition="nope"), "profile p.yaml")
    assert bad.state == "FAIL" and "invalid partition specified: nope" in bad.detail and "sinfo" in bad.fix


def test_exit_status_non_zero_when_a_check_fails(install_shims, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                 capsys: pytest.CaptureFixture[str]) -> None:
    install_shims(SHIMS)
    monkeypatch.chdir(tmp_path)
    for name in ("CAMVIS_OUTPUTS", "CAMVIS_JOBS_DIR", "CAMVIS_PROFILE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setattr(doctor, "check_torch", lambda: doctor.Check("torch", "ok", "stub"))  # no 8 s import here
    assert doctor_cli.main(["--partition", "debug"]) == 0
    out = capsys.readouterr().out
    assert "8 of 8 checks passed" in out and "skip  store" in out
    assert doctor_cli.main(["--partition", "nope", "--store", str(tmp_path / "none.zarr")]) == 1
    out = capsys.readouterr().out
    assert "FAIL  resources" in out and "FAIL  store" in out and "-> fix: camvis-data build" in out
    assert "failed: resources, store" in out


def test_missing_slurm_and_unwritable_folders(install_shims, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", "/nonexistent")
    slurm = doctor.check_slurm_commands()
    assert slurm.state == "FAIL" and "sbatch" in slurm.detail and "--local" in slurm.fix
    fine = doctor.check_folder("jobs_dir", str(tmp_path / "new" / "jobs"))
    assert fine.state in ("ok", "warn") and "made on first use" in fine.detail and "GB free" in fine.detail
    locked = tmp_path / "ro"
    locked.mkdir()
    locked.chmod(0o500)
    try:
        if os.access(locked, os.W_OK):
            pytest.skip("running as a user who can write anywhere (root)")
        check = doctor.check_folder("outputs", str(locked / "outputs"))
        assert check.state == "FAIL" and "not writable" in check.detail
    finally:
        locked.chmod(0o700)


def test_on_node_parameters_are_the_sites() -> None:
    s = SlurmSettings(partition="gpu", gpus_per_node=1, time=240, setup=("module load cuda",), mem_gb=8)
    p = doctor.on_node_parameters(s)
    assert p["timeout_min"] == 5 and p["gpus_per_node"] == 1 and p["slurm_partition"] == "gpu"
    assert p["slurm_setup"] == ["module load cuda"] and p["mem_gb"] == 8.0
