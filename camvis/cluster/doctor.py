"""`camvis-doctor`: is this site ready for a camvis grid? One line per check, with the fix.

Login side (`checks`): Python, torch and its CUDA build (asked in a subprocess with a timeout: this
process never imports torch, so it starts fast), the SLURM commands, the profile's partition, account,
QOS and GPU request (`sbatch --test-only`), the store (opened and its metadata and patch table checked,
no block read), the outputs and jobs folders (writable, free space, quota) and submitit's version.
The checks that wait on something run at once, each with its own timeout: the whole takes seconds.

Compute node (`on_node`): one short job with the site's resources, through submitit like every other
camvis job, runs camvis.node.report there and brings back what the node sees.
"""

from __future__ import annotations

import os
import json
import shutil
import subprocess
import sys
import tempfile
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from camvis.cluster.slurm_settings import SlurmSettings

MIN_PYTHON = (3, 11)
SUBMITIT_RANGE = ((1, 5, 4), (1, 6))  # pyproject's submitit>=1.5.4,<1.6 (sbatch.py uses its private API)
TORCH_TIMEOUT_S = 8.0
COMMAND_TIMEOUT_S = 5.0
LOW_SPACE_GB = 5.0
SLURM_COMMANDS = ("sbatch", "squeue", "sacct", "scancel", "sinfo", "scontrol")
TORCH_PROBE = ("import json, torch; print(json.dumps({'version': torch.__version__, 'cuda': torch.version.cuda, "
               "'available': torch.cuda.is_available()}))")


@dataclass(frozen=True)
class Check:
    name: str
    state: str   # ok | warn | FAIL | skip
    detail: str
    fix: str = ""

    def line(self, width: int = 14) -> str:
        fix = f"  -> fix: {self.fix}" if self.fix and self.state in ("warn", "FAIL") else ""
        return f"{self.state:<5} {self.name:<{width}} {self.detail}{fix}"


def _run(cmd: list[str], timeout: float = COMMAND_TIMEOUT_S) -> tuple[int, str]:
    """(exit status, stdout and stderr); 124 on a timeout, 127 when the command is missing."""
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    except FileNotFoundError:
        return 127, f"{cmd[0]}: not found"
    except subprocess.TimeoutExpired:
        return 124, f"{cmd[0]}: no answer in {timeout:g} s"
    return proc.returncode, (proc.stdout + proc.stderr).strip()


def check_python() -> Check:
    version = ".".join(map(str, sys.version_info[:3]))
    if sys.version_info[:2] >= MIN_PYTHON:
        return Check("python", "ok", f"{version} ({sys.executable})")
    return Check("python", "FAIL", f"{version}: camvis needs >= {'.'.join(map(str, MIN_PYTHON))}",
                 "load a newer Python (e.g. `module load python/3.11`) and make the venv again")


def check_torch(timeout: float = TORCH_TIMEOUT_S) -> Check:
    code, out = _run([sys.executable, "-c", TORCH_PROBE], timeout)
    if code == 124:  # a busy node or a slow shared file system, not a broken install
        return Check("torch", "warn", f"import torch did not end within {timeout:g} s: its CUDA build is unknown",
                     f"time {sys.executable} -c 'import torch' (a busy login node or a slow file system)")
    if code != 0:
        return Check("torch", "FAIL", f"import torch failed: {out.splitlines()[-1] if out else code}",
                     "pip install -r requirements.lock in camvis's venv")
    info = json.loads(out.splitlines()[-1])
    if not info["cuda"]:
        return Check("torch", "warn", f"{info['version']}, a CPU-only build: GPU jobs would train on the CPU",
                     "pip install torch --index-url https://download.pytorch.org/whl/cu124 (the CUDA build)")
    seen = "a GPU here" if info["available"] else "no GPU here (a login node: --on-node checks a compute node)"
    return Check("torch", "ok", f"{info['version']}, CUDA {info['cuda']} build; {seen}")


