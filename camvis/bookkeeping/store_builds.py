"""The store builds an experiment's manifest records (`store_builds`) and their SLURM state: what
camvis-status shows of them, and what a relaunch checks before building again (camvis.cluster.store_job)."""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any, Sequence

from camvis.bookkeeping import slurm_query
from camvis.bookkeeping.manifest import log_path

NEVER = "DependencyNeverSatisfied"  # squeue's reason for a job whose afterok dependency failed


def latest_build(manifest: dict[str, Any] | None, store: str | None = None) -> dict[str, Any] | None:
    """The manifest's last build entry (of `store`, when given)."""
    entries = [e for e in builds(manifest) if store is None or e.get("store") == store]
    return entries[-1] if entries else None


def builds(manifest: dict[str, Any] | None) -> list[dict[str, Any]]:
    found = (manifest or {}).get("store_builds")
    return [e for e in found if isinstance(e, dict) and e.get("job_id")] if isinstance(found, list) else []


def latest_per_store(manifest: dict[str, Any] | None, exp_dir: Path | None = None) -> list[dict[str, Any]]:
    """The last build entry of each store; with `exp_dir`, their log paths as found from it."""
    last: dict[str, dict[str, Any]] = {}
    for entry in builds(manifest):
        last[str(entry.get("store"))] = entry
    if exp_dir is None:
        return list(last.values())
    return [{**e, "stdout": log_path(e.get("stdout"), exp_dir), "stderr": log_path(e.get("stderr"), exp_dir)}
            for e in last.values()]


def build_state(job_id: str, rows: dict[str, slurm_query.SlurmRow] | None = None) -> str:
    rows = slurm_query.query([job_id]).rows if rows is None else rows
    return rows[job_id].state if job_id in rows else slurm_query.UNKNOWN


def never_satisfied(job_ids: Sequence[str]) -> set[str]:
    """The ids among `job_ids` (tasks "123_4" or jobs) that SLURM keeps pending because a dependency
    can never be met: squeue's Reason DependencyNeverSatisfied, or (a held job gives its hold as the
    reason) a dependency it marks "(failed)". One squeue call."""
    arrays = slurm_query.query_ids(job_ids)
    if not arrays or not slurm_query.tool_on_path("squeue"):
        return set()
    try:
        proc = subprocess.run(["squeue", "-h", "-r", "-j", ",".join(arrays), "-o", "%i|%r|%E"],
                              capture_output=True, text=True, timeout=slurm_query.QUERY_TIMEOUT_S)
    except (OSError, subprocess.SubprocessError):
        return set()
    wanted = set(job_ids)
    rows = (line.split("|", 2) for line in proc.stdout.splitlines() if line.count("|") >= 2)
    return {i for i, reason, dep in rows
            if (reason.strip() == NEVER or "(failed)" in dep) and (i in wanted or i.split("_")[0] in wanted)}


def status_line(entry: dict[str, Any], state: str) -> tuple[str, bool]:
    """(the line camvis-status shows above its table for a build job, whether it failed)."""
    job_id, store = entry["job_id"], entry.get("store")
    if state in slurm_query.FAILED_STATES:
        return (f"store build failed: see {entry.get('stderr')} (job {job_id} {state}; the jobs waiting on it "
                f"never start: fix the raw data, then camvis-launch again)", True)
    if state == "COMPLETED":
        return f"store build job {job_id} COMPLETED: {store}", False
    log = f" (log: {entry.get('stdout')})" if slurm_query.is_active(state) else ""
    return f"store build job {job_id} {state}: {store} from {entry.get('raw')}{log}", False
