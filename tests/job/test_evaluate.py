"""Evaluation of a job end to end on a tiny real store and a tiny random model; exact gathering."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
import torch.multiprocessing as mp
import yaml

from camvis import metrics
from camvis.bookkeeping.jobfolder import BEST
from camvis.job import evaluate
from camvis.data import raw
from camvis.job.batches import BatchSource, fold_split
from camvis.cli.evaluate import main as eval_main
from camvis.config import JobConfig, config_hash, load_job_config, to_dict
from camvis.model import build_model

TINY = ["data.factors=[2,4,8]", "model.size_hidden=8", "eval.bootstrap=40", "eval.batch_size=64",
        "train.device=cpu", "experiment=e", "name=j", "group=g"]
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def _cfg(store, *extra: str) -> JobConfig:
    return load_job_config(None, [f"data.store={store.path}", *TINY, *extra])


def _model(cfg: JobConfig, store) -> torch.nn.Module:
    torch.manual_seed(0)
    return build_model(cfg, store.patch_size)


def _save_best(cfg: JobConfig, store, job: Path) -> torch.nn.Module:
    model = _model(cfg, store)
    job.mkdir(parents=True, exist_ok=True)
    torch.save({"model": model.state_dict(), "epoch": 0, "config": to_dict(cfg)}, job / BEST)
    return model


def _best(cfg, store, job):
    """The job's own best.pt on the CPU, as camvis-eval reads it."""
    return evaluate.EvalInputs.load(cfg, job / BEST, BatchSource(store, cfg.data.factors))


def _given(cfg, store):
    return evaluate.EvalInputs(BatchSource(store, cfg.data.factors), _model(cfg, store))


@pytest.fixture(scope="module")
def evaluated(synth_store, tmp_path_factory):
    """One job evaluated from its best.pt, shared by the read-only checks below."""
    cfg = _cfg(synth_store, "data.fold=2")
    job = tmp_path_factory.mktemp("eval") / "job"
    _save_best(cfg, synth_store, job)
    (job / "progress.json").write_text(json.dumps({"epoch": 3}))
    scores = evaluate.evaluate_job(cfg, job, _best(cfg, synth_store, job), progress=False)
    return cfg, job, scores


def test_every_output_exists_and_figures_are_pngs(evaluated, synth_store):
    cfg, job, _ = evaluated
    for name in ("predictions.csv", "confusion.csv", "confusion.png", "bootstrap.csv", "visibility.csv", "scores.json"):
        assert (job / name).stat().st_size > 0, name
    _, val_idx, view = fold_split(synth_store, cfg.data.fold)
    held_out = sorted({synth_store.images[i] for i in synth_store.table["image"][val_idx]})
    expected = {f"{name}_{kind}.png" for name in held_out for kind in ("map", "distance")}
    assert {p.name for p in (job / "figures").iterdir()} == expected
    for png in [job / "confusion.png", *(job / "figures").iterdir()]:
        data = png.read_bytes()
        assert len(data) > 1000 and data.startswith(PNG_MAGIC), png
    assert not [p for p in job.rglob("*") if p.name.endswith(".tmp")], "temporary files left behind"


def test_scores_json_is_written_last(evaluated):
    _, job, _ = evaluated
    last = (job / "scores.json").stat().st_mtime_ns
    others = [p for p in job.rglob("*") if p.is_file() and p.name not in ("scores.json", "best.pt", "progress.json")]
    assert others and all(p.stat().st_mtime_ns <= last for p in others)


def test_scores_json_follows_the_contract_and_matches_predictions(evaluated, synth_store):
    cfg, job, scores = evaluated
    assert json.loads((job / "scores.json").read_text()) == scores
    train_idx, val_idx, view = fold_split(synth_store, cfg.data.fold)
    assert {k: scores[k] for k in ("experiment", "job", "group", "fold", "view", "config_hash", "epochs")} == {
        "experiment": "e", "job": "j", "group": "g", "fold": 2, "view": view,
        "config_hash": config_hash(cfg), "epochs": 3}
    assert scores["model_name"] == "type_2"  # default flags: mlp, shared weights, no alignment
    assert (scores["n_val"], scores["n_train"]) == (len(val_idx), len(train_idx))
    assert scores["bootstrap"] == {"n": 40, "seed": 0, "confidence": 0.95, "file": "bootstrap.csv"}
    pred = pd.read_csv(job / "predictions.csv")
    assert list(pred.columns) == ["patch", "image", "score", "logit", "label", "depth"]
    assert pred["patch"].tolist() == val_idx.tolist()  # every held-out patch exactly once, in order
    np.testing.assert_array_equal(pred["label"], synth_store.table["label"][val_idx])
    np.testing.assert_allclose(pred["depth"], synth_store.table["depth"][val_idx], rtol=1e-6)
    names = np.asarray(synth_store.images)[synth_store.table["image"][val_idx]]
    assert pred["image"].tolist() == names.tolist()
    recomputed = metrics.scores(pred["score"].to_numpy(), pred["label"].to_numpy(), logits=pred["logit"].to_numpy())
    assert scores["metrics"] == pytest.approx(recomputed, rel=1e-6)
    np.testing.assert_allclose(pred["score"], 1 / (1 + np.exp(-pred["logit"])), rtol=1e-6)
    confusion = metrics.confusion(pred["score"].to_numpy(), pred["label"].to_numpy())
    assert scores["confusion"] == confusion.tolist()
    csv = pd.read_csv(job / "confusion.csv")
    assert csv[["predicted_0", "predicted_1"]].to_numpy().tolist() == confusion.tolist()


