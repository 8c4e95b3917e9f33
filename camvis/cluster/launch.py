"""`camvis-launch`: expand a grid, skip finished jobs, submit the rest, record what was done.

Modes:
- slurm (default): ONE job array through submitit (sbatch --array=0-N%K, K = the grid's
  array_parallelism), or several when the jobs outnumber the cluster's MaxArraySize (read once per
  launch from `scontrol show config`; K divided over them: camvis.cluster.sbatch.throttles), and ONE
  dependent CPU job that aggregates the experiment once every task of every array has ended
  (afterany:a:b); then it returns, it never waits.
- local: the same jobs through submitit's LocalExecutor on this machine, at most K at a time,
  then the aggregate in this process.
- debug: the first job to run, in this process (submitit's debug executor: pdb on errors).
- dry run: the job table and the exact sbatch scripts, nothing submitted or written.

Before anything is submitted, camvis.cluster.preflight checks the stores and folders. Then one launch
of an experiment at a time (camvis.locks, jobs/<experiment>/.launch.lock): what is still queued,
the plan, the submission and the manifest update. Every launch merges itself into
jobs/<experiment>/manifest.json (camvis.bookkeeping.manifest; the format: docs/contracts.md); the sbatch
parameters and scripts come from camvis.cluster.sbatch. No torch here, and camvis.job.task is imported only
when jobs are really submitted: this runs on login nodes and must start fast.
"""

from __future__ import annotations

import dataclasses
import os
import shutil
import subprocess
import sys
import time
import uuid
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

from camvis import locks
from camvis.bounds import num_threads
from camvis.cluster import preflight, store_job
from camvis.errors import CamvisError, SubmissionError
from camvis.console import plural, shape_text
from camvis.cluster.grid import Grid, JobSpec, load_grid, select
from camvis.host import now_iso
from camvis.cluster.array_submit import submit_array
from camvis.bookkeeping.experiment_files import aggregate_ids
from camvis.bookkeeping.manifest import LaunchRecord, job_entry, read_manifest, record, record_cancelled
from camvis.cluster.plan import Decision, new_run_id, plan
from camvis.cluster.store_settings import with_dependency
from camvis.progress import progress_bar
from camvis.cluster.sbatch import (aggregate_parameters, drop_unexpanded_folder, dry_run_scripts, executor_parameters,
                                   job_folder, max_array_size, split_arrays, throttles)

MODES = ("slurm", "local", "debug")
TABLE_ROWS = 100  # the job table shows the first ones of a bigger grid (rich: 0.5 s per 500 rows)
LOCAL_POLL_S = 1.0


@dataclass
class Outcome:
    """What one mode's runner did (returned, merged into the LaunchResult by `launch`)."""

    job_ids: dict[str, str] = field(default_factory=dict)
    array_id: str | None = None                             # the first array (compatibility)
    array_ids: list[str] = field(default_factory=list)      # every array of this launch
    at_once: int = 0                                        # the arrays' throttles summed
    aggregate_id: str | None = None
    sbatch_calls: int = 0
    manifest: Path | None = None
    failed: dict[str, str] = field(default_factory=dict)    # local/debug: name -> error
    aggregated: bool = False
    cancelled: list[str] = field(default_factory=list)      # earlier pending aggregate jobs cancelled
    notes: list[str] = field(default_factory=list)          # what went wrong after the submission


@dataclass(kw_only=True)
class LaunchResult(Outcome):
    """What a launch did (what it decided, then its runner's Outcome); the CLI prints it, tests assert on it."""

    grid: Grid
    mode: str
    dry_run: bool
    decisions: list[Decision]
    scripts: dict[str, str] = field(default_factory=dict)   # dry run: "array" (or "array i of N")/"aggregate" -> sbatch text
    problems: list[str] = field(default_factory=list)       # dry run: what preflight found
    launch_id: str = field(default_factory=lambda: uuid.uuid4().hex[:12])  # its record in the manifest
    restart: str | None = None  # --restart: the id every submitted job carries (camvis.job.identity)
    store_build: Any = None     # camvis.cluster.store_job.BuildJob the arrays wait for (slurm), if any
    build_plan: Any = None      # camvis.cluster.store_job.BuildPlan: the missing store the grid builds
    built_here: str | None = None  # --local/--debug: the summary of the store built in this process
    released: list[str] = field(default_factory=list)  # tasks stuck behind a failed build, cancelled

    @property
    def submitted(self) -> list[str]:
        return [d.job.name for d in self.decisions if d.submit]

    @property
    def skipped(self) -> dict[str, str]:
        return {d.job.name: d.reason for d in self.decisions if not d.submit}

    def record(self) -> LaunchRecord:
        """This launch for the manifest, before anything is submitted."""
        return LaunchRecord(self.launch_id, self.mode, tuple(d.job for d in self.decisions), (), self.skipped)

    def take(self, outcome: Outcome) -> None:
        for f in dataclasses.fields(Outcome):
            setattr(self, f.name, getattr(outcome, f.name))


