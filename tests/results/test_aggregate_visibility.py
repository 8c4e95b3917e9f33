"""Metres in camvis-aggregate: the visibility columns against a hand computation."""

from __future__ import annotations

import json
import math
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest
from test_aggregate import N_BOOT, fabricate_job, run, write_manifest  # tests/ is on sys.path

from rich.console import Console

from camvis.results import aggregate as agg
from camvis.results import aggregate_visibility as av
from camvis.bookkeeping import slurm_query

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
# (group, fold) -> per-image |log10 error|, images named i0, i1, ...
ERRORS = {("a", 1): [0.1, 0.2, 0.5], ("a", 2): [0.05, 0.4],
          ("b", 1): [0.3, 0.1, 0.2], ("b", 2): [0.6, 0.2]}
FLAGS = {("a", 1): ["ok", "poor_fit", "beyond_max"], ("a", 2): ["ok", "uncertain"],
         ("b", 1): ["ok", "ok", "ok"], ("b", 2): ["below_min", "ok"]}


@pytest.fixture(autouse=True)
def _no_slurm(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(slurm_query, "tool_on_path", lambda name: False)


def _fabricate(root: Path) -> None:
    noise = np.random.default_rng(0).normal(0, 0.01, (N_BOOT, 3))
    entries = {}
    for (group, fold), errors in ERRORS.items():
        folder = fabricate_job(root, group, fold, {"loss": 0.3, "acc": 0.8, "f1": 0.8}, noise)
        truth = 1000.0 * (fold + np.arange(len(errors)))
        signed = np.asarray(errors) * (1 if group == "a" else -1)  # a overestimates, b underestimates
        predicted = truth * 10 ** signed
        rows = pd.DataFrame({"image": [f"i{k}" for k in range(len(errors))], "view": f"cam{fold}_1",
                             "predicted_visibility_m": predicted, "true_visibility_m": truth,
                             "abs_log10_error": errors, "flag": FLAGS[group, fold], "fit_quality": 0.9,
                             "n_patches": 500})
        if group == "a":  # intervals of a factor 2 either way: they cover the errors up to log10 2
            rows["visibility_low_m"], rows["visibility_high_m"] = predicted / 2, predicted * 2
        if (group, fold) == ("a", 2):  # an image without an estimate: counted, not scored
            rows.loc[len(rows)] = ["i9", "cam2_1", math.nan, 5000.0, math.nan, "inverted", math.nan, 500,
                                   math.nan, math.nan]
        rows.to_csv(folder / "visibility.csv", index=False)
        entries[f"{group}_fold{fold}"] = {"group": group, "fold": fold}
    write_manifest(root, entries)


def test_visibility_columns_match_a_hand_computation(tmp_path: Path) -> None:
    _fabricate(tmp_path)
    console = Console(record=True, width=160)
    result = agg.aggregate("exp", tmp_path / "outputs", tmp_path / "jobs", console=console, formats=("png", "pdf"))
    summary = pd.read_csv(tmp_path / "outputs" / "exp" / "visibility_summary.csv", dtype={"fold": str})
    row = summary.set_index(["group", "fold"])
    # a, fold 1: errors 0.1 0.2 0.5 -> median 0.2; within factor 2 (<= 0.30103): 2 of 3
    assert row.loc[("a", "1"), "median_abs_log10_error"] == pytest.approx(0.2)
    assert row.loc[("a", "1"), "within_factor2"] == pytest.approx(2 / 3)
    assert tuple(row.loc[("a", "1"), ["n_images", "n_flagged", "n_poor_fit"]]) == (3, 2, 1)
    # a, all folds pooled: 0.05 0.1 0.2 0.4 0.5 -> median 0.2, 3 of 5 within; i9 unscored, inverted and uncertain flagged
    assert row.loc[("a", "all"), "median_abs_log10_error"] == pytest.approx(0.2)
    assert row.loc[("a", "all"), "within_factor2"] == pytest.approx(3 / 5)
    assert tuple(row.loc[("a", "all"), ["n_images", "n_unscored", "n_flagged"]]) == (5, 1, 4)  # + uncertain
    # b, all: 0.1 0.2 0.2 0.3 0.6 -> median 0.2, 4 of 5 within (0.3 <= log10 2)
    assert row.loc[("b", "all"), "within_factor2"] == pytest.approx(4 / 5)
    # the bias: a overestimates (+0.2), b underestimates (-0.2); a's intervals (x/÷ 2) cover 3 of 5
    assert row.loc[("a", "all"), "median_signed_log10_error"] == pytest.approx(0.2)
    assert row.loc[("b", "all"), "median_signed_log10_error"] == pytest.approx(-0.2)
    assert row.loc[("b", "all"), "signed_ci_high"] < 0 < row.loc[("a", "all"), "signed_ci_low"]
    assert tuple(row.loc[("a", "all"), ["n_intervals", "interval_coverage"]]) == (5, pytest.approx(3 / 5))
    assert row.loc[("b", "all"), "n_intervals"] == 0 and math.isnan(row.loc[("b", "all"), "interval_coverage"])
    assert row.loc[("a", "all"), "n_uncertain"] == 1 and row.loc[("a", "2"), "n_flagged"] == 2
    for _, r in summary.iterrows():
        assert r["median_ci_low"] <= r["median_abs_log10_error"] <= r["median_ci_high"]
        assert r["within_factor2_ci_low"] <= r["within_factor2"] <= r["within_factor2_ci_high"]
    comparisons = pd.read_csv(tmp_path / "outputs" / "exp" / "visibility_comparisons.csv").set_index("statistic")
    # paired over the 5 images both scored (i9 only a has): a 0.1 0.2 0.5 0.05 0.4, b 0.3 0.1 0.2 0.6 0.2
    share = comparisons.loc["within_factor2"]
    assert share["n_images"] == 5 and share["diff"] == pytest.approx(3 / 5 - 4 / 5)
    assert share["ci_low"] <= share["diff"] <= share["ci_high"] and 0 <= share["p_value"] <= 1
    assert comparisons.loc["median_abs_log10_error", "diff"] == pytest.approx(0.2 - 0.2)
    assert (tmp_path / "outputs" / "exp" / "visibility.png").read_bytes()[:8] == PNG_MAGIC
    assert (tmp_path / "outputs" / "exp" / "visibility.pdf").read_bytes()[:5] == b"%PDF-"  # --format
    printed = console.export_text()
    assert "visibility a: median |log10 error| 0.200 [" in printed and "bias +0.200 [" in printed
    # calibrated: each fold's q from the other fold's 2-3 images, too few for a finite 90 % bound: unbounded
    assert "intervals cover 100% (patches only: 60%) of 5" in printed and "visibility b:" in printed
    assert "bias -0.200" in printed
    assert row.loc[("a", "1"), "calibration_log10_factor"] == math.inf and row.loc[("a", "1"), "n_calibration"] == 2
    calibration = json.loads((tmp_path / "outputs" / "exp" / "visibility_calibration.json").read_text())
    assert calibration["groups"]["a"]["1"] == {"log10_factor": None, "n_images": 2} and calibration["confidence"] == 0.9
    text = result.markdown.read_text()
    assert "## Visibility in metres" in text and "60.0% [" in text and "+0.200 [" in text and "| 100% of 5 | 60% |" in text


def test_jobs_without_visibility_csv_add_no_section(tmp_path: Path) -> None:
    noise = np.zeros((N_BOOT, 3))
    fabricate_job(tmp_path, "a", 1, {"loss": 0.3, "acc": 0.8, "f1": 0.8}, noise)
    write_manifest(tmp_path, {"a_fold1": {"group": "a", "fold": 1}})
    result = run(tmp_path)
    assert result.visibility is None and "Visibility in metres" not in result.markdown.read_text()
    assert not (tmp_path / "outputs" / "exp" / "visibility_summary.csv").exists()


def test_a_perfect_group_has_a_degenerate_interval() -> None:
    tables = {("g", 1): av.completed(pd.DataFrame({"image": ["x", "y"], "predicted_visibility_m": [1e3, 2e3],
                                                   "true_visibility_m": [1e3, 2e3], "abs_log10_error": [0.0, 0.0],
                                                   "flag": ["ok", "ok"]}))}
    s = av.summarize(tables, 0.95, n_boot=50)
    assert s.loc[0, "median_ci_low"] == s.loc[0, "median_ci_high"] == 0.0 and s.loc[0, "within_factor2"] == 1.0


@pytest.mark.parametrize("images", [1, 3])  # 1: a view with one image (paper-scale benchmark, 9 x 1) raised IndexError
def test_paired_comparison_resamples_images_not_columns(images: int) -> None:
    """a misses by 1.0 on every image, b by 0.0: every paired resample differs by exactly 1.0 (the resample
    once took image j of each draw as if it were column j, so a and b were mixed)."""
    def table(error: float) -> pd.DataFrame:
        return av.completed(pd.DataFrame({"image": [f"i{k}" for k in range(images)], "predicted_visibility_m": 10.0 ** error,
                                          "true_visibility_m": 1.0, "abs_log10_error": [error] * images,
                                          "flag": ["ok"] * images}))

    tables = {("a", 1): table(1.0), ("b", 1): table(0.0), ("a", 2): table(1.0), ("b", 2): table(0.0)}
    row = av.compare(tables, 0.95, n_boot=50).set_index("statistic").loc["median_abs_log10_error"]
    assert row["diff"] == row["ci_low"] == row["ci_high"] == 1.0 and row["p_value"] == 0.0
    assert row["n_images"] == 2 * images


def test_replicates_are_pooled_per_point_and_paired_replicate_by_replicate(tmp_path: Path) -> None:
    """Two replicates of each grid point: one group row, not one per replicate; the paired comparison
    matches replicate r of a with replicate r of b on the same image."""
    noise = np.zeros((N_BOOT, 3))
    entries = {}
    for group, errors in (("a", {1: 0.1, 2: 0.3}), ("b", {1: 0.0, 2: 0.0})):
        for r, error in errors.items():
            folder = fabricate_job(tmp_path, group, 1, {"loss": 0.3, "acc": 0.8, "f1": 0.8}, noise,
                                   name=f"{group}_fold1_rep{r}")
            pd.DataFrame({"image": ["i0", "i1"], "view": "cam1_1", "predicted_visibility_m": 1000 * 10 ** error,
                          "true_visibility_m": 1000.0, "abs_log10_error": error, "flag": "ok", "fit_quality": 0.9,
                          "n_patches": 500}).to_csv(folder / "visibility.csv", index=False)
            entries[f"{group}_fold1_rep{r}"] = {"group": group, "replicate": r}
    # the group label as experiment_files.variant_label makes it today ("a_rep2"), or without the replicate
    jobs = [SimpleNamespace(name=n, group=e["group"] + (f"_rep{e['replicate']}" if e["replicate"] == 2 else ""), fold=1)
            for n, e in entries.items()]
    tables = av.load(jobs, tmp_path / "outputs" / "exp")
    assert sorted(tables) == [("a", 1), ("b", 1)] and len(tables["a", 1]) == 4
    assert sorted(tables["a", 1]["replicate"]) == [1, 1, 2, 2]
    summary = av.summarize(tables, 0.95, n_boot=20).set_index(["group", "fold"])
    assert summary.loc[("a", "all"), "n_images"] == 4
    assert summary.loc[("a", "all"), "median_abs_log10_error"] == pytest.approx(0.2)
    row = av.compare(tables, 0.95, n_boot=20).set_index("statistic").loc["median_abs_log10_error"]
    assert row["n_images"] == 4 and row["diff"] == pytest.approx(0.2)  # 2 images x 2 replicates, not 8 pairs