def test_bootstrap_csv_holds_every_resample_and_the_ci(evaluated):
    cfg, job, scores = evaluated
    boot = pd.read_csv(job / "bootstrap.csv")
    assert list(boot.columns) == ["resample", "loss", "acc", "f1"]
    assert boot["resample"].tolist() == list(range(cfg.eval.bootstrap))
    pred = pd.read_csv(job / "predictions.csv")
    again = metrics.bootstrap(pred["score"].to_numpy(), pred["label"].to_numpy(), n=40, seed=cfg.eval.seed,
                              logits=pred["logit"].to_numpy())
    for name in metrics.METRICS:
        np.testing.assert_allclose(boot[name], again[name], rtol=1e-6)
        assert scores["ci"][name] == pytest.approx(list(metrics.percentile_ci(boot[name], 0.95)), rel=1e-6)


def test_visibility_csv_has_one_row_per_held_out_image_with_the_truth(evaluated, synth_store, synth_raw):
    _, job, scores = evaluated
    vis = pd.read_csv(job / "visibility.csv")
    assert list(vis.columns[:7]) == ["image", "view", "predicted_visibility_m", "visibility_low_m", "visibility_high_m",
                                     "true_visibility_m", "abs_log10_error"]
    assert sorted(vis["image"]) == sorted(set(pd.read_csv(job / "predictions.csv")["image"]))
    assert set(vis["view"]) == {scores["view"]}
    truth = raw.read_visibility(synth_raw)
    np.testing.assert_allclose(vis["true_visibility_m"], [truth[name] for name in vis["image"]], rtol=1e-6)
    ok = vis["predicted_visibility_m"].notna()
    expected = np.abs(np.log10(vis["predicted_visibility_m"][ok]) - np.log10(vis["true_visibility_m"][ok]))
    np.testing.assert_allclose(vis["abs_log10_error"][ok], expected, rtol=1e-6)
    assert scores["visibility"]["n_images"] == len(vis)
    if ok.any():
        assert scores["visibility"]["median_abs_log10_error"] == pytest.approx(float(np.median(expected)), rel=1e-6)