def _so_far(base: LaunchRecord, out: Outcome) -> LaunchRecord:
    """The manifest's record of a launch with what its runner has done until now."""
    return dataclasses.replace(base, submitted=tuple(out.job_ids), array_id=out.array_id,
                               array_ids=tuple(out.array_ids), aggregate_id=out.aggregate_id,
                               sbatch_calls=out.sbatch_calls)


def launch(grid_path: str | Path, overrides: Sequence[str] = (), *, mode: str = "slurm", dry_run: bool = False,
           only: Sequence[str] = (), force: bool = False, outputs: str | Path = "outputs",
           jobs_dir: str | Path = "jobs", profile: str | Path | None = None, console: Any = None,
           lock_timeout: float | None = None, restart: bool = False, smoke: bool = False) -> LaunchResult:
    """Expand `grid_path` (with `key=value` overrides), decide what to run and run it in `mode`.

    Preflight first (camvis.cluster.preflight: nothing is submitted while it finds a problem; a dry run
    reports them). `smoke`: the grid shrunk by camvis.cluster.smoke. Then, under jobs/<experiment>/.launch.lock (camvis.locks; waits `lock_timeout`
    s for another launch): what is queued, the plan, the submission and the manifest update."""
    if mode not in MODES:
        raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
    grid = load_grid(grid_path, overrides, profile)
    if smoke:  # one tiny job per group as <experiment>_smoke (camvis.cluster.smoke)
        from camvis.cluster.smoke import shrink

        grid = shrink(grid)
    num_threads()  # CAMVIS_NUM_THREADS refused at launch, not in every job
    jobs = select(grid.jobs, only)
    if not jobs:
        raise SubmissionError(f"no job of {grid.path} matches --only {' '.join(only)} (jobs: {', '.join(grid.names)})")
    build = store_job.plan_build(grid.store, {j.config.data.store for j in jobs})
    found = preflight.problems(jobs, outputs, jobs_dir, grid.experiment,
                               {build.build.store: build.expected} if build else None) + (build.problems if build else [])
    found += preflight.memory_problems(jobs, grid.slurm, mode, _patch_sizes(jobs, build))
    exp_dir = Path(jobs_dir) / grid.experiment
    if dry_run:
        result = LaunchResult(grid=grid, mode=mode, dry_run=dry_run,
                              decisions=_plan(jobs, outputs, force, restart, {}, mode), problems=found,
                              build_plan=build)
        if result.submitted and mode == "slurm":
            result.scripts = store_job.dry_run_build_script(build, exp_dir, grid.experiment)
            result.scripts.update(dry_run_scripts(grid, [d.job for d in result.decisions if d.submit], exp_dir,
                                                  max_array_size(), "<store-build-id>" if build else None))
        return result
    if found:
        raise SubmissionError(preflight.message(found))
    if mode == "slurm":
        check_slurm()
    with locks.launch_lock(exp_dir, grid.experiment, mode, lock_timeout, _waiting(console, grid.experiment)):
        released = store_job.release_stuck(exp_dir, build.build.store) if build and mode == "slurm" else []
        active = {n: v for n, v in active_jobs(exp_dir / "manifest.json").items() if v.split()[0] not in released}
        result = LaunchResult(grid=grid, mode=mode, dry_run=dry_run,
                              decisions=_plan(jobs, outputs, force, restart, active, mode),
                              restart=new_run_id() if restart else None, build_plan=build, released=released)
        todo = [d.job for d in result.decisions if d.submit]
        base = result.record()
        if build and todo:  # the store first: a job of the arrays (slurm), or here (local, debug)
            if mode == "slurm":
                result.store_build = store_job.ensure_build(build.build, exp_dir, grid.experiment, result.launch_id)
            else:
                result.built_here = store_job.build_here(build.build)
        if not todo:  # nothing to run: record the look, submit nothing
            result.manifest = record(exp_dir, grid, base, outputs, {})
        elif mode == "slurm":
            task = _task(result.restart, gpus=grid.slurm.gpus_per_node)
            build_id = result.store_build.job_id if result.store_build else None
            result.take(submit_slurm(grid, todo, exp_dir, outputs, jobs_dir, base, task, _arrays(active), build_id))
        elif mode == "local":
            result.take(run_local(grid, todo, exp_dir, outputs, jobs_dir, base, result.restart, console))
        else:
            task = _task(result.restart, gpus=grid.slurm.gpus_per_node)
            result.take(run_debug(grid, todo[0], exp_dir, outputs, base, task))
    return result


