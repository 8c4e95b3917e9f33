"""What summary.md says about how the grid ran: its description, and per group the epochs run, the
training time, the resources asked for and the GPU-hours (jobs with GPUs: wall time x GPUs) or CPU-hours
(wall time x CPUs) spent.

Read from what exists on the login node: the manifest (the grid's description and each launch's
resources, recorded by camvis.bookkeeping.manifest), each job's scores.json (epochs; `timing.train_s` when the
job recorded it) and SLURM's elapsed time of the job's task when there is no recorded timing. Anything
missing is shown as "-", never guessed. No torch here.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Sequence

from camvis.bookkeeping import experiment_files
from camvis.bookkeeping.status import ExperimentStatus, JobStatus, job_resources, requested
from camvis.bookkeeping.usage import duration_s


def description(manifest: dict[str, Any] | None) -> str:
    """The grid's `description:` as the manifest recorded it ("" if none)."""
    return str((manifest or {}).get("description") or "").strip()


def group_order(manifest: dict[str, Any] | None, jobs: Sequence[tuple[str, str]]) -> list[str]:
    """The groups of `jobs` ((name, group) pairs) in the grid's order: the manifest's `order` of job names,
    else its array task indices; groups it does not place follow, sorted."""
    entries = (manifest or {}).get("jobs") or {}
    order = (manifest or {}).get("order")
    if isinstance(order, list):
        rank = {str(name): i for i, name in enumerate(order)}
    else:
        rank = {n: e["task"] for n, e in entries.items() if isinstance(e, dict) and isinstance(e.get("task"), int)}
    placed = sorted((rank[n], g) for n, g in jobs if n in rank)
    groups = list(dict.fromkeys(g for _, g in placed))
    return groups + sorted({g for _, g in jobs} - set(groups))


def resources_text(r: dict[str, Any] | None) -> str:
    """`1 node x 2 ranks, 1 GPU/node, 8 CPUs/rank, 32 GB, 120 min` from a launch's recorded resources."""
    if not r:
        return "-"
    parts = [f"{r.get('nodes', 1)} node x {r.get('ranks_per_node', 1)} rank"]
    if r.get("gpus_per_node"):
        parts.append(f"{r['gpus_per_node']} GPU/node")
    parts.append(f"{r.get('cpus_per_task', 1)} CPU/rank")
    if r.get("mem_gb") is not None:
        parts.append(f"{r['mem_gb']:g} GB")
    if r.get("time_min") is not None:
        parts.append(f"{r['time_min']} min")
    mode = r.get("mode")
    return ", ".join(parts) + (f" ({mode})" if mode and mode != "slurm" else "")


def elapsed_seconds(text: str | None) -> float | None:
    """SLURM's elapsed time ([D-]HH:MM:SS, MM:SS) in seconds, None if unreadable."""
    return duration_s(text)


def job_facts(job: JobStatus, scores: dict[str, Any] | None) -> tuple[int | None, float | None, str]:
    """(epochs run, training seconds, where the time comes from) of one finished job."""
    scores = scores or {}
    epochs = experiment_files.as_int(scores.get("epochs"))
    train_s = (scores.get("timing") or {}).get("train_s") if isinstance(scores.get("timing"), dict) else None
    if isinstance(train_s, (int, float)) and math.isfinite(train_s):
        return epochs, float(train_s), "job"
    if job.slurm is not None and elapsed_seconds(job.slurm.elapsed) is not None:
        return epochs, elapsed_seconds(job.slurm.elapsed), "SLURM"
    return epochs, None, ""


def compute_hours(job: JobStatus, scores: dict[str, Any] | None,
                  resources: dict[str, Any] | None) -> tuple[str, float] | None:
    """("GPU" | "CPU", hours) one finished job spent: its wall time (SLURM's elapsed time of the task, else the
    job's own timing, load + train + evaluate) x the GPUs it held, or x its CPUs when it held none. GPUs and
    CPUs: sacct's allocation, else what the launch asked SLURM for, else (a local run) the job's own threads and,
    if it ran on CUDA, one GPU. None when the wall time or the CPUs are unknown."""
    scores = scores or {}
    usage = job.slurm.usage if job.slurm is not None else None
    wall = wall_seconds(job, scores)
    cpus, gpus, _ = requested(resources)
    if usage is not None:
        cpus, gpus = usage.cpus or cpus, usage.gpus or gpus
    cpus = cpus or experiment_files.as_int(scores.get("threads"))
    if not gpus and usage is None and (resources or {}).get("mode") != "slurm" and "peak_device_mem_gb" in scores:
        gpus = 1  # a local run on CUDA: one process, one GPU
    if wall is None or not (gpus or cpus):
        return None
    return ("GPU", wall * gpus / 3600) if gpus else ("CPU", wall * (cpus or 0) / 3600)


