"""End to end: `make demo`'s path (synthesize, check, build, launch locally, aggregate) in a fresh directory;
the README's demo numbers and docs/figures/ against the demo as shipped."""

import json
import os
from pathlib import Path

import pandas as pd
import pytest

from camvis.cli import demo


@pytest.mark.slow
def test_demo_path_end_to_end(demo_run, after_demo):
    assert demo_run.status == 0
    out = demo_run.out
    tmp_path = after_demo  # the folder the demo ran in (the cwd)
    assert "summary table:   outputs/demo/summary.md" in out
    assert (tmp_path / "data/raw/demo/visibility.csv").exists()
    assert (tmp_path / "data/processed/demo.zarr.sampling.png").stat().st_size > 0
    per_fold = pd.read_csv(tmp_path / "outputs/demo/scores_per_fold.csv")
    assert list(per_fold.columns[:7]) == ["model_name", "fold", "view", "loss", "acc", "f1", "group"]  # camvis2's
    assert list(per_fold.columns[7:]) == [f"group_{m}_{e}" for m in ("loss", "acc", "f1") for e in ("ci_low", "ci_high")]
    # camvis2's format: one row per bootstrap resample of each of the 2 x 4 jobs
    assert sorted(set(per_fold["group"])) == ["align", "cat"] and len(per_fold) == 8 * 10
    assert per_fold.groupby(["group", "fold"]).size().eq(10).all()
    for metric in ("loss", "acc", "f1"):
        assert (tmp_path / f"outputs/demo/{metric}.png").stat().st_size > 0
    manifest = json.loads((tmp_path / "jobs/demo/manifest.json").read_text())
    assert len(manifest["jobs"]) == 8
    # the demo fixes the threads (its numbers do not depend on the machine); every job draws its learning curve
    scores = json.loads((tmp_path / "outputs/demo/cat_fold1/scores.json").read_text())
    assert scores["threads"] == 1 and scores["replicate"] == 1
    assert (tmp_path / "outputs/demo/cat_fold1/learning_curve.png").stat().st_size > 0
    summary = pd.read_csv(tmp_path / "outputs/demo/visibility_summary.csv")
    assert {"median_signed_log10_error", "interval_coverage", "n_uncertain"} <= set(summary.columns)
    # the end: the best cat job's bundle predicts its held-out view's 6 images
    assert (tmp_path / "models/demo_cat/model.json").exists() and "median |log10 error|" in out
    predicted = next((tmp_path / "outputs/demo").glob("predicted_*.csv"))
    assert len(pd.read_csv(predicted)) == 6
    # a second run reuses data, store and finished jobs
    assert demo.main(list(demo_run.overrides)) == 0
    manifest = json.loads((tmp_path / "jobs/demo/manifest.json").read_text())
    assert manifest["launches"][-1]["submitted"] == []


ROOT = Path(__file__).resolve().parents[2]


def test_committed_doc_figures_are_drawn_from_the_current_inputs():
    """docs/figures/inputs.json records the hash of what the figures were drawn from (the demo's grid and
    data settings, the plotting and visibility code): a change there leaves a stale figure."""
    recorded = json.loads((demo.DOCS / "inputs.json").read_text())
    assert recorded["inputs_sha256"] == demo.doc_inputs_hash(), (
        "docs/figures/ is stale: its inputs changed since it was drawn; run `python -m camvis.cli.demo "
        "--doc-figures` and commit docs/figures/ and README.md")
    assert sorted(recorded["files"]) == sorted(demo.DOC_FIGURES)
    for name in recorded["files"]:
        assert (demo.DOCS / name).stat().st_size > 0, name


def test_readme_quotes_the_shipped_demo_summary():
    shipped = pd.read_csv(demo.DOCS / "demo_summary.csv")
    assert demo.quoted_table((ROOT / "README.md").read_text()) == demo.readme_table(shipped)


@pytest.mark.slow
@pytest.mark.skipif(not os.environ.get("CAMVIS_FULL_DEMO"),
                    reason="the unshrunk demo (minutes): set CAMVIS_FULL_DEMO=1")
def test_the_full_demo_reproduces_the_readme_table(tmp_path, monkeypatch):
    """`make demo` as shipped gives the numbers the README quotes, on any machine (train.threads: 1)."""
    monkeypatch.chdir(tmp_path)
    assert demo.main([]) == 0
    run = pd.read_csv(tmp_path / "outputs/demo/summary.csv")
    assert demo.readme_table(run) == demo.quoted_table((ROOT / "README.md").read_text())