def check_slurm_commands() -> Check:
    missing = [c for c in SLURM_COMMANDS if shutil.which(c) is None]
    if missing:
        return Check("slurm", "FAIL", f"not on PATH: {', '.join(missing)}",
                     "run on the cluster's login node (or `module load slurm`); without SLURM use --local")
    code, out = _run(["sinfo", "-h", "-o", "%P %a %l %D"])
    if code != 0:
        return Check("slurm", "FAIL", f"sinfo: {out.splitlines()[-1] if out else code}",
                     "the SLURM controller does not answer: ask the site's admins")
    parts = ", ".join(line.split()[0] for line in out.splitlines() if line.strip())
    return Check("slurm", "ok", f"{', '.join(SLURM_COMMANDS)} on PATH; partitions: {parts or 'none'}")


def test_only_command(s: SlurmSettings) -> list[str]:
    """The sbatch --test-only line of one job with the settings' resources (nothing is queued)."""
    cmd = ["sbatch", "--test-only", f"--time={s.time}", f"--nodes={s.nodes}", f"--ntasks-per-node={s.ntasks}",
           f"--cpus-per-task={s.cpus_per_task}", "--job-name=camvis-doctor"]
    cmd += [f"--{key}={getattr(s, key)}" for key in ("partition", "account", "qos", "constraint") if getattr(s, key)]
    cmd += [f"--gpus-per-node={s.gpus_per_node}"] if s.gpus_per_node else []
    cmd += [f"--mem={int(s.mem_gb * 1024)}M"] if s.mem_gb else []
    return [*cmd, "--wrap=true"]


def check_resources(s: SlurmSettings, source: str) -> Check:
    what = ", ".join(f"{k} {getattr(s, k)}" for k in ("partition", "account", "qos", "gpus_per_node") if getattr(s, k))
    if shutil.which("sbatch") is None:
        return Check("resources", "skip", f"{what or 'the cluster defaults'}: no sbatch here")
    code, out = _run(test_only_command(s))
    if code == 0:
        return Check("resources", "ok", f"{what or 'the cluster defaults'} ({source}), {s.time} min: sbatch "
                                        f"--test-only accepts them")
    reason = next((line for line in out.splitlines() if "error" in line.lower()), out.splitlines()[-1] if out else "")
    return Check("resources", "FAIL", f"{what or 'the cluster defaults'} ({source}): {reason}",
                 "set partition/account/qos/gpus_per_node in the profile's slurm: section as `sinfo` and "
                 "`sacctmgr show assoc user=$USER` list them")


def check_store(store: str | None) -> Check:
    if not store:
        return Check("store", "skip", "none given (camvis-doctor GRID or --store STORE)")
    from camvis.data.store import open_store  # numpy + zarr: no torch
    from camvis.errors import CamvisError

    try:
        opened = open_store(store)
    except CamvisError as e:
        return Check("store", "FAIL", str(e), f"camvis-data build RAW_DIR {store} (or camvis-launch builds it)")
    return Check("store", "ok", f"{store}: schema, attributes and patch table ok ({len(opened.views)} views, "
                               f"{opened.n_patches:,} patches, patch size {opened.patch_size}; camvis-data "
                               f"check-store reads every block)")


def check_folder(name: str, folder: str) -> Check:
    """Writable (a file made and removed in it, or in the nearest folder above that exists), free space, quota."""
    from camvis.cluster.preflight import writable_problem

    path = Path(folder).absolute()
    existing = next(p for p in (path, *path.parents) if p.exists())
    problem = writable_problem(path)  # what a launch's preflight would say
    if problem is None:
        try:  # permission bits are not all: a read-only mount or an ACL refuses too
            with tempfile.NamedTemporaryFile(dir=existing, prefix=".camvis-doctor-"):
                pass
        except OSError as e:
            problem = f"cannot write in {existing} ({e.strerror})"
    if problem:
        return Check(name, "FAIL", f"{folder}: {problem}",
                     f"choose a writable folder: --{name.replace('_', '-')}, $CAMVIS_{name.upper()} or camvis.yaml")
    free = shutil.disk_usage(existing).free / 1e9
    state = "warn" if free < LOW_SPACE_GB else "ok"
    made = "" if existing == path else f" (made on first use, under {existing})"
    return Check(name, state, f"{folder}{made}: writable, {free:,.1f} GB free; {quota_text(existing)}",
                 f"free space or choose another folder (below {LOW_SPACE_GB:g} GB)")