def _patch_sizes(jobs: list[JobSpec], build: Any) -> dict[str, object]:
    """Each store's patch size, from its metadata or the build that will make it (None: not known)."""
    from camvis.data.store_info import StoreInfo

    sizes: dict[str, object] = {}
    for store in {j.config.data.store for j in jobs}:
        info = build.expected if build and build.build.store == store else None
        try:
            info = info or StoreInfo.read(store)
        except CamvisError:  # preflight.problems says what is wrong with it
            info = None
        sizes[store] = info.patch_size if info is not None else None
    return sizes


def _task(restart: str | None, threads: int | None = None, gpus: int = 0) -> Any:
    from camvis.job.task import TrainEvalTask  # imports submitit: only when jobs really run

    return TrainEvalTask(restart, threads, gpus)


def _plan(jobs: list[JobSpec], outputs: str | Path, force: bool, restart: bool, active: dict[str, str],
          mode: str) -> list[Decision]:
    decisions = plan(jobs, outputs, force=force, restart=restart, active=active)
    return _first_to_run(decisions) if mode == "debug" else decisions  # debug: one job only


def _waiting(console: Any, experiment: str) -> Callable[[str], None]:
    def say(holder: str) -> None:
        line = f"waiting for another launch of {experiment} ({holder})"
        if console is not None:
            console.print(line, markup=False, highlight=False)
        else:
            print(line, file=sys.stderr, flush=True)
    return say


def _first_to_run(decisions: list[Decision]) -> list[Decision]:
    first = next((d for d in decisions if d.submit), None)
    return [first] if first else decisions[:1]


# --------------------------------------------------------------------------- SLURM


def check_slurm() -> None:
    """SubmissionError unless sbatch is on PATH and the controller answers."""
    hint = "run the grid on this machine with --local, or start the local cluster: bash slurm/cluster.sh start"
    if shutil.which("sbatch") is None:
        raise SubmissionError(f"SLURM is not available here (no sbatch on PATH); {hint}")
    try:
        proc = subprocess.run(["sinfo", "-h", "-o", "%P"], capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.SubprocessError) as e:
        raise SubmissionError(f"SLURM is not available here (sinfo: {e}); {hint}") from e
    if proc.returncode != 0:
        reason = (proc.stderr or proc.stdout).strip().splitlines()
        raise SubmissionError(f"SLURM is not available here (sinfo: {reason[-1] if reason else 'failed'}); {hint}")


def _executor(folder: Path, cluster: str, max_requeues: int) -> Any:
    import submitit  # ~60 ms; only when something is submitted

    # The cluster is named explicitly: AutoExecutor picks slurm whenever srun is on PATH.
    extra = {} if cluster == "debug" else {f"{cluster}_max_num_timeout": max_requeues}
    return submitit.AutoExecutor(folder=folder, cluster=cluster, **extra)


def submit_slurm(grid: Grid, todo: list[JobSpec], exp_dir: Path, outputs: str | Path, jobs_dir: str | Path,
                 base: LaunchRecord, task: Any, earlier_arrays: Sequence[str] = (),
                 after_build: str | None = None) -> Outcome:
    """One sbatch per array (one array unless the jobs outnumber MaxArraySize), one for the aggregate;
    the manifest is written after the arrays, then after the aggregate. The aggregate job also waits for `earlier_arrays` (still
    active), and supersedes the earlier launches' aggregate jobs that are still pending: those are
    cancelled. `after_build`: the store build job the arrays wait for (afterok)."""
    out = Outcome()
    _submit_arrays(grid, todo, exp_dir, outputs, base, task, out, after_build)
    earlier = aggregate_ids(read_manifest(exp_dir / "manifest.json"))
    agg = _executor(job_folder(exp_dir), "slurm", 0)
    agg.update_parameters(**aggregate_parameters(grid, [*out.array_ids, *(a for a in earlier_arrays
                                                                            if a not in out.array_ids)]))
    from submitit.core.utils import FailedJobError

    try:
        agg_job = agg.submit(run_aggregate, grid.experiment, str(outputs), str(jobs_dir))
    except FailedJobError as e:
        raise SubmissionError(f"the jobs were submitted as {_arrays_text(out.array_ids)}, but sbatch refused the "
                              f"aggregate job: {_last_line(e)}; run camvis-aggregate {grid.experiment} "
                              f"once they are done") from e
    out.sbatch_calls += 1
    out.aggregate_id = str(agg_job.job_id)
    record(exp_dir, grid, _so_far(base, out), outputs, {}, update_last=True)
    out.cancelled, out.notes = _cancel_pending_aggregates(earlier, exp_dir, out.aggregate_id)
    return out


