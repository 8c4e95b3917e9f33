"""The store build job's callable (submitted by camvis.cluster.store_job): camvis-data build on the node."""

from __future__ import annotations

from typing import Any

from camvis.host import usable_cpus


def run_build(raw_dir: str, store: str, params: dict[str, Any], workers: int | None) -> str:
    """What the build job runs: camvis-data build with the job's CPUs as workers; returns the summary."""
    from camvis.data import store as store_mod  # numpy and zarr: on the node only, not at the launcher
    from camvis.data import store_build

    workers = workers or usable_cpus()
    print(f"building {store} from {raw_dir} with {workers} workers: {params}", flush=True)
    built = store_build.build(raw_dir, store, factors=tuple(params["factors"]), patch_size=params["patch_size"],
                              patches_per_image=params["patches_per_image"], seed=params["seed"],
                              preprocessing=params["preprocessing"], workers=workers, progress=False)
    summary = store_mod.format_summary(built)
    print(summary, flush=True)
    return summary