def test_predict_matches_the_model_and_restores_its_mode(synth_store):
    cfg = _cfg(synth_store)
    model = _model(cfg, synth_store).train()
    source = BatchSource(synth_store, cfg.data.factors)
    idx = np.array([5, 3, 17, 3, 40])  # unsorted, one duplicate
    out = evaluate.patch_probabilities(model, source, idx, batch_size=2, device="cpu", progress=False)
    assert model.training
    assert out["patch"].tolist() == [3, 5, 17, 40]
    x, label, depth = source.batch(torch.tensor([3, 5, 17, 40]))
    with torch.no_grad():
        expected = torch.sigmoid(model.eval()(x)).numpy()
    np.testing.assert_allclose(out["score"], expected, rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(out["label"], label.numpy().astype(np.uint8))
    np.testing.assert_array_equal(out["image"], synth_store.table["image"][[3, 5, 17, 40]])
    assert out["score"].dtype == np.float32 and out["patch"].dtype == np.int64


def test_passing_a_model_skips_the_checkpoint_and_figures_can_be_off(synth_store, tmp_path):
    cfg = _cfg(synth_store, "eval.figures=false", "eval.bootstrap=0")
    scores = evaluate.evaluate_job(cfg, tmp_path, _given(cfg, synth_store), progress=False)
    assert not (tmp_path / "figures").exists()
    assert scores["ci"] == {name: [None, None] for name in metrics.METRICS}  # no bootstrap, no interval
    assert len(pd.read_csv(tmp_path / "bootstrap.csv")) == 0
    assert scores["epochs"] == 0  # no progress.json


def test_failed_evaluation_leaves_no_stale_scores(synth_store, tmp_path, monkeypatch):
    cfg = _cfg(synth_store, "eval.figures=false")
    (tmp_path / "scores.json").write_text("{}")

    def broken(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(evaluate, "_write_csv", broken)
    with pytest.raises(OSError, match="disk full"):
        evaluate.evaluate_job(cfg, tmp_path, _given(cfg, synth_store), progress=False)
    assert not (tmp_path / "scores.json").exists()


def test_cli_evaluates_a_checkpoint(synth_store, tmp_path, capsys):
    cfg = _cfg(synth_store, "eval.figures=false")
    config = tmp_path / "job.yaml"
    config.write_text(yaml.safe_dump(to_dict(cfg)))
    _save_best(cfg, synth_store, tmp_path / "trained")
    job = tmp_path / "rerun"
    assert eval_main([str(config), "eval.bootstrap=10", "--job-dir", str(job),
                      "--checkpoint", str(tmp_path / "trained" / "best.pt")]) == 0
    assert "held-out view" in capsys.readouterr().out
    scores = json.loads((job / "scores.json").read_text())
    assert scores["bootstrap"]["n"] == 10 and len(pd.read_csv(job / "bootstrap.csv")) == 10


def test_cli_errors_are_one_line(synth_store, tmp_path, capsys):
    cfg = _cfg(synth_store)
    config = tmp_path / "job.yaml"
    config.write_text(yaml.safe_dump(to_dict(cfg)))
    assert eval_main([str(config), "--job-dir", str(tmp_path / "none")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "best.pt" in err
    # weights of another architecture: named, not a traceback
    other = _cfg(synth_store, "model.size_hidden=4")
    _save_best(other, synth_store, tmp_path / "other")
    assert eval_main([str(config), "--checkpoint", str(tmp_path / "other" / "best.pt"),
                      "--job-dir", str(tmp_path / "x")]) == 2
    assert "do not fit the model" in capsys.readouterr().err


def test_bare_state_dict_from_ddp_loads(synth_store, tmp_path):
    cfg = _cfg(synth_store)
    model = _model(cfg, synth_store)
    torch.save({f"module.{k}": v for k, v in model.state_dict().items()}, tmp_path / "w.pt")
    loaded = evaluate.load_model(cfg, tmp_path / "w.pt", synth_store.patch_size, torch.device("cpu"))
    for key, value in model.state_dict().items():
        assert torch.equal(loaded.state_dict()[key], value)


# --------------------------------------------------------------------------- two ranks



def _subset(store) -> np.ndarray:
    """45 held-out patches: 7 batches of at most 7 split over 2 ranks, one rank a row short."""
    return fold_split(store, 1)[1][:45]


def _worker(rank: int, world: int, port: int, store_path: str, out_dir: str) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), WORLD_SIZE=str(world))
    torch.set_num_threads(1)  # two ranks share the machine's cores
    torch.distributed.init_process_group("gloo", rank=rank, world_size=world)
    try:
        from camvis.data.store import open_store

        store = open_store(store_path)
        cfg = _cfg(store)
        source = BatchSource(store, cfg.data.factors)
        preds = evaluate.patch_probabilities(_model(cfg, store), source, _subset(store), 7, "cpu", progress=False)
        # uneven shards with overlap: rank r holds r + 1 rows, row 0 on both ranks
        rows = {"patch": np.arange(rank + 2)[: rank + 1] * 10, "score": np.full(rank + 1, rank, np.float32)}
        gathered = evaluate.gather_predictions(rows)
        # the whole evaluation on two ranks: both return the scores, rank 0 writes them
        job_cfg = _cfg(store, "eval.figures=false")
        scores = evaluate.evaluate_job(job_cfg, Path(out_dir) / "job", _best(job_cfg, store, Path(out_dir) / "job"),
                                        progress=False)
        torch.save({"preds": preds, "gathered": gathered, "scores": scores}, Path(out_dir) / f"rank{rank}.pt")
    finally:
        torch.distributed.destroy_process_group()


@pytest.mark.slow
def test_two_ranks_predict_every_held_out_patch_once(synth_store, tmp_path, rendezvous_port):
    cfg = _cfg(synth_store)
    _save_best(cfg, synth_store, tmp_path / "job")
    mp.spawn(_worker, args=(2, rendezvous_port, str(synth_store.path), str(tmp_path)), nprocs=2, join=True)
    val_idx = _subset(synth_store)
    single = evaluate.patch_probabilities(_model(cfg, synth_store), BatchSource(synth_store, cfg.data.factors), val_idx, 7,
                              "cpu", progress=False)
    for rank in range(2):
        got = torch.load(tmp_path / f"rank{rank}.pt", weights_only=False)
        assert got["preds"]["patch"].tolist() == val_idx.tolist()
        for key in ("patch", "image", "label", "depth"):
            np.testing.assert_array_equal(got["preds"][key], single[key])
        np.testing.assert_allclose(got["preds"]["score"], single["score"], rtol=1e-5, atol=1e-6)
        assert got["gathered"]["patch"].tolist() == [0, 10]
        assert got["gathered"]["score"].tolist() == [0.0, 1.0]  # first occurrence (rank 0) wins
        assert got["gathered"]["patch"].dtype == np.int64 and got["gathered"]["score"].dtype == np.float32
        scores = {k: v for k, v in got["scores"].items() if k != "finished"}
        on_disk = json.loads((tmp_path / "job" / "scores.json").read_text())
        assert scores == {k: v for k, v in on_disk.items() if k != "finished"}
    pred = pd.read_csv(tmp_path / "job" / "predictions.csv")
    assert pred["patch"].tolist() == fold_split(synth_store, 1)[1].tolist()


def test_figure_titles_name_job_fold_view_image_and_visibility(synth_store, tmp_path, monkeypatch):
    from camvis.plots import evaluation as plots

    titles: dict[str, list[str]] = {"confusion": [], "map": []}
    real_confusion, real_map = plots.plot_confusion, plots.plot_image_map

    def confusion(matrix, path, title=""):  # the real figure, its title kept for the check
        titles["confusion"].append(title)
        return real_confusion(matrix, path, title)

    def image_map(*args, title=""):
        titles["map"].append(title)
        return real_map(*args, title=title)

    monkeypatch.setattr(plots, "plot_confusion", confusion)
    monkeypatch.setattr(plots, "plot_image_map", image_map)
    cfg = _cfg(synth_store, "data.fold=1", "eval.bootstrap=0")
    _save_best(cfg, synth_store, tmp_path)
    evaluate.evaluate_job(cfg, tmp_path, _best(cfg, synth_store, tmp_path), progress=False)
    _, _, view = fold_split(synth_store, 1)
    assert titles["confusion"] == [f"e/j: fold 1, held-out view {view}"]
    assert titles["map"] and all(t.startswith("e/j: ") and "predicted V " in t and "true V " in t
                                 for t in titles["map"])


def test_maps_of_wide_images_are_thinned_with_their_markers(synth_store, tmp_path, monkeypatch):
    """A level wider than MAP_WIDTH is drawn every `step` pixels, and the patch centres are divided by
    the same step, so each marker stays on the pixel its patch is centred on."""
    from camvis.plots import evaluation as plots

    drawn: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = []

    def image_map(image, rows, cols, *args, title=""):
        drawn.append((image, np.asarray(rows), np.asarray(cols)))
        return Path(args[-1])

    monkeypatch.setattr(plots, "plot_image_map", image_map)
    monkeypatch.setattr(evaluate, "MAP_WIDTH", 50)
    cfg = _cfg(synth_store, "data.fold=1", "eval.bootstrap=0")
    _save_best(cfg, synth_store, tmp_path)
    evaluate.evaluate_job(cfg, tmp_path, _best(cfg, synth_store, tmp_path), progress=False)
    factor = min(synth_store.factors)
    full = np.asarray(synth_store.read_image(factor, 0)).transpose(1, 2, 0)
    step = -(-full.shape[1] // 50)
    assert drawn and step > 1
    for image, rows, cols in drawn:
        assert image.shape[1] <= 50 and image.shape[0] == -(-full.shape[0] // step)
        assert rows.max() < image.shape[0] and cols.max() < image.shape[1]
    levels = [np.asarray(synth_store.read_image(factor, i)).transpose(1, 2, 0) for i in range(len(synth_store.images))]
    for image, rows, cols in drawn:  # each map shows one whole level, thinned by `step`
        assert any(image.shape == level[::step, ::step].shape and np.array_equal(image, level[::step, ::step])
                   for level in levels)
    centres = synth_store.table["center_w"] / factor  # the same scale as the drawn columns x step
    assert np.isin(np.round(drawn[0][2] * step, 6), np.round(centres, 6)).all()