def _submit_arrays(grid: Grid, todo: list[JobSpec], exp_dir: Path, outputs: str | Path, base: LaunchRecord,
                   task: Any, out: Outcome, after_build: str | None = None) -> None:
    """The jobs as arrays of at most MaxArraySize tasks, each throttled to its share of
    array_parallelism; the manifest is written once they are all submitted (each write of a
    5,000-job manifest costs a second), or before raising when sbatch refuses a later one."""
    from submitit.core.utils import FailedJobError

    chunks = split_arrays(len(todo), max_array_size())
    shares = throttles(grid.slurm.array_parallelism, [len(c) for c in chunks])
    executor = _executor(job_folder(exp_dir), "slurm", grid.slurm.max_requeues)
    entries: dict[str, dict[str, Any]] = {}
    for n, (chunk, share) in enumerate(zip(chunks, shares)):
        specs = [todo[i] for i in chunk]
        executor.update_parameters(**with_dependency(executor_parameters(grid, len(specs), share), after_build))
        submitted = now_iso()  # before sbatch: every file these jobs write is newer
        try:
            jobs = submit_array(executor, task, [(j.config, str(outputs)) for j in specs])
        except FailedJobError as e:
            which = f" {n + 1} of {len(chunks)}" if len(chunks) > 1 else ""
            if entries:  # the arrays already queued must be in the manifest (status, cancel)
                out.manifest = record(exp_dir, grid, _so_far(base, out), outputs, entries)
            done = f" ({_arrays_text(out.array_ids)} already submitted, in the manifest)" if entries else ""
            raise SubmissionError(f"sbatch refused the job array{which} of {grid.path}: {_last_line(e)}{done}") from e
        array_id = str(jobs[0].job_id).split("_")[0]
        out.array_ids.append(array_id)
        out.array_id, out.sbatch_calls, out.at_once = out.array_ids[0], out.sbatch_calls + 1, out.at_once + share
        for i, (spec, job) in enumerate(zip(specs, jobs)):
            entries[spec.name] = job_entry(spec, "slurm", job, array_id, i, submitted)
            out.job_ids[spec.name] = entries[spec.name]["job_id"]
    out.manifest = record(exp_dir, grid, _so_far(base, out), outputs, entries)


def _arrays_text(ids: Sequence[str]) -> str:
    return f"array {ids[0]}" if len(ids) == 1 else f"arrays {', '.join(ids)}"


def _arrays(active: dict[str, str]) -> list[str]:
    """The arrays (or plain jobs) of earlier launches with a task still queued or running."""
    return sorted({value.split()[0].split("_")[0] for value in active.values()}, key=int)


def _cancel_pending_aggregates(earlier: list[str], exp_dir: Path, replacement: str) -> tuple[list[str], list[str]]:
    """An earlier launch's aggregate job still pending would summarize the experiment twice (the
    first time on partial results): the new one, which also waits for its arrays, replaces it.
    Returns (the ids cancelled, notes on what could not be)."""
    from camvis.bookkeeping import slurm_query

    rows = slurm_query.query(earlier).rows if earlier else {}
    pending = [i for i in earlier if i in rows and rows[i].state == "PENDING"]
    if not pending:
        return [], []
    done = slurm_query.scancel(pending)
    if done.returncode != 0:
        return [], [f"could not cancel the earlier pending aggregate job(s) {' '.join(pending)}: "
                    f"{(done.stderr or done.stdout).strip()}"]
    record_cancelled(exp_dir, pending, "camvis-launch", f"superseded by aggregate job {replacement}")
    return pending, []


def _last_line(error: BaseException) -> str:
    lines = [line for line in str(error).strip().splitlines() if line.strip()]
    return lines[-1] if lines else type(error).__name__


