"""camvis-doctor: check this site before spending GPU-hours (one line per check, with the fix)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from camvis.cli import fail, new_parser
from camvis.cluster.site_options import site_parser
from camvis.errors import CamvisError

EPILOG = """examples:
  camvis-doctor                                     Python, torch, SLURM, the profile's resources, folders, submitit
  camvis-doctor configs/demo.yaml                   the grid's resources (over the profile) and its store
  camvis-doctor --store data/processed/demo.zarr --time 30   a store, and a 30-minute job of the profile's resources
  camvis-doctor --on-node                           also a one-minute job: what a compute node sees (GPUs, CUDA,
                                                    driver, NCCL, bf16, scratch, memory)

Exit status 0 when every check passes (warnings included), 1 when one fails, 2 on bad input.
"""


def build_parser() -> argparse.ArgumentParser:
    p = new_parser("camvis-doctor", __doc__, EPILOG, outputs="where jobs will write",
                   jobs_dir="where manifests and SLURM logs will go", parents=[site_parser()])
    p.add_argument("grid", nargs="?", help="a grid YAML: check its slurm resources and its data.store")
    p.add_argument("--store", help="a patch store to check (default: the grid's data.store)")
    p.add_argument("--on-node", action="store_true", help="submit a one-minute job and report what the node sees")
    p.add_argument("--wait", type=float, default=600.0, metavar="SECONDS",
                   help="with --on-node: how long to wait for the job (default 600)")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from camvis.cluster import doctor
    from camvis.cluster.site_options import launch_overrides, site_settings

    try:
        if args.grid:
            from camvis.cluster.grid import load_grid

            grid = load_grid(args.grid, launch_overrides(args), args.profile)
            settings, source, store = grid.slurm, f"grid {args.grid}", args.store or grid.jobs[0].config.data.store
        else:
            settings, store = site_settings(args), args.store
            source = f"profile {args.profile}" if args.profile else "no profile"
        print(f"site settings: outputs {args.outputs}, jobs {args.jobs_dir}, profile {args.profile or 'none'} "
              f"({', '.join(f'{k} from {v}' for k, v in args.site.sources.items())})")
        found = doctor.checks(settings, source, store, args.outputs, args.jobs_dir)
        for check in found:
            print(check.line(), flush=True)
        failed = [c.name for c in found if c.state == "FAIL"]
        if args.on_node:
            if "slurm" in failed or "resources" in failed:
                print("on-node: skipped (SLURM or the resources failed above)")
            else:
                folder = Path(args.jobs_dir) / "doctor"
                for name, value in doctor.on_node(settings, folder, args.wait):
                    print(f"node  {name:<26} {value}")
    except CamvisError as e:
        return fail(e)
    print(f"{len(found) - len(failed)} of {len(found)} checks passed" + (f"; failed: {', '.join(failed)}" if failed else ""))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
