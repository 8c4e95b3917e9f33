"""camvis-aggregate on job outputs fabricated exactly per the contract (scores.json, bootstrap.csv, manifest)."""

from __future__ import annotations

import json
import math
import os
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image
from rich.console import Console

from camvis.results import aggregate as agg
from camvis.bookkeeping import slurm_query
from camvis.results import stats
from camvis.cli import aggregate as cli
from camvis.errors import CamvisError, DiskFullError

EXP = "exp"
N_BOOT = 1000


@pytest.fixture(autouse=True)
def _no_slurm(monkeypatch: pytest.MonkeyPatch) -> None:
    # These tests are about files: never ask a real cluster about fabricated ids.
    monkeypatch.setattr(slurm_query, "tool_on_path", lambda name: False)


def write_json(path: Path, obj: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(obj))


def fabricate_job(
    root: Path, group: str, fold: int, points: dict[str, float], noise: np.ndarray, *,
    config_hash: str = "h", n_val: int | None = None, n_train: int | None = None, name: str | None = None,
) -> Path:  # fmt: skip
    """One finished job: bootstrap rows = point + noise (noise (N_BOOT, 3): shared by the groups of a
    fold, like resamples of the same held-out patches with the same seed), scores.json written last."""
    name = name or f"{group}_fold{fold}"
    folder = root / "outputs" / EXP / name
    folder.mkdir(parents=True, exist_ok=True)
    boot = np.array([points["loss"], points["acc"], points["f1"]]) + noise
    pd.DataFrame({"resample": np.arange(len(boot)), "loss": boot[:, 0], "acc": boot[:, 1], "f1": boot[:, 2]}).to_csv(
        folder / "bootstrap.csv", index=False
    )
    q = np.quantile(boot, [0.025, 0.975], axis=0)
    write_json(folder / "progress.json", {"state": "done", "epoch": 10, "max_epochs": 10, "metrics": {},
                                          "best": {"metric": "acc", "value": points["acc"], "epoch": 7},
                                          "samples_per_s": 100.0, "eta_s": None, "updated": "2026-01-01T00:00:00",
                                          "host": "n1", "restarts": 0})  # fmt: skip
    scores = {
        "experiment": EXP, "job": name, "group": group, "fold": fold, "view": f"cam{fold}_1", "config_hash": config_hash,
        "model_name": f"{EXP}_{name}", "metrics": dict(points),
        "ci": {m: [float(q[0, k]), float(q[1, k])] for k, m in enumerate(agg.METRICS)},
        "bootstrap": {"n": len(boot), "seed": 0, "file": "bootstrap.csv"},
        "visibility": {"median_abs_log10_error": None, "n_images": 3}, "epochs": 10, "finished": "2026-01-01T00:00:00",
    }  # fmt: skip
    if n_val is not None:
        scores |= {"n_val": n_val, "n_train": n_train}
    write_json(folder / "scores.json", scores)
    return folder


def write_manifest(root: Path, entries: dict[str, dict]) -> None:
    jobs = {
        name: {"group": e["group"], "fold": e["fold"], "view": None, "axes": {}, "hash": e.get("hash", "h"),
               "config": {}, "mode": "local", "job_id": None, "array_id": None, "task": i,
               "submitted": "2026-01-01T00:00:00", "stdout": None, "stderr": None}
        for i, (name, e) in enumerate(entries.items())
    }  # fmt: skip
    write_json(root / "jobs" / EXP / "manifest.json", {
        "experiment": EXP, "grid": "g.yaml", "outputs": str(root / "outputs"), "updated": "2026-01-01T00:00:00",
        "launches": [{"time": "2026-01-01T00:00:00", "mode": "local", "array_id": None, "aggregate_id": None,
                      "submitted": list(jobs), "skipped": {}, "code_version": "x", "sbatch_calls": 0}],
        "jobs": jobs,
    })  # fmt: skip


def fabricate_grid(root: Path, groups: dict[str, float], folds: int, sd: float = 0.01, seed: int = 0) -> dict:
    """groups: name -> accuracy level. Returns {(group, fold): points}."""
    rng = np.random.default_rng(seed)
    points, entries = {}, {}
    for fold in range(1, folds + 1):
        noise = rng.normal(0.0, sd, size=(N_BOOT, 3))
        for group, level in groups.items():
            acc = level + rng.normal(0.0, 0.02)
            p = {"loss": 0.6 - acc / 2, "acc": acc, "f1": acc - 0.03}
            fabricate_job(root, group, fold, p, noise)
            points[group, fold] = p
            entries[f"{group}_fold{fold}"] = {"group": group, "fold": fold}
    write_manifest(root, entries)
    return points