def run_aggregate(experiment: str, outputs: str = "outputs", jobs: str = "jobs") -> Any:
    """What the dependent aggregate job runs (camvis.results.aggregate is imported only there)."""
    from camvis.results.aggregate import aggregate

    return aggregate(experiment, outputs=outputs, jobs=jobs)


def active_jobs(manifest_path: Path) -> dict[str, str]:
    """Jobs of an earlier SLURM launch that SLURM still queues or runs (slurm_query.is_active):
    name -> "123_4 RUNNING". One batched sacct/squeue call; an unreachable SLURM counts as nothing active."""
    manifest = read_manifest(manifest_path)
    ids = {name: e.get("job_id") for name, e in manifest.get("jobs", {}).items()
           if e.get("mode") == "slurm" and e.get("job_id")}
    if not ids:
        return {}
    from camvis.bookkeeping import slurm_query

    rows = slurm_query.query(list(ids.values())).rows
    return {name: f"{job_id} {rows[job_id].state}" for name, job_id in ids.items()
            if job_id in rows and slurm_query.is_active(rows[job_id].state)}


# --------------------------------------------------------------------------- local and debug


def local_threads(parallel: int) -> int:
    """Threads per job when `parallel` jobs share this machine's cores; CAMVIS_NUM_THREADS overrides."""
    return num_threads() or max(1, (os.cpu_count() or 1) // parallel)


def run_local(grid: Grid, todo: list[JobSpec], exp_dir: Path, outputs: str | Path, jobs_dir: str | Path,
              base: LaunchRecord, restart: str | None = None, console: Any = None) -> Outcome:
    """Every job through submitit's LocalExecutor, at most array_parallelism at once (waits)."""
    s = grid.slurm
    task = _task(restart, local_threads(s.array_parallelism), s.gpus_per_node)  # cores shared by the jobs at once
    out = Outcome()
    executor = _executor(job_folder(exp_dir), "local", s.max_requeues)
    executor.update_parameters(timeout_min=s.time, tasks_per_node=s.ntasks,
                               **({"gpus_per_node": s.gpus_per_node} if s.gpus_per_node else {}))
    queue = list(enumerate(todo))
    running: dict[str, Any] = {}
    with _progress(console, len(todo)) as advance:
        try:
            while queue or running:
                while queue and len(running) < s.array_parallelism:  # the throttle, as on SLURM
                    i, spec = queue.pop(0)
                    submitted = now_iso()
                    running[spec.name] = job = executor.submit(task, spec.config, str(outputs))
                    out.job_ids[spec.name] = str(job.job_id)
                    out.manifest = record(exp_dir, grid, _so_far(base, out), outputs,
                                          {spec.name: job_entry(spec, "local", job, None, i, submitted)},
                                          update_last=out.manifest is not None)
                for name in [n for n, job in running.items() if job.done()]:
                    error = running.pop(name).exception()
                    if error is not None:
                        out.failed[name] = _last_line(error)
                    advance(name, error is None)
                time.sleep(LOCAL_POLL_S if running else 0)
        except KeyboardInterrupt:
            for job in running.values():
                job.cancel(check=False)
            raise
        finally:
            drop_unexpanded_folder(exp_dir)
    if len(out.failed) < len(todo):
        out.aggregated, problem = _aggregate_here(grid, outputs, jobs_dir)
        out.failed.update({"aggregate": problem} if problem else {})
    return out


def _aggregate_here(grid: Grid, outputs: str | Path, jobs_dir: str | Path) -> tuple[bool, str | None]:
    """(aggregated, why not)."""
    try:
        run_aggregate(grid.experiment, str(outputs), str(jobs_dir))
        return True, None
    except Exception as e:  # the jobs' results stand; say why the summary is missing
        return False, f"{type(e).__name__}: {_last_line(e)}"


def run_debug(grid: Grid, spec: JobSpec, exp_dir: Path, outputs: str | Path, base: LaunchRecord,
              task: Any) -> Outcome:
    """One job in this process (submitit's debug executor drops into pdb on an exception)."""
    executor = _executor(job_folder(exp_dir), "debug", 0)
    submitted = now_iso()
    job = executor.submit(task, spec.config, str(outputs))
    out = Outcome(job_ids={spec.name: str(job.job_id)})
    out.manifest = record(exp_dir, grid, _so_far(base, out), outputs,
                          {spec.name: job_entry(spec, "debug", job, None, 0, submitted)})
    job.result()
    return out


@contextmanager
def _progress(console: Any, total: int) -> Iterator[Any]:
    """advance(name, ok) per finished job; the shared progress bar on a terminal, else a line each."""
    from camvis.console import default_console

    console = console or default_console(stderr=True)
    if not console.is_terminal:
        yield lambda name, ok: console.print(f"local: {name} {'done' if ok else 'FAILED'}")
        return
    with progress_bar("local jobs", total, enabled=True, transient=True, console=console) as advance:
        yield lambda name, ok: advance()


# --------------------------------------------------------------------------- report


def print_report(result: LaunchResult, console: Any) -> None:
    """The job table (submit/skip with reasons), what was submitted, and the next commands."""
    from rich.table import Table

    exp = result.grid.experiment
    title = f"{exp}: {len(result.submitted)} to run, {len(result.skipped)} skipped ({result.mode}" + \
        (", dry run)" if result.dry_run else ")") + f"; {shape_text(d.job for d in result.decisions)}"
    table = Table(title=title, title_justify="left")
    reps = result.grid.replicates > 1  # a replicate column only where the grid has replicates
    for column in ("job", "group", "fold", *(("rep",) if reps else ()), "view", "hash", "action", "reason", "job id"):
        table.add_column(column, no_wrap=column not in ("reason", "view"))
    for d in result.decisions[:TABLE_ROWS]:
        action = ("submit" if not result.dry_run else "would submit") if d.submit else "skip"
        job_id = result.job_ids.get(d.job.name, "")
        if d.job.axes:
            axes = " ".join(f"{k}={v}" for k, v in d.job.axes.items())
            reason = f"{d.reason} ({axes})"
        else:
            reason = d.reason
        style = "green" if d.submit else "dim"
        table.add_row(d.job.name, d.job.group, str(d.job.fold), *((str(d.job.replicate),) if reps else ()),
                      d.job.view or "-", d.job.hash,
                      f"[{style}]{action}[/]", reason, job_id)
    console.print(table)
    if len(result.decisions) > TABLE_ROWS:  # rich takes seconds over thousands of rows; the manifest has them all
        rest = result.decisions[TABLE_ROWS:]
        console.print(f"... and {plural(len(rest), 'more job')} ({sum(d.submit for d in rest)} to run): "
                      f"--only key=value shows a part of the grid")
    for name, text in result.scripts.items():
        console.rule(f"sbatch script: {name}" + (" (submitted after the arrays end: afterany)" if name == "aggregate" else
                                                 " (the arrays wait for it: afterok)" if name == "store build" else ""))
        console.print(text, markup=False, highlight=False, soft_wrap=True)
    _print_outcome(result, console)


def _print_outcome(result: LaunchResult, console: Any) -> None:
    exp = result.grid.experiment
    for line in store_job.launch_lines(result):
        console.print(line, markup=False, highlight=False)
    if result.dry_run:
        for problem in result.problems:
            console.print(f"[red]preflight:[/] {problem}", highlight=False)
        refuse = f"; a launch would refuse: {plural(len(result.problems), 'preflight problem')}" if result.problems else ""
        console.print("dry run: nothing submitted, nothing written" + refuse)
        return
    if not result.submitted:
        console.print("nothing to run: every selected job is finished or still queued "
                      "(--force re-evaluates finished ones, --restart retrains them)")
    elif result.mode == "slurm":
        console.print(f"submitted {plural(len(result.submitted), 'job')} as {_arrays_text(result.array_ids)} "
                      f"({result.at_once} at a time{' in all' if len(result.array_ids) > 1 else ''}), aggregate "
                      f"job {result.aggregate_id} after {'it' if len(result.array_ids) == 1 else 'them'}; "
                      f"{result.sbatch_calls} sbatch calls")
        if result.cancelled:
            console.print(f"cancelled the earlier pending aggregate {plural(len(result.cancelled), 'job')} {' '.join(result.cancelled)}: "
                          f"{result.aggregate_id} replaces them")
        for note in result.notes:
            console.print(f"[yellow]note:[/] {note}", highlight=False)
    else:
        ok = [n for n in result.submitted if n in result.job_ids and n not in result.failed]
        console.print(f"{result.mode}: {plural(len(ok), 'job')} finished" +
                      (f", {len(result.failed)} failed: " + "; ".join(f"{k}: {v}" for k, v in result.failed.items())
                       if result.failed else ""))
    if result.manifest:
        console.print(f"manifest: {result.manifest}")
    console.print(f"next: camvis-status {exp}" + (" --watch" if result.mode == "slurm" and result.submitted else "") +
                  f"   |   camvis-aggregate {exp}")