def wall_seconds(job: JobStatus, scores: dict[str, Any]) -> float | None:
    """The wall time a job held its allocation: SLURM's elapsed time of its last attempt, else its own
    load + train + evaluate time."""
    elapsed = elapsed_seconds(job.slurm.elapsed) if job.slurm is not None else None
    timing = scores.get("timing") if isinstance(scores.get("timing"), dict) else {}
    parts = [v for v in timing.values() if isinstance(v, (int, float)) and math.isfinite(v)]
    return elapsed if elapsed is not None else float(sum(parts)) if parts else None


def hours_text(spent: Sequence[tuple[str, float]]) -> str:
    """'1.25 GPU-h' (or CPU-h; both when a group has both kinds of job); '-' when none is known."""
    totals: dict[str, float] = {}
    for kind, hours in spent:
        totals[kind] = totals.get(kind, 0.0) + hours
    return " + ".join(f"{hours:.3g} {kind}-h" for kind, hours in sorted(totals.items(), reverse=True)) or "-"


def fmt_hours(seconds: float) -> str:
    return f"{seconds / 3600:.2f} h" if seconds >= 3600 else f"{seconds / 60:.1f} min"


def group_rows(status: ExperimentStatus, manifest: dict[str, Any] | None, outputs: str | Path,
               names: Sequence[str]) -> list[dict[str, str]]:
    """One row per group (in first-seen order) over the finished jobs `names`."""
    resources = job_resources(manifest)
    base = Path(outputs) / status.experiment
    groups: dict[str, list[tuple[int | None, float | None, str, str]]] = {}
    spent: dict[str, list[tuple[str, float]]] = {}
    for job in status.jobs:
        if job.info.name not in names:
            continue
        scores = job.scores or experiment_files.read_json(base / job.info.name / experiment_files.SCORES)  # read by collect
        epochs, seconds, source = job_facts(job, scores)
        groups.setdefault(job.info.variant, []).append((epochs, seconds, source, resources_text(
            resources.get(job.info.name))))
        hours = compute_hours(job, scores, resources.get(job.info.name))
        spent.setdefault(job.info.variant, []).extend([hours] if hours else [])
    rows = []
    for group, facts in groups.items():
        epochs = [e for e, _, _, _ in facts if e is not None]
        seconds = [s for _, s, _, _ in facts if s is not None]
        sources = sorted({src for _, s, src, _ in facts if s is not None})
        rows.append({
            "group": group, "jobs": str(len(facts)),
            "epochs run": (f"{min(epochs)}-{max(epochs)}" if min(epochs) != max(epochs) else str(epochs[0]))
            if epochs else "-",
            "time (total)": fmt_hours(sum(seconds)) if seconds else "-",
            "time per job": fmt_hours(sum(seconds) / len(seconds)) if seconds else "-",
            "time from": " + ".join(sources) if sources else "-",
            "resources per job": "; ".join(sorted({r for _, _, _, r in facts})),
            "GPU/CPU hours": hours_text(spent.get(group, [])),
        })  # fmt: skip
    return rows


def markdown(rows: list[dict[str, str]], about: str) -> list[str]:
    """The "How it ran" section of summary.md."""
    if not rows:
        return []
    header = list(rows[0])
    lines = ["## How it ran", "", "| " + " | ".join(header) + " |", "| " + " | ".join("---" for _ in header) + " |"]
    lines += ["| " + " | ".join(r[h] for h in header) + " |" for r in rows]
    return lines + ["", about, ""]


TIME_NOTE = ("Time: the job's own training time where it recorded one (job: scores.json timing.train_s, its last "
             "attempt's), else the SLURM task's elapsed time, queue waits excluded, evaluation included (SLURM). "
             "Hours: each job's wall time (SLURM's elapsed time, else its own load + train + evaluate time; the last "
             "attempt's) x the GPUs it held (GPU-h), or x its CPUs when it held no GPU (CPU-h), summed over the group.")