def run(root: Path, **kwargs) -> agg.AggregateResult:  # type: ignore[no-untyped-def]
    kwargs.setdefault("figures", False)  # drawing is slow on 2 cores: only where figures are tested
    return agg.aggregate(EXP, root / "outputs", root / "jobs", console=Console(record=True, width=160), **kwargs)


# --------------------------------------------------------------------------- statistics on fabricated jobs


def test_summary_matches_direct_pandas_computation(tmp_path: Path) -> None:
    fabricate_grid(tmp_path, {"cat": 0.80, "align": 0.75, "mlp": 0.85}, folds=4)
    result = run(tmp_path, seed=None)
    summary = pd.read_csv(result.summary_csv)
    out = tmp_path / "outputs" / EXP
    scores = pd.DataFrame([json.loads(p.read_text()) for p in out.glob("*/scores.json")])
    scores = pd.concat([scores, pd.json_normalize(scores.pop("metrics"))], axis=1)
    boots = pd.concat([pd.read_csv(p.parent / "bootstrap.csv").assign(group=p.parent.name.split("_fold")[0],
                                                                      fold=int(p.parent.name.split("_fold")[1]))
                       for p in out.glob("*/scores.json")])  # fmt: skip
    for metric in agg.METRICS:
        expected = scores.groupby("group")[metric].mean()
        got = summary[summary.metric == metric].set_index("group")["mean"]
        pd.testing.assert_series_equal(got.sort_index(), expected.sort_index(), check_names=False, rtol=1e-12)
        means = boots.pivot_table(index=["group", "resample"], columns="fold", values=metric).mean(axis=1)
        ci = means.groupby("group").quantile([0.025, 0.975]).unstack()
        row = summary[summary.metric == metric].set_index("group")
        np.testing.assert_allclose(row.loc[ci.index, "test_ci_low"], ci[0.025], rtol=1e-12)
        np.testing.assert_allclose(row.loc[ci.index, "test_ci_high"], ci[0.975], rtol=1e-12)
        # the headline: the corrected t interval over the 4 folds (ratio 1/3), widened to the test-only one
        values = scores.pivot(index="fold", columns="group", values=metric)
        half = stats.t_quantile(0.975, 3) * np.sqrt((1 / 4 + 1 / 3) * values.var(ddof=1))
        low = np.minimum(values.mean() - half, ci[0.025].reindex(values.columns))
        high = np.maximum(values.mean() + half, ci[0.975].reindex(values.columns))
        np.testing.assert_allclose(row.loc[values.columns, "ci_low"], low, rtol=1e-12)
        np.testing.assert_allclose(row.loc[values.columns, "ci_high"], high, rtol=1e-12)
        for fold in range(1, 5):  # per-fold point estimates
            np.testing.assert_allclose(row[f"fold_{fold}"].sort_index(),
                                       scores[scores.fold == fold].set_index("group")[metric].sort_index())  # fmt: skip
    assert set(summary.group) == {"cat", "align", "mlp"} and (summary.n_folds == 4).all()


def test_ci_contains_mean_and_narrows_with_smaller_bootstrap_variance(tmp_path: Path) -> None:
    widths = []
    for sd in (0.02, 0.005):
        root = tmp_path / f"sd{sd}"
        fabricate_grid(root, {"cat": 0.8, "align": 0.7}, folds=5, sd=sd)
        summary = run(root).summary
        assert ((summary.ci_low <= summary["mean"]) & (summary["mean"] <= summary.ci_high)).all()
        widths.append((summary.test_ci_high - summary.test_ci_low).to_numpy())
    assert (widths[1] < widths[0] / 2).all()


