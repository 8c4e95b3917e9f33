"""docs/first-run.md, followed literally on the local SLURM: every fenced `bash` block of the page runs in
order (bash -euo pipefail) in a fresh project folder that holds the demo's data (a small synthetic raw dir
and its store, as configs/demo.yaml expects them) and configs/demo.yaml with tiny jobs. A command changed
on the page runs changed here; one that camvis no longer takes fails the test.

Required in CI (CI=true) and under `make test` (CAMVIS_SLURM=1); skipped elsewhere.
"""

from __future__ import annotations

import csv
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

pytestmark = [pytest.mark.slurm, pytest.mark.slow]

ROOT = Path(__file__).resolve().parents[2]
PAGE = ROOT / "docs" / "first-run.md"
REQUIRED = os.environ.get("CI") == "true" or os.environ.get("CAMVIS_SLURM") == "1"
BLOCK_TIMEOUT_S = 1200
TINY = {"train": {"max_epochs": 1, "epoch_patches": 64}, "model": {"size_hidden": 4},
        "eval": {"bootstrap": 10, "figures": False}}


def bash_blocks(text: str) -> list[str]:
    """The page's ```bash blocks, in order."""
    return re.findall(r"^```bash\n(.*?)^```$", text, flags=re.S | re.M)


def test_the_page_has_the_steps_of_a_first_run() -> None:
    commands = "\n".join(bash_blocks(PAGE.read_text()))
    for step in ("slurm/profiles/my-site.yaml", "camvis.yaml", "camvis-doctor configs/", "camvis-doctor --on-node",
                 "--smoke", "camvis-status demo_smoke --watch", "| tail", "camvis-aggregate demo",
                 "camvis-predict ", "--slurm"):
        assert step in commands, step


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A project folder as a user's checkout after `make demo`'s data steps: configs/demo.yaml (tiny jobs),
    data/raw/demo and data/processed/demo.zarr (4 views, levels 1, 2, 4)."""
    if not REQUIRED:
        pytest.skip("SLURM integration tests: run `make test` or set CAMVIS_SLURM=1 with the local cluster up")
    from camvis.data import store_build
    from camvis.data.synth import synthesize

    root = tmp_path_factory.mktemp("first-run") / "project"
    raw = synthesize(root / "data" / "raw" / "demo", progress=False, views=4, images_per_view=2, size=(96, 144), seed=0)
    store_build.build(raw, root / "data" / "processed" / "demo.zarr", progress=False, figure=False,
                      factors=(1, 2, 4), patch_size=16, patches_per_image=16, seed=0)
    grid = yaml.safe_load((ROOT / "configs" / "demo.yaml").read_text())
    for section, values in TINY.items():
        grid["base"].setdefault(section, {}).update(values)
    (root / "configs").mkdir()
    (root / "configs" / "demo.yaml").write_text(yaml.safe_dump(grid, sort_keys=False))
    return root


def test_first_run_on_the_local_cluster(project: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CAMVIS_")}
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env['PATH']}"
    outs = []
    for block in bash_blocks(PAGE.read_text()):
        proc = subprocess.run(["bash", "-euo", "pipefail", "-c", block], cwd=project, env=env, text=True,
                              capture_output=True, timeout=BLOCK_TIMEOUT_S)
        assert proc.returncode == 0, f"{block}\nexit {proc.returncode}\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
        outs.append(proc.stdout)
    out = "\n".join(outs)
    # the doctor: the profile's partition accepted, the node's report without a GPU
    assert re.search(r"^ok\s+resources\s+partition debug", out, re.M), out
    assert re.search(r"^node\s+gpus\s+no GPU", out, re.M) and re.search(r"^node\s+bf16\s+no GPU", out, re.M)
    # the smoke run: one job per group under its own name, aggregated by its dependent job
    assert (project / "outputs" / "demo_smoke" / "summary.csv").exists()
    assert sorted(p.name for p in (project / "outputs" / "demo_smoke").iterdir() if p.is_dir() and
                  (p / "scores.json").exists()) == ["align_fold1", "cat_fold1"]
    # the grid: every job finished, its status log 160 columns wide, its summary written
    status = (project / "status.log").read_text()
    assert "COMPLETED 8" in status and max(len(line) for line in status.splitlines()) > 80
    assert (project / "outputs" / "demo" / "summary.md").exists()
    # the predictions of every image of the raw dir, by a SLURM array
    with open(project / "predictions.csv") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 8 and all(r["visibility_m"] for r in rows)
