"""Store builds as SLURM jobs: `camvis-data build --slurm`, and a grid's `store:` section at launch.

A launch whose data.store is missing but whose grid says how to make it (camvis.cluster.store_settings)
submits the build as one job and the arrays with --dependency=afterok:<build>. What preflight can check
before the store exists (folds against the raw dir's views, factors and patch size against the build's
parameters) it checks now; the rest (the levels' arrays) is left to the jobs. The build job is recorded
in jobs/<experiment>/manifest.json (`store_builds`) under the launch lock, so a relaunch while it is
pending or running waits for the same job instead of submitting another; a relaunch after it failed
cancels the tasks stuck behind it (DependencyNeverSatisfied) and submits a new build.

The job writes the store as camvis-data build does: staged beside its final name and renamed in when
complete (camvis.atomic_folder), so a killed build leaves nothing under that name. No torch here, and
numpy/zarr only inside the functions that need them: the launcher runs on login nodes.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

from camvis.bookkeeping import slurm_query
from camvis.bookkeeping.store_builds import build_state, builds, latest_build, never_satisfied
from camvis.bookkeeping.manifest import log_path, read_manifest, record_cancelled, record_store_build
from camvis.cluster.store_settings import StoreBuild, build_parameters
from camvis.data.store_info import StoreInfo
from camvis.errors import RawDataError, StoreError, SubmissionError
from camvis.host import now_iso
from camvis.node.build_task import run_build



@dataclass(frozen=True)
class BuildPlan:
    """A launch's missing store that its grid can build: what it will hold, or why it cannot be built."""

    build: StoreBuild
    expected: StoreInfo | None  # None: the raw dir cannot be built from (see problems)
    problems: list[str]


@dataclass(frozen=True)
class BuildJob:
    job_id: str
    stdout: str | None
    stderr: str | None
    reused: bool = False  # an earlier launch's build, still pending or running
    job: Any = None       # submitit's Job when submitted by this process


def plan_build(build: StoreBuild | None, stores: Sequence[str]) -> BuildPlan | None:
    """The build a launch needs: `build` (the grid's store section) when its store is missing and one of
    `stores` (the selected jobs' data.store); the raw dir's layout is scanned now (no pixels read)."""
    if build is None or build.store not in stores or Path(build.store).exists():
        return None
    from camvis.cluster.preflight import writable_problem
    from camvis.data import raw  # numpy, PIL: only when a store is to be built

    problems = []
    folder = writable_problem(Path(build.store).absolute().parent)
    if folder:
        problems.append(f"data.store: {build.store} cannot be built there: {folder}")
    try:
        views = raw.scan(build.raw).views
    except (RawDataError, OSError) as e:
        return BuildPlan(build, None, problems + [f"store.raw: {e}\n  (data.store {build.store} does not exist "
                                                  f"and cannot be built from it: fix the raw dir, then launch again)"])
    expected = StoreInfo(build.store, views, tuple(build.params["factors"]), build.params["patch_size"])
    return BuildPlan(build, expected, problems)


# --------------------------------------------------------------------------- submitting


def _flag_names(problem: str) -> str:
    """A store-section problem in camvis-data build's words (store.slurm.mem_gb -> --mem-gb)."""
    for key, flag in (("store.slurm.cpus_per_task", "--cpus"), ("store.slurm.mem_gb", "--mem-gb"),
                      ("store.slurm.", "--"), ("slurm.", "profile slurm."), ("store.", "--")):
        if problem.startswith(key):
            return flag + problem[len(key):]
    return problem


def cli_build(raw_dir: str, store: str, *, factors: Sequence[int], patch_size: int, patches_per_image: int,
              seed: int, preprocessing: str, workers: int | None, time: int | None, cpus: int | None,
              mem_gb: float | None, site: Any = None) -> StoreBuild:
    """camvis-data build --slurm's flags as a StoreBuild: `site` (camvis.cluster.site_options.site_settings:
    the profile with the site flags over it) gives partition, account, qos and setup lines; time, CPUs and
    memory are the build's own. The raw dir's layout is checked now, so a broken one is told here, not
    in the job's log."""
    from camvis.cluster.slurm_settings import SlurmSettings
    from camvis.cluster.store_settings import parse_store_section
    from camvis.data import raw
    from camvis.errors import ConfigError

    errors: list[str] = []
    own = {"time": time, "cpus_per_task": cpus, "mem_gb": mem_gb}
    section = {"raw": raw_dir, "factors": list(factors), "patch_size": patch_size, "seed": seed,
               "patches_per_image": patches_per_image, "preprocessing": preprocessing, "workers": workers,
               "slurm": {k: v for k, v in own.items() if v is not None}}
    build = parse_store_section(section, store, site or SlurmSettings(), [], errors)
    if errors or build is None:
        raise ConfigError("camvis-data build --slurm: " + "; ".join(_flag_names(e) for e in errors))
    raw.scan(raw_dir)  # RawDataError listing every layout problem
    return build