def test_paired_comparison_on_a_hand_worked_case(tmp_path: Path) -> None:
    # d = [0.02, 0.05, 0.04]: mean 0.0366667, var (ddof 1) 0.000233333; n_val/n_train = 100/400 = 0.25
    # t = 0.0366667 / sqrt((1/3 + 0.25) * 0.000233333) = 22/7; df = 2: p = 1 - t / sqrt(2 + t^2) = 0.08807
    a, b = [0.80, 0.85, 0.90], [0.78, 0.80, 0.86]
    rng = np.random.default_rng(1)
    entries = {}
    for fold in (1, 2, 3):
        noise = rng.normal(0.0, 0.03, size=(N_BOOT, 3))  # the same resamples for both groups of a fold
        for group, acc in (("a", a[fold - 1]), ("b", b[fold - 1])):
            fabricate_job(tmp_path, group, fold, {"loss": 0.5, "acc": acc, "f1": acc}, noise, n_val=100, n_train=400)
            entries[f"{group}_fold{fold}"] = {"group": group, "fold": fold}
    write_manifest(tmp_path, entries)
    for seed in (None, 0):
        comp = run(tmp_path, seed=seed).comparisons.set_index("metric")
        row = comp.loc["acc"]
        assert (row.group_a, row.group_b, row.n_folds) == ("a", "b", 3)
        assert row.mean_diff == pytest.approx(0.11 / 3)
        assert row.t == pytest.approx(22 / 7)
        assert row.dof == 2 and row.test_train_ratio == pytest.approx(0.25)
        assert row.p_value == pytest.approx(1 - (22 / 7) / math.sqrt(2 + (22 / 7) ** 2))
        assert row.p_value == pytest.approx(0.08807, abs=1e-5)
        # one pair: a family of one per metric, unadjusted (one family of all 3 metrics would give 3p)
        assert (comp.p_holm == comp.p_value).all()
        # paired resamples: every resample's mean difference is exactly mean(d); an unpaired one would not be
        assert row.test_ci_low == pytest.approx(0.11 / 3) and row.test_ci_high == pytest.approx(0.11 / 3)
        # the shown interval is the test's: mean(d) +- t_(2, .975) x 0.0366667 / (22/7); p > 0.05, so it holds 0
        half = 4.302652729911275 * (0.11 / 3) / (22 / 7)
        assert (row.ci_low, row.ci_high) == pytest.approx((0.11 / 3 - half, 0.11 / 3 + half))
        assert row.ci_low < 0 < row.ci_high
        assert comp.loc["loss"].mean_diff == pytest.approx(0.0) and comp.loc["loss"].p_value == pytest.approx(1.0)
    written = pd.read_csv(tmp_path / "outputs" / EXP / "comparisons.csv")
    assert written.loc[written.metric == "acc", "t"].item() == pytest.approx(22 / 7)


def test_nadeau_bengio_default_ratio_against_hand_computation(tmp_path: Path) -> None:
    points = fabricate_grid(tmp_path, {"cat": 0.8, "align": 0.78}, folds=5)  # no n_val/n_train: ratio 1/(5-1)
    row = run(tmp_path).comparisons.set_index("metric").loc["f1"]
    d = [points["align", k]["f1"] - points["cat", k]["f1"] for k in range(1, 6)]  # groups sorted: align - cat
    mean = sum(d) / 5
    var = sum((x - mean) ** 2 for x in d) / 4
    t = mean / math.sqrt((1 / 5 + 1 / 4) * var)
    # Student's t CDF for 4 dof in closed form: F(t) = 1/2 + 3/8 * u * (1 - u^2 / 12), u = t / sqrt(1 + t^2/4)
    u = abs(t) / math.sqrt(1 + t * t / 4)
    p = 2 * (1 - (0.5 + 3 / 8 * u * (1 - u * u / 12)))
    assert (row.group_a, row.group_b, row.test_train_ratio) == ("align", "cat", pytest.approx(0.25))
    assert row.t == pytest.approx(t) and row.dof == 4 and row.p_value == pytest.approx(p)


def test_holm_adjusts_over_the_pairs_of_each_metric(tmp_path: Path) -> None:
    fabricate_grid(tmp_path, {"a": 0.80, "b": 0.79, "c": 0.70, "d": 0.65}, folds=4)  # 6 pairs per metric
    result = run(tmp_path)
    written = pd.read_csv(result.comparisons_csv)
    columns = list(written.columns)
    assert columns[columns.index("p_value") + 1] == "p_holm"
    assert (written.p_holm >= written.p_value).all() and (written.p_holm <= 1).all()
    assert (written.p_holm > written.p_value).any()
    for metric, family in written.groupby("metric"):
        assert len(family) == 6
        smallest = family.p_value.idxmin()  # Holm's first step: m p_(1), m = the metric's 6 pairs
        assert family.p_holm[smallest] == pytest.approx(min(1.0, 6 * family.p_value[smallest]), rel=1e-12)
        np.testing.assert_allclose(family.p_holm, stats.holm_adjust(family.p_value.to_numpy()), rtol=1e-12)
    pd.testing.assert_series_equal(written.p_holm, result.comparisons.p_holm, rtol=1e-12)
    assert "| t | p | p (Holm) |" in result.markdown.read_text()


def test_single_fold_p_values_stay_nan_after_holm(tmp_path: Path) -> None:
    fabricate_grid(tmp_path, {"a": 0.8, "b": 0.7, "c": 0.6}, folds=1)
    comp = run(tmp_path).comparisons
    assert len(comp) == 9 and comp.p_value.isna().all() and comp.p_holm.isna().all()


# --------------------------------------------------------------------------- files written


