"""End to end: `make demo`'s path (synthesize, check, build, launch locally, aggregate) in a fresh directory."""

import json

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
    assert list(per_fold.columns) == ["model_name", "fold", "view", "loss", "acc", "f1", "group"]
    # camvis2's format: one row per bootstrap resample of each of the 2 x 4 jobs
    assert sorted(set(per_fold["group"])) == ["align", "cat"] and len(per_fold) == 8 * 10
    assert per_fold.groupby(["group", "fold"]).size().eq(10).all()
    for metric in ("loss", "acc", "f1"):
        assert (tmp_path / f"outputs/demo/{metric}.png").stat().st_size > 0
    manifest = json.loads((tmp_path / "jobs/demo/manifest.json").read_text())
    assert len(manifest["jobs"]) == 8
    # the end: the best cat job's bundle predicts its held-out view's 6 images
    assert (tmp_path / "models/demo_cat/model.json").exists() and "median |log10 error|" in out
    predicted = next((tmp_path / "outputs/demo").glob("predicted_*.csv"))
    assert len(pd.read_csv(predicted)) == 6
    # a second run reuses data, store and finished jobs
    assert demo.main(list(demo_run.overrides)) == 0
    manifest = json.loads((tmp_path / "jobs/demo/manifest.json").read_text())
    assert manifest["launches"][-1]["submitted"] == []