def quota_text(folder: Path) -> str:
    """The user's quota where a quota command answers (Lustre's lfs, else quota), else why not."""
    if shutil.which("lfs"):
        code, out = _run(["lfs", "quota", "-h", "-u", os.environ.get("USER", ""), str(folder)])
        if code == 0 and out:
            return "quota: " + " ".join(out.splitlines()[-1].split()[1:5])
    if shutil.which("quota"):
        code, out = _run(["quota", "-s", "-w"])
        return "quota: " + (out.splitlines()[-1].strip() if out else "none set") if code == 0 else "quota: none set"
    return "quota: no quota command here"


def check_submitit() -> Check:
    from importlib import metadata

    try:
        version = metadata.version("submitit")
    except metadata.PackageNotFoundError:
        return Check("submitit", "FAIL", "not installed", "pip install -r requirements.lock")
    numbers = tuple(int(p) for p in version.split(".")[:3] if p.isdigit())
    low, high = SUBMITIT_RANGE
    if low <= numbers < high:
        return Check("submitit", "ok", f"{version} (tested range >=1.5.4,<1.6)")
    return Check("submitit", "FAIL", f"{version}: camvis uses its private API, tested with >=1.5.4,<1.6",
                 "pip install 'submitit>=1.5.4,<1.6'")


def checks(settings: SlurmSettings, source: str, store: str | None, outputs: str, jobs_dir: str) -> list[Check]:
    """Every login-side check, in a fixed order; those that wait on a command run at once."""
    work: list[Callable[[], Check]] = [check_python, check_torch, check_slurm_commands,
                                       lambda: check_resources(settings, source), lambda: check_store(store),
                                       lambda: check_folder("outputs", outputs), lambda: check_folder("jobs_dir", jobs_dir),
                                       check_submitit]
    with ThreadPoolExecutor(max_workers=len(work)) as pool:
        return list(pool.map(lambda f: f(), work))


# --------------------------------------------------------------------------- on a compute node


def on_node_parameters(s: SlurmSettings) -> dict[str, Any]:
    """submitit parameters of the one-minute node check: the site's resources, one task, a short limit."""
    from camvis.cluster.slurm_settings import checked_parameters, site_parameters

    params: dict[str, Any] = {"name": "camvis-doctor", "timeout_min": min(s.time, 5), "nodes": 1,
                              "tasks_per_node": 1, "cpus_per_task": s.cpus_per_task}
    if s.gpus_per_node:
        params["gpus_per_node"] = s.gpus_per_node
    return checked_parameters({**params, **site_parameters(s)})


def on_node(s: SlurmSettings, folder: Path, wait_s: float = 600.0,
            say: Callable[[str], None] = print) -> list[tuple[str, str]]:
    """Submit the node report with the site's resources, wait for it, return its (name, value) lines."""
    import submitit
    from submitit.core.utils import FailedJobError, UncompletedJobError

    from camvis.errors import SubmissionError
    from camvis.node.report import node_report

    executor = submitit.AutoExecutor(folder=folder / "%j", cluster="slurm", slurm_max_num_timeout=0)
    executor.update_parameters(**on_node_parameters(s))
    try:
        job = executor.submit(node_report)
    except FailedJobError as e:
        lines = [line for line in str(e).splitlines() if line.strip()]
        raise SubmissionError(f"sbatch refused the node check: {lines[-1] if lines else e}") from e
    say(f"submitted node check job {job.job_id} (log: {job.paths.stdout}); waiting for it ...")
    try:
        return job.result() if _wait(job, wait_s) else _gave_up(job, wait_s)
    except (FailedJobError, UncompletedJobError) as e:
        raise SubmissionError(f"node check job {job.job_id} failed: {str(e).strip().splitlines()[-1]} "
                              f"(log: {job.paths.stderr})") from e


def _wait(job: Any, wait_s: float) -> bool:
    import time

    end = time.monotonic() + wait_s
    while not job.done():
        if time.monotonic() > end:
            return False
        time.sleep(1.0)
    return True


def _gave_up(job: Any, wait_s: float) -> list[tuple[str, str]]:
    from camvis.errors import SubmissionError

    job.cancel(check=False)
    raise SubmissionError(f"node check job {job.job_id} did not end within {wait_s:g} s (cancelled): the queue "
                          f"is busy or the resources cannot be met; see squeue -j {job.job_id} next time")