def test_camvis2_csv_has_one_row_per_resample_per_job(tmp_path: Path) -> None:
    fabricate_grid(tmp_path, {"cat": 0.8, "align": 0.75}, folds=3)
    result = run(tmp_path)
    df = pd.read_csv(result.camvis2_csv)
    assert list(df.columns[:7]) == ["model_name", "fold", "view", "loss", "acc", "f1", "group"]  # camvis2's, first
    assert len(df) == 2 * 3 * N_BOOT
    assert df.groupby(["group", "fold"]).size().eq(N_BOOT).all()
    one = df[(df.group == "cat") & (df.fold == 2)]
    boot = pd.read_csv(tmp_path / "outputs" / EXP / "cat_fold2" / "bootstrap.csv")
    np.testing.assert_allclose(one.acc.to_numpy(), boot.acc.round(4).to_numpy(), atol=1e-9)
    assert set(one.model_name) == {f"{EXP}_cat_fold2"} and set(one.view) == {"cam2_1"}


def test_camvis2_csv_carries_the_groups_headline_interval_not_a_test_only_one(tmp_path: Path) -> None:
    fabricate_grid(tmp_path, {"cat": 0.8, "align": 0.75}, folds=3, sd=0.002)
    result = run(tmp_path)
    df = pd.read_csv(result.camvis2_csv)
    assert list(df.columns[7:]) == [f"group_{m}_{e}" for m in agg.METRICS for e in ("ci_low", "ci_high")]
    summary = result.summary.set_index(["group", "metric"])
    for group, rows in df.groupby("group"):
        for m in agg.METRICS:
            low, high = summary.loc[(group, m), "ci_low"], summary.loc[(group, m), "ci_high"]
            test_low = summary.loc[(group, m), "test_ci_low"]
            assert rows[f"group_{m}_ci_low"].nunique() == 1 and rows[f"group_{m}_ci_high"].nunique() == 1
            assert rows[f"group_{m}_ci_low"].iloc[0] == pytest.approx(low, abs=5e-5)
            assert rows[f"group_{m}_ci_high"].iloc[0] == pytest.approx(high, abs=5e-5)
            assert abs(low - test_low) > 1e-3  # folds spread apart: the headline is not the test-only interval


def test_missing_failed_and_stale_jobs_are_listed_not_fatal(tmp_path: Path) -> None:
    fabricate_grid(tmp_path, {"cat": 0.8, "align": 0.75}, folds=3)
    manifest_path = tmp_path / "jobs" / EXP / "manifest.json"
    manifest = json.loads(manifest_path.read_text())
    for name, fold in (("cat_fold4", 4), ("cat_fold5", 5), ("cat_fold6", 6)):
        manifest["jobs"][name] = manifest["jobs"]["cat_fold1"] | {"fold": fold}
    manifest_path.write_text(json.dumps(manifest))
    write_json(tmp_path / "outputs" / EXP / "cat_fold5" / "progress.json", {"state": "training", "epoch": 3, "max_epochs": 10})
    (tmp_path / "outputs" / EXP / "cat_fold5" / "error.txt").write_text("Traceback\nRuntimeError: CUDA out of memory\n")
    fabricate_job(tmp_path, "cat", 6, {"loss": 0.4, "acc": 0.8, "f1": 0.8}, np.zeros((N_BOOT, 3)), config_hash="old")
    (tmp_path / "outputs" / EXP / "align_fold3" / "bootstrap.csv").write_text("resample,loss\n0,0.1\n")
    result = run(tmp_path)
    assert set(result.missing) == {"cat_fold4", "cat_fold5", "cat_fold6", "align_fold3"}
    assert "PENDING" in result.missing["cat_fold4"]
    assert result.missing["cat_fold5"] == "not finished: FAILED, epoch 3/10: RuntimeError: CUDA out of memory"
    assert "stale" in result.missing["cat_fold6"]
    assert "bootstrap.csv" in result.missing["align_fold3"]
    assert result.n_expected == 9 and result.n_finished == 5
    comp = result.comparisons.set_index("metric")
    assert comp.loc["acc", "folds"] == "1 2" and comp.loc["acc", "n_folds"] == 2
    text = result.markdown.read_text()
    assert "## Missing or failed jobs" in text and "- cat_fold5: not finished: FAILED" in text