def submit_build(build: StoreBuild, folder: Path, name: str) -> BuildJob:
    """sbatch the build (one job, its CPUs as workers); returns at once."""
    import submitit  # only when something is submitted
    from submitit.core.utils import FailedJobError

    executor = submitit.AutoExecutor(folder=folder, cluster="slurm", slurm_max_num_timeout=0)
    executor.update_parameters(**build_parameters(build, name))
    try:
        job = executor.submit(run_build, str(Path(build.raw).absolute()), str(Path(build.store).absolute()),
                              dict(build.params), build.workers)
    except FailedJobError as e:
        lines = [line for line in str(e).splitlines() if line.strip()]
        raise SubmissionError(f"sbatch refused the store build job of {build.store}: "
                              f"{lines[-1] if lines else e}; nothing else submitted") from e
    return BuildJob(str(job.job_id), str(job.paths.stdout), str(job.paths.stderr), False, job)


def ensure_build(build: StoreBuild, exp_dir: Path, experiment: str, launch_id: str) -> BuildJob:
    """The build job the arrays of this launch wait for: an earlier launch's still pending or running
    for the same store, else a new one, recorded in the manifest before anything else is submitted.
    Called under the launch lock: two launches never submit two builds."""
    entry = latest_build(read_manifest(exp_dir / "manifest.json"), build.store)
    if entry is not None:
        row = slurm_query.query([entry["job_id"]]).rows.get(entry["job_id"])
        if row is not None and slurm_query.is_active(row.state):
            return BuildJob(entry["job_id"], log_path(entry.get("stdout"), exp_dir),
                            log_path(entry.get("stderr"), exp_dir), reused=True)
    from camvis.cluster.sbatch import job_folder

    submitted = now_iso()
    job = submit_build(build, job_folder(exp_dir), f"camvis-{experiment}-store")
    record_store_build(exp_dir, experiment, {
        "job_id": job.job_id, "store": build.store, "raw": build.raw, "params": build.params,
        "workers": build.workers, "stdout": job.stdout, "stderr": job.stderr, "submitted": submitted,
        "launch": launch_id})
    return job


def release_stuck(exp_dir: Path, store: str) -> list[str]:
    """After the recorded build of `store` failed: scancel the tasks of earlier launches that wait on it
    for ever (DependencyNeverSatisfied), so that the relaunch submits them again behind a new build.
    Returns the ids cancelled."""
    manifest = read_manifest(exp_dir / "manifest.json")
    entry = latest_build(manifest, store)
    if entry is None or build_state(entry["job_id"]) not in slurm_query.FAILED_STATES:
        return []
    ids = [str(e.get("job_id")) for e in manifest.get("jobs", {}).values()
           if isinstance(e, dict) and e.get("mode") == "slurm" and e.get("job_id")]
    stuck = sorted(never_satisfied(ids))
    if stuck:
        slurm_query.scancel(stuck)
        record_cancelled(exp_dir, stuck, "camvis-launch", f"store build {entry['job_id']} failed")
    return stuck


def build_here(build: StoreBuild) -> str:
    """A --local or --debug launch builds the missing store in this process first."""
    return run_build(build.raw, build.store, dict(build.params), build.workers)


def wait(job: BuildJob) -> str:
    """Follow a build job this process submitted until it ends: its summary, or a StoreError naming its log."""
    from submitit.core.utils import FailedJobError, UncompletedJobError

    try:
        return str(job.job.result())
    except (FailedJobError, UncompletedJobError) as e:
        lines = [line for line in str(e).splitlines() if line.strip() and not line.startswith(" ")]
        raise StoreError(f"store build job {job.job_id} failed ({lines[-1] if lines else type(e).__name__}); "
                         f"see {job.stderr}") from None


# --------------------------------------------------------------------------- launch output


def dry_run_build_script(plan: BuildPlan | None, exp_dir: Path, experiment: str) -> dict[str, str]:
    """{"store build": the sbatch script submitit would write} when the launch would build the store."""
    if plan is None or plan.expected is None:
        return {}
    from camvis.cluster.sbatch import job_folder, render_sbatch

    params = build_parameters(plan.build, f"camvis-{experiment}-store")
    return {"store build": render_sbatch(params, job_folder(exp_dir), None)}


def launch_lines(result: Any) -> list[str]:
    """What camvis-launch says about the store build (camvis.cluster.launch.LaunchResult)."""
    plan: BuildPlan | None = result.build_plan
    if plan is None or plan.expected is None:
        return []
    b, views = plan.build, len(plan.expected.views)
    deferred = (f"preflight: store {b.store} not built yet; checked now: the raw dir's layout ({views} views), "
                f"folds, factors and patch size against the build's, the folders; deferred to the jobs: the "
                f"store's arrays")
    lines = []
    if result.dry_run:
        lines.append(f"data.store {b.store} is missing: a store build job from {b.raw} would be submitted first "
                     f"(or an earlier launch's still queued one reused), the arrays waiting for it (afterok)")
    elif result.built_here:
        lines.append(f"built {b.store} from {b.raw} in this process before the jobs:\n{result.built_here}")
    elif result.store_build is not None:
        job: BuildJob = result.store_build
        if job.reused:
            lines.append(f"store build: the arrays wait for job {job.job_id} of an earlier launch (still queued or "
                         f"running; log {job.stdout}): no second build")
        else:
            lines.append(f"store build: submitted job {job.job_id} (build {b.store} from {b.raw}; log "
                         f"{job.stdout}); the arrays wait for it (afterok)")
    if result.released:
        lines.append(f"cancelled {len(result.released)} task(s) stuck behind the failed store build "
                     f"({' '.join(result.released)}): submitted again behind the new one")
    return lines + [deferred]