def test_figures_are_png_and_grow_with_group_count(tmp_path: Path) -> None:
    sizes = {}
    for n_groups in (2, 8):
        root = tmp_path / str(n_groups)
        fabricate_grid(root, {f"type_{i}": 0.7 + 0.02 * i for i in range(1, n_groups + 1)}, folds=3)
        result = run(root, figures=True)
        assert set(result.figures) == {*agg.METRICS, "posterior"}
        for path in result.figures.values():
            assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and path.stat().st_size > 5000
        with Image.open(result.figures["acc"]) as img:
            sizes[n_groups] = img.size
            assert len(set(np.asarray(img.convert("L")).ravel().tolist())) > 10  # not a blank canvas
    assert sizes[8][0] > sizes[2][0]
    assert not list(tmp_path.rglob("*.tmp"))  # atomic writes leave no temporaries behind


def test_save_png_closes_the_figure_even_when_savefig_fails(tmp_path: Path) -> None:
    import matplotlib.pyplot as plt

    from camvis.plots import save_png

    fig = plt.figure()
    assert save_png(fig, tmp_path / "ok.png").read_bytes()[:4] == b"\x89PNG"
    assert not plt.fignum_exists(fig.number)
    fig = plt.figure()

    def broken(*args: object, **kwargs: object) -> None:
        raise OSError("disk full")

    fig.savefig = broken  # type: ignore[method-assign]
    with pytest.raises(OSError, match="disk full"):
        save_png(fig, tmp_path / "broken.png")
    assert not plt.fignum_exists(fig.number)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ok.png"]  # no half-written file, no temporary


def test_markdown_report_has_tables(tmp_path: Path) -> None:
    fabricate_grid(tmp_path, {"cat": 0.8, "align": 0.75}, folds=3)
    text = run(tmp_path).markdown.read_text()
    assert "| group | loss (95% CI) | acc (95% CI) | f1 (95% CI) | folds |" in text
    assert "| --- | --- | --- | --- | --- |" in text
    assert "## Paired comparisons" in text and "| acc | align - cat | 3 |" in text
    assert "## Per-fold acc" in text and "fold 3" in text
    assert "camvis2's own reported loss applied BCE-with-logits to the probabilities" in text


def test_without_manifest_every_job_folder_counts_and_outputs_are_not_jobs(tmp_path: Path) -> None:
    fabricate_grid(tmp_path, {"cat": 0.8, "align": 0.75}, folds=3)
    (tmp_path / "jobs" / EXP / "manifest.json").unlink()
    first = run(tmp_path, figures=True)
    second = run(tmp_path)  # what the first run wrote must not look like a job
    assert first.n_expected == second.n_expected == 6 and not second.missing


def test_plain_axes_make_separate_groups(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    entries = {}
    for fold in (1, 2):
        noise = rng.normal(0, 0.01, (N_BOOT, 3))
        for lr, acc in (("0.001", 0.8), ("0.0001", 0.7)):
            name = f"cat_fold{fold}_lr{lr}"
            fabricate_job(tmp_path, "cat", fold, {"loss": 0.3, "acc": acc, "f1": acc}, noise, name=name)
            entries[name] = {"group": "cat", "fold": fold}
    write_manifest(tmp_path, entries)
    summary = run(tmp_path).summary
    assert set(summary.group) == {"cat_lr0.001", "cat_lr0.0001"} and (summary.n_folds == 2).all()


def test_cli_prints_summary_and_fails_cleanly(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    fabricate_grid(tmp_path, {"cat": 0.8, "align": 0.75}, folds=3)
    argv = ["--outputs", str(tmp_path / "outputs"), "--jobs-dir", str(tmp_path / "jobs"), "--no-figures"]
    assert cli.main([EXP, *argv, "--confidence", "0.9"]) == 0
    out = capsys.readouterr().out
    assert "acc (90% CI)" in out and "align" in out and "summary.md" in out
    assert cli.main(["nope", *argv]) == 2
    assert "error: unknown experiment 'nope'" in capsys.readouterr().err
    with pytest.raises(SystemExit) as refused:  # argparse: camvis.cli.bounded
        cli.main([EXP, *argv, "--confidence", "1.5"])
    assert refused.value.code == 2 and "--confidence: expected a finite number" in capsys.readouterr().err


def test_no_finished_job_is_a_clean_error(tmp_path: Path) -> None:
    write_manifest(tmp_path, {"cat_fold1": {"group": "cat", "fold": 1}})
    with pytest.raises(CamvisError, match="no finished job.*cat_fold1: not finished: PENDING"):
        run(tmp_path)


def test_a_single_group_has_a_summary_and_no_comparisons(tmp_path: Path) -> None:
    fabricate_grid(tmp_path, {"mymodel": 0.8}, folds=3)
    result = run(tmp_path)
    assert list(result.summary.group.unique()) == ["mymodel"] and result.comparisons.empty
    assert "(no two groups share a fold)" in result.markdown.read_text()
    assert list(pd.read_csv(result.comparisons_csv).columns)[:3] == ["metric", "group_a", "group_b"]


def test_summary_says_how_the_grid_ran(tmp_path: Path) -> None:
    fabricate_grid(tmp_path, {"cat": 0.8, "align": 0.75}, folds=2)
    path = tmp_path / "jobs" / EXP / "manifest.json"
    manifest = json.loads(path.read_text())
    manifest["description"] = "cat vs align, a tiny test grid"
    manifest["launches"][0]["resources"] = {"mode": "slurm", "nodes": 1, "ranks_per_node": 2, "gpus_per_node": 2,
                                            "cpus_per_task": 8, "mem_gb": 32, "time_min": 120}
    path.write_text(json.dumps(manifest))
    scores_path = tmp_path / "outputs" / EXP / "cat_fold2" / "scores.json"
    scores = json.loads(scores_path.read_text())
    scores_path.write_text(json.dumps({**scores, "epochs": 14}))
    for fold, seconds in ((1, 600.0), (2, 1200.0)):
        p = tmp_path / "outputs" / EXP / f"cat_fold{fold}" / "scores.json"
        p.write_text(json.dumps({**json.loads(p.read_text()), "timing": {"train_s": seconds}}))
    text = run(tmp_path).markdown.read_text()
    assert text.splitlines()[2] == "cat vs align, a tiny test grid"
    section = text.split("## How it ran")[1].split("##")[0]
    rows = {line.split(" | ")[0].strip("| "): line.split(" | ") for line in section.splitlines() if line.startswith("| ")}
    assert rows["cat"][1:6] == ["2", "10-14", "30.0 min", "15.0 min", "job"]
    assert rows["align"][1:6] == ["2", "10", "-", "-", "-"]  # no time recorded and no SLURM: not guessed
    assert "1 node x 2 rank, 2 GPU/node, 8 CPU/rank, 32 GB, 120 min" in rows["cat"][6]
    assert rows["cat"][7].strip(" |") == "1 GPU-h"  # (600 s + 1200 s) x 2 GPUs
    assert rows["align"][7].strip(" |") == "-"


def test_summary_has_cpu_hours_per_group(tmp_path: Path) -> None:
    """A local CPU run: each job's own wall time (load + train + evaluate) x the threads it ran on."""
    fabricate_grid(tmp_path, {"cat": 0.8, "align": 0.75}, folds=2)
    for group, timing, threads in (("cat", (60.0, 3000.0, 540.0), 2), ("align", (30.0, 800.0, 70.0), 1)):
        for fold in (1, 2):
            p = tmp_path / "outputs" / EXP / f"{group}_fold{fold}" / "scores.json"
            p.write_text(json.dumps({**json.loads(p.read_text()), "threads": threads,
                                     "timing": dict(zip(("load_s", "train_s", "evaluate_s"), timing))}))
    section = run(tmp_path).markdown.read_text().split("## How it ran")[1].split("##")[0]
    lines = [line.split(" | ") for line in section.splitlines() if line.startswith("| ")]
    assert lines[0][7].strip(" |") == "GPU/CPU hours"
    hours = {cells[0].strip("| "): cells[7].strip(" |") for cells in lines[2:]}
    assert hours == {"cat": "4 CPU-h", "align": "0.5 CPU-h"}  # 2 x 3600 s x 2 threads; 2 x 900 s x 1 thread
    assert "x its CPUs when it held no GPU (CPU-h)" in section


@pytest.mark.parametrize("text, seconds", [("00:05:00", 300.0), ("1-02:00:00", 93600.0), ("12:30", 750.0),
                                           ("", None), ("bad", None)])
def test_slurm_elapsed_in_seconds(text: str, seconds: float | None) -> None:
    from camvis.results.run_facts import elapsed_seconds

    assert elapsed_seconds(text) == seconds


def test_cli_writes_each_figure_in_every_format(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    fabricate_grid(tmp_path, {"cat": 0.8, "align": 0.6}, folds=2)
    argv = [EXP, "--outputs", str(tmp_path / "outputs"), "--jobs-dir", str(tmp_path / "jobs")]
    assert cli.main([*argv, "--format", "svg,png"]) == 0
    out = tmp_path / "outputs" / EXP
    for metric in agg.METRICS:
        assert (out / f"{metric}.svg").read_bytes().lstrip().startswith(b"<?xml")
    for metric in (*agg.METRICS, "posterior"):
        with Image.open(out / f"{metric}.png") as img:
            assert round(img.info["dpi"][0]) == 200
    assert "![acc](acc.svg)" in (out / "summary.md").read_text()  # the first format asked
    with pytest.raises(SystemExit) as info:
        cli.main([*argv, "--format", "png,gif"])
    assert info.value.code == 2 and "expected a comma-separated list of png, pdf, svg, got 'png,gif'" in capsys.readouterr().err


def test_groups_keep_the_grids_order() -> None:
    from camvis.results.run_facts import group_order

    jobs = [("align_fold1", "align"), ("base_fold1", "base"), ("cat_fold1", "cat"), ("cat_fold2", "cat")]
    manifest = {"order": ["cat_fold1", "cat_fold2", "align_fold1"], "jobs": {}}
    assert group_order(manifest, jobs) == ["cat", "align", "base"]  # base: not placed, after
    by_task = {"jobs": {"align_fold1": {"task": 2}, "cat_fold1": {"task": 0}, "cat_fold2": {"task": 1}}}
    assert group_order(by_task, jobs) == ["cat", "align", "base"]
    assert group_order(None, jobs) == ["align", "base", "cat"]


def test_summary_says_which_rule_selected_each_groups_models(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """scores.json's selection reaches summary.csv and the printed table; scores written before
    the key read as camvis2's held-out rule."""
    fabricate_grid(tmp_path, {"cat": 0.80, "align": 0.75}, folds=2)
    out = tmp_path / "outputs" / EXP
    for path in out.glob("cat_fold*/scores.json"):
        write_json(path, {**json.loads(path.read_text()), "selection": "inner"})
    result = run(tmp_path)
    summary = pd.read_csv(result.summary_csv).drop_duplicates("group").set_index("group")["selection"]
    assert summary.to_dict() == {"align": "heldout", "cat": "inner"}
    agg.print_summary(result, Console(width=200, force_terminal=False))
    assert "inner" in capsys.readouterr().out


def test_summary_says_which_statistics_normalized_each_groups_inputs(tmp_path: Path) -> None:
    """scores.json's normalization reaches summary.csv and summary.md; scores written before the key
    read as global (camvis normalized with the statistics over every view then)."""
    fabricate_grid(tmp_path, {"cat": 0.80, "align": 0.75}, folds=2)
    out = tmp_path / "outputs" / EXP
    for path in out.glob("cat_fold*/scores.json"):
        write_json(path, {**json.loads(path.read_text()), "normalization": "per-fold (training views)"})
    result = run(tmp_path)
    summary = pd.read_csv(result.summary_csv).drop_duplicates("group").set_index("group")["normalization"]
    assert summary.to_dict() == {"align": "global", "cat": "per-fold"}
    assert "| normalization |" in result.markdown.read_text()


# --------------------------------------------------------------------------- issue 21: files, replicates, speed paths


def test_a_bad_bootstrap_in_the_batch_is_left_out_alone(tmp_path: Path) -> None:
    fabricate_grid(tmp_path, {"cat": 0.8, "align": 0.75}, folds=3)
    out = tmp_path / "outputs" / EXP
    (out / "cat_fold2" / "bootstrap.csv").write_text("resample,loss,acc,f1\n0,0.1,x,0.2\n")
    shuffled = pd.read_csv(out / "align_fold1" / "bootstrap.csv").iloc[::-1]  # rows out of resample order
    shuffled.to_csv(out / "align_fold1" / "bootstrap.csv", index=False)
    result = run(tmp_path, seed=None)
    assert set(result.missing) == {"cat_fold2"} and "bootstrap.csv" in result.missing["cat_fold2"]
    align = next(j for j in agg.load_finished(agg.status_model.collect(EXP, tmp_path / "jobs", tmp_path / "outputs"),
                                              tmp_path / "outputs")[0] if j.name == "align_fold1")
    np.testing.assert_array_equal(align.boot, shuffled.sort_values("resample")[list(agg.METRICS)].to_numpy())


def test_camvis2_csv_text_is_exactly_percent_4f(monkeypatch: pytest.MonkeyPatch) -> None:
    from camvis.results.finished import FinishedJob

    rng = np.random.default_rng(0)
    jobs = []
    for i in range(40):
        values = rng.random((30 + i, 3)) * rng.choice([1, 9.9999, 12]) - (0.1 if i % 13 == 0 else 0)
        values[::7] = np.round(values[::7], 4)
        if i % 5 == 0:
            values[3] = [0.03125, 0.5, 0.00005]  # exact ties and near-ties: Python formats that job
        jobs.append(FinishedJob(name=f"j{i}", group=f"g{i},x%", fold=i, view="v%1", model_name='m"1', metrics={},
                                ci={}, boot=values))
    expected = ["model_name,fold,view,loss,acc,f1,group\n"]
    for j in jobs:
        head = ",".join(agg._csv_field(v).replace("%%", "%") for v in (j.model_name, j.fold, j.view))
        expected += [f"{head},{a:.4f},{b:.4f},{c:.4f},{agg._csv_field(j.group).replace('%%', '%')}\n" for a, b, c in j.boot]
    assert agg.camvis2_csv_text(jobs) == "".join(expected)
    monkeypatch.setattr(agg, "CSV_CHUNK_ROWS", 100)  # jobs laid out a few at a time: the same text
    assert agg.camvis2_csv_text(jobs) == "".join(expected)
    # with the groups' headline intervals: the same rows, each followed by its group's six numbers
    summary = pd.DataFrame([{"group": j.group, "metric": m, "ci_low": 0.1 * k + j.fold / 100, "ci_high": math.nan}
                            for j in jobs for k, m in enumerate(agg.METRICS)])
    extra = {j.group: "".join(f",{0.1 * k + j.fold / 100:.4f}," for k in range(3)) for j in jobs}
    lines = agg.camvis2_csv_text(jobs, summary).splitlines(keepends=True)
    assert lines[0] == ",".join(agg.CAMVIS2_COLUMNS + agg.HEADLINE_COLUMNS) + "\n"
    groups = [j.group for j in jobs for _ in j.boot]
    assert lines[1:] == [e[:-1] + extra[g] + "\n" for e, g in zip(expected[1:], groups)]


def test_replicates_from_files_are_one_fold_each_with_seed_spread(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    entries = {}
    for fold in (1, 2, 3):
        noise = rng.normal(0, 0.01, (N_BOOT, 3))
        for group, level in (("cat", 0.85), ("align", 0.80)):
            for rep, jitter in ((1, -0.01), (2, 0.0), (3, 0.01)):
                name = f"{group}_fold{fold}_rep{rep}"
                acc = level + 0.02 * fold + jitter
                folder = fabricate_job(tmp_path, group, fold, {"loss": 0.3, "acc": acc, "f1": acc}, noise, name=name)
                scores = json.loads((folder / "scores.json").read_text())
                (folder / "scores.json").write_text(json.dumps({**scores, "replicate": rep}))
                entries[name] = {"group": group, "fold": fold}
    write_manifest(tmp_path, entries)
    result = run(tmp_path)
    summary = result.summary.set_index(["group", "metric"])
    assert not result.missing and set(result.summary.group) == {"cat", "align"}
    assert summary.loc[("cat", "acc"), "n_folds"] == 3 and summary.loc[("cat", "acc"), "n_replicates"] == "3"
    assert summary.loc[("cat", "acc"), "mean"] == pytest.approx(0.85 + 0.04)
    assert summary.loc[("cat", "acc"), "sd_seed"] == pytest.approx(0.01)  # sd of (-0.01, 0, 0.01)
    assert summary.loc[("cat", "acc"), "sd"] == pytest.approx(0.02)  # across the folds' replicate means
    row = result.comparisons.set_index("metric").loc["acc"]
    assert row.n_folds == 3 and row.mean_diff == pytest.approx(-0.05)  # align - cat
    assert "sd across training seeds" in result.markdown.read_text()


def test_figures_are_drawn_in_parallel_processes_and_a_failed_one_is_one_line(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    import camvis.forked
    import camvis.plots as plots

    fabricate_grid(tmp_path, {"cat": 0.8, "align": 0.75}, folds=3)
    real = plots.write_bytes

    def recording(path: Path, data: object) -> None:  # runs in the drawing process: its pid is in the file
        real(path, data)
        (tmp_path / f"drawn-{path.name}-{os.getpid()}").touch()

    monkeypatch.setattr(camvis.forked, "usable_cpus", lambda: 2)  # as on any machine with 2 cores or more
    monkeypatch.setattr(camvis.forked, "_can_fork", lambda workers: workers > 1)  # despite the suite's threads
    monkeypatch.setattr(plots, "write_bytes", recording)
    run(tmp_path, figures=True)
    writers = {p.name.rsplit("-", 1)[1] for p in tmp_path.glob("drawn-*")}
    assert len(list(tmp_path.glob("drawn-*"))) == 4 and str(os.getpid()) not in writers and len(writers) == 4

    def full(path: Path, data: object) -> None:
        if path.name == "posterior.png":
            raise DiskFullError(f"{path}: no space left on the device for 300 kB")
        real(path, data)

    monkeypatch.setattr(plots, "write_bytes", full)
    argv = [EXP, "--outputs", str(tmp_path / "outputs"), "--jobs-dir", str(tmp_path / "jobs")]
    assert cli.main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "posterior.png: no space left" in err and len(err.splitlines()) == 1
