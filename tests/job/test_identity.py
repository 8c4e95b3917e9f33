"""Identity of a result: a job resumes only its own training, an eval-only change re-evaluates,
earlier outputs are moved aside (never overwritten), --force re-evaluates, --restart retrains
(and a requeued --restart resumes), checkpoints load safely, a diverged loss writes no scores.
Real tiny jobs on the session's synthetic store."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch

from camvis.bookkeeping import experiment_files
from camvis.cluster import launch as launch_mod
from camvis.job import train_log
from camvis.job.checkpoint import CheckpointError
from camvis.cli.train import main as train_main
from camvis.config import config_hash, load_job_config, train_hash
from camvis.job.batches import BatchSource
from camvis.job.evaluate import EvalInputs, evaluate_job
from camvis.job.identity import PREVIOUS
from camvis.job.task import run_job
from camvis.model import build_model
from camvis.job.train import DivergedError

ROOT = Path(__file__).resolve().parents[2]
DEMO = ROOT / "configs" / "demo.yaml"
TINY = ["data.factors=[2,4,8]", "model.size_hidden=8", "train.batch_size=32", "train.epoch_patches=128",
        "train.max_epochs=2", "train.device=cpu", "eval.bootstrap=50", "eval.figures=false",
        "experiment=e", "name=j"]
GRID_TINY = ["data.factors=[2,4,8]", "folds=3", "model.size_hidden=4", "train.max_epochs=1",
             "train.epoch_patches=32", "train.batch_size=16", "eval.bootstrap=10", "eval.figures=false"]


def _cfg(store, *extra: str):
    return load_job_config(None, [f"data.store={store.path}", *TINY, *extra])


def _ckpt(path: Path) -> dict:
    return torch.load(path, map_location="cpu", weights_only=True)


def _previous(job: Path) -> list[Path]:
    return sorted((job / PREVIOUS).iterdir()) if (job / PREVIOUS).is_dir() else []


def _scores(job: Path) -> dict:
    return json.loads((job / "scores.json").read_text())


def test_hashes_split_training_from_evaluation():
    base = load_job_config(None, [])
    lr = load_job_config(None, ["train.lr=3e-3"])
    boot = load_job_config(None, ["eval.bootstrap=10"])
    named = load_job_config(None, ["name=other", "experiment=x"])
    assert train_hash(lr) != train_hash(base) and config_hash(lr) != config_hash(base)
    assert train_hash(boot) == train_hash(base) and config_hash(boot) != config_hash(base)
    assert train_hash(named) == train_hash(base) and config_hash(named) == config_hash(base)


def test_config_change_retrains_and_keeps_the_earlier_outputs(synth_store, tmp_path):
    job = tmp_path / "e" / "j"
    first = run_job(_cfg(synth_store), tmp_path)
    old_hash, old_ckpt = train_hash(_cfg(synth_store)), (job / "checkpoint.pt").read_bytes()
    assert _ckpt(job / "checkpoint.pt")["train_hash"] == _ckpt(job / "best.pt")["train_hash"] == old_hash

    changed = _cfg(synth_store, "train.lr=3e-3")
    second = run_job(changed, tmp_path)
    [kept] = _previous(job)
    assert kept.name.endswith(f"_train-{old_hash}")
    # the earlier outputs, whole and unchanged
    assert (kept / "checkpoint.pt").read_bytes() == old_ckpt
    assert _scores(kept) == first
    assert load_job_config(kept / "config.yaml").train.lr == 1e-3
    assert (kept / "best.pt").exists() and (kept / "progress.json").exists()
    # the current ones: a fresh training of the new config, not a resumed one
    ckpt = _ckpt(job / "checkpoint.pt")
    assert ckpt["train_hash"] == train_hash(changed)
    assert ckpt["state"]["restarts"] == 0 and len(ckpt["state"]["history"]) == 2
    assert second["config_hash"] == config_hash(changed) == _scores(job)["config_hash"]
    assert load_job_config(job / "config.yaml").train.lr == 3e-3
    # readers take the job folder, never previous/
    assert experiment_files.job_dirs(tmp_path, "e") == [job]


def test_eval_only_change_reevaluates_without_training(synth_store, tmp_path, capsys):
    job = tmp_path / "e" / "j"
    first = run_job(_cfg(synth_store), tmp_path)
    ckpt_before = (job / "checkpoint.pt").read_bytes()
    best_before = (job / "best.pt").stat().st_mtime_ns
    capsys.readouterr()

    changed = _cfg(synth_store, "eval.bootstrap=60")
    second = run_job(changed, tmp_path)
    out = capsys.readouterr().out
    assert "] epoch " not in out, "no epoch may run for an eval-only change"
    assert (job / "checkpoint.pt").read_bytes() == ckpt_before
    assert (job / "best.pt").stat().st_mtime_ns == best_before
    assert second["bootstrap"]["n"] == 60 and second["epochs"] == 2
    assert second["config_hash"] == config_hash(changed) and second["train_hash"] == first["train_hash"]
    assert second["metrics"] == first["metrics"], "the same weights on the same view"
    # the earlier evaluation is kept beside the training, which stays in place
    [kept] = _previous(job)
    assert kept.name.endswith(f"_eval-{first['config_hash']}")
    assert _scores(kept) == first and not (kept / "checkpoint.pt").exists()


def test_requeued_restart_resumes_its_own_fresh_training(synth_store, tmp_path, monkeypatch):
    job = tmp_path / "e" / "j"
    cfg = _cfg(synth_store)
    run_job(cfg, tmp_path)
    finished = (job / "checkpoint.pt").read_bytes()

    # --restart "r1", killed after its first epoch's checkpoint
    real = train_log.write_progress

    def killed_after_epoch_1(job_dir, cfg, state, record, **kw):
        real(job_dir, cfg, state, record, **kw)
        if state.epoch == 1 and kw.get("phase") is None:
            raise RuntimeError("killed")

    monkeypatch.setattr(train_log, "write_progress", killed_after_epoch_1)
    with pytest.raises(RuntimeError, match="killed"):
        run_job(cfg, tmp_path, restart="r1")
    monkeypatch.undo()
    [kept] = _previous(job)
    assert (kept / "checkpoint.pt").read_bytes() == finished
    assert _ckpt(job / "checkpoint.pt")["state"]["epoch"] == 1

    # submitit requeues the same call: it resumes epoch 2 of its own training
    run_job(cfg, tmp_path, restart="r1")
    ckpt = _ckpt(job / "checkpoint.pt")
    assert ckpt["run_id"] == "r1" and ckpt["state"]["restarts"] == 1 and ckpt["state"]["epoch"] == 2
    assert len(_previous(job)) == 1, "a requeue must not move its own training aside"
    assert not (job / "error.txt").exists()

    # another --restart retrains again
    run_job(cfg, tmp_path, restart="r2")
    assert len(_previous(job)) == 2 and _ckpt(job / "checkpoint.pt")["state"]["restarts"] == 0


@pytest.mark.slow
def test_launch_force_reevaluates_and_restart_retrains(synth_store, tmp_path):
    outputs, jobs = tmp_path / "outputs", tmp_path / "jobs"
    job = outputs / "demo" / "cat_fold1"

    def go(**kw):
        return launch_mod.launch(DEMO, [f"data.store={synth_store.path}", *GRID_TINY], mode="debug",
                                 only=["group=cat", "fold=1"], outputs=outputs, jobs_dir=jobs, **kw)

    assert go().submitted == ["cat_fold1"]
    ckpt, scores = (job / "checkpoint.pt").read_bytes(), _scores(job)
    assert go().submitted == [], "finished with the same hash: skipped"

    forced = go(force=True)
    assert forced.submitted == ["cat_fold1"] and "re-evaluates" in forced.decisions[0].reason
    assert (job / "checkpoint.pt").read_bytes() == ckpt, "--force must not train"
    assert _scores(job)["metrics"] == scores["metrics"] and _previous(job) == []

    restarted = go(restart=True)
    assert restarted.submitted == ["cat_fold1"] and restarted.decisions[0].status == "restart"
    [kept] = _previous(job)
    assert (kept / "checkpoint.pt").read_bytes() == ckpt
    fresh = _ckpt(job / "checkpoint.pt")
    assert fresh["run_id"] == restarted.restart and fresh["state"]["restarts"] == 0


# --------------------------------------------------------------------------- safe loading


class _Plant:
    """A pickle that creates `marker` when unpickled (what a planted checkpoint would do)."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return open, (str(self.marker), "w")


def test_planted_checkpoint_runs_no_code_and_is_a_clean_error(synth_store, tmp_path, capsys):
    # the plant is real: an unsafe load would run it
    proof = tmp_path / "proof"
    torch.save({"model": _Plant(proof)}, tmp_path / "proof.pt")
    torch.load(tmp_path / "proof.pt", weights_only=False)
    assert proof.exists()

    marker = tmp_path / "PWNED"
    job = tmp_path / "out" / "e" / "j"
    job.mkdir(parents=True)
    torch.save({"model": _Plant(marker), "state": {}}, job / "checkpoint.pt")
    args = [f"data.store={synth_store.path}", *TINY, "--outputs", str(tmp_path / "out")]
    assert train_main(args) == 2
    err = capsys.readouterr().err
    assert not marker.exists(), "loading a checkpoint must not run code"
    assert err.count("\n") == 1 and err.startswith("error: ") and "Traceback" not in err
    assert "checkpoint.pt: refused" in err and "--restart" in err
    assert "checkpoint.pt: refused" in (job / "error.txt").read_text()
    assert not (job / "scores.json").exists()

    # --restart keeps the planted file aside (unread) and trains from scratch
    assert train_main([*args, "--restart"]) == 0
    [kept] = _previous(job)
    assert kept.name.endswith("_train-unreadable") and (kept / "checkpoint.pt").exists()
    assert not marker.exists() and _scores(job)["job"] == "j"


def _rank(rank: int, port: int, store_path: str, outputs: str) -> None:
    import os

    from camvis.data.store import open_store

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), WORLD_SIZE="2")
    torch.set_num_threads(1)
    try:
        run_job(_cfg(open_store(store_path)), outputs)
        outcome = "ok"
    except Exception as e:
        outcome = f"{type(e).__name__}: {e}"
    Path(outputs, f"rank{rank}.txt").write_text(outcome)


@pytest.mark.slow
def test_a_refused_checkpoint_fails_every_rank_none_waits(synth_store, tmp_path, rendezvous_port):
    import time

    import torch.multiprocessing as mp

    marker, job = tmp_path / "PWNED", tmp_path / "e" / "j"
    job.mkdir(parents=True)
    torch.save({"model": _Plant(marker)}, job / "checkpoint.pt")
    ranks = mp.spawn(_rank, args=(rendezvous_port, str(synth_store.path), str(tmp_path)), nprocs=2, join=False)
    deadline = time.monotonic() + 300
    while not ranks.join(timeout=1):
        if time.monotonic() > deadline:
            for process in ranks.processes:
                process.kill()
            pytest.fail("a rank is still waiting after rank 0 refused the checkpoint")
    assert (tmp_path / "rank0.txt").read_text().startswith("CheckpointError: ")
    assert (tmp_path / "rank1.txt").read_text().startswith("CamvisError: rank 0 failed to prepare the job folder: ")
    assert "checkpoint.pt: refused" in (tmp_path / "rank1.txt").read_text()
    assert not marker.exists()


def test_truncated_checkpoint_is_a_clean_error(synth_store, tmp_path, capsys):
    run_job(_cfg(synth_store, "train.max_epochs=1"), tmp_path)
    ckpt = tmp_path / "e" / "j" / "checkpoint.pt"
    data = ckpt.read_bytes()
    ckpt.write_bytes(data[: len(data) // 2])
    code = train_main([f"data.store={synth_store.path}", *TINY, "--outputs", str(tmp_path)])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and "Traceback" not in err
    assert f"{ckpt}: not a readable torch checkpoint" in err and "--restart" in err


def test_a_foreign_torch_file_is_not_a_camvis_checkpoint(synth_store, tmp_path):
    cfg = _cfg(synth_store)
    job = tmp_path / "e" / "j"
    job.mkdir(parents=True)
    torch.save({"weights": torch.zeros(3)}, job / "checkpoint.pt")
    with pytest.raises(CheckpointError, match=r"checkpoint.pt: not a camvis checkpoint \(no 'model'\)"):
        run_job(cfg, tmp_path)


# --------------------------------------------------------------------------- non-finite losses


def test_diverged_training_stops_with_error_and_no_scores(synth_store, tmp_path, monkeypatch):
    """A loss that turns NaN (here forced: a learning rate that diverges is refused by the config
    since train.lr is capped) stops the job before the epoch is saved."""
    real = torch.nn.functional.binary_cross_entropy_with_logits
    monkeypatch.setattr(torch.nn.functional, "binary_cross_entropy_with_logits",
                        lambda logits, target, **kw: real(logits, target, **kw) * float("nan"))
    job = tmp_path / "e" / "j"
    with pytest.raises(DivergedError, match=r"training loss became nan in epoch 1"):
        run_job(_cfg(synth_store), tmp_path)
    error = (job / "error.txt").read_text()
    assert error.startswith("error: e/j: the training loss became nan") and "train.lr" in error
    assert not (job / "scores.json").exists() and not (job / "checkpoint.pt").exists()
    assert json.loads((job / "progress.json").read_text())["state"] == "failed"


def test_evaluation_of_diverged_weights_writes_no_scores(synth_store, tmp_path):
    from camvis.errors import CamvisError

    cfg = _cfg(synth_store)
    torch.manual_seed(0)
    model = build_model(cfg, synth_store.patch_size)
    with torch.no_grad():
        next(model.parameters()).fill_(float("nan"))
    job = tmp_path / "j"
    with pytest.raises(CamvisError, match=r"held-out predictions are not finite .*diverged"):
        evaluate_job(cfg, job, EvalInputs(BatchSource(synth_store, cfg.data.factors), model), progress=False)
    assert not (job / "scores.json").exists()


# --------------------------------------------------------------------------- what a launch says it will do


def test_plan_says_what_each_resubmitted_job_will_do(tmp_path):
    from camvis.cluster.grid import load_grid
    from camvis.cluster.plan import plan

    job = load_grid(DEMO, ["folds=2", "data.store=nowhere.zarr"]).jobs[0]
    folder = tmp_path / job.config.experiment / job.name
    folder.mkdir(parents=True)

    def reason(**kw):
        [decision] = plan([job], tmp_path, **kw)
        return decision

    (folder / "checkpoint.pt").write_bytes(b"")
    (folder / "progress.json").write_text(json.dumps({"train_hash": train_hash(job.config)}))
    assert reason().reason == "unfinished: resumes from checkpoint.pt"
    (folder / "progress.json").write_text(json.dumps({"train_hash": "0ld"}))
    assert "training config changed: retrains from scratch" in reason().reason

    scores = {"config_hash": "0ld", "train_hash": train_hash(job.config)}
    (folder / "scores.json").write_text(json.dumps(scores))
    assert "re-evaluates best.pt (only eval changed)" in reason().reason
    (folder / "scores.json").write_text(json.dumps({**scores, "train_hash": "0ld"}))
    assert "retrains from scratch, earlier outputs kept under previous/" in reason().reason

    (folder / "scores.json").write_text(json.dumps({"config_hash": job.hash}))
    assert not reason().submit
    assert reason(force=True).status == "forced" and "no training" in reason(force=True).reason
    assert reason(restart=True).status == "restart"
    active = reason(restart=True, active={job.name: "12_0 RUNNING"})
    assert not active.submit and active.status == "active"


def test_camvis_eval_keeps_an_earlier_evaluation_of_another_config(synth_store, tmp_path):
    from camvis.cli.evaluate import main as eval_main

    job = tmp_path / "e" / "j"
    run_job(_cfg(synth_store, "train.max_epochs=1"), tmp_path)
    first = _scores(job)
    args = [f"data.store={synth_store.path}", *TINY, "train.max_epochs=1", "eval.bootstrap=20",
            "--outputs", str(tmp_path)]
    assert eval_main(args) == 0
    [kept] = _previous(job)
    assert _scores(kept) == first and _scores(job)["bootstrap"]["n"] == 20
    assert eval_main(args) == 0
    assert len(_previous(job)) == 1, "the same config again: nothing to keep"


# --------------------------------------------------------------------------- a real SLURM requeue


@pytest.mark.slurm
@pytest.mark.slow
def test_slurm_requeued_restart_resumes_its_own_training(synth_store, tmp_path, monkeypatch):
    """--restart on SLURM: the earlier training moves aside once; the requeue after the time
    limit (same pickled task, same restart id) resumes the fresh training instead of restarting."""
    import os
    import subprocess
    import time

    from camvis.cluster.grid import load_grid, select

    if os.environ.get("CAMVIS_SLURM") != "1" and os.environ.get("CI") != "true":
        pytest.skip("SLURM integration test: set CAMVIS_SLURM=1 with the local cluster up")
    overrides = [f"data.store={synth_store.path}", *GRID_TINY, "experiment=it-restart", "train.max_epochs=100000",
                 "train.min_lr=0", "train.plateau_patience=100000", "slurm.time=2", "slurm.signal_delay_s=30",
                 "slurm.max_requeues=5"]
    outputs, jobs = tmp_path / "outputs", tmp_path / "jobs"
    [spec] = select(load_grid(DEMO, overrides).jobs, ["name=cat_fold1"])
    job = outputs / "it-restart" / "cat_fold1"
    # an earlier (plain) run of the same config, stopped after its first epoch
    real = train_log.write_progress

    def stop_after_epoch_1(job_dir, cfg, state, record, **kw):
        real(job_dir, cfg, state, record, **kw)
        if state.epoch == 1:
            raise RuntimeError("stopped")

    monkeypatch.setattr(train_log, "write_progress", stop_after_epoch_1)
    with pytest.raises(RuntimeError):
        run_job(spec.config, outputs)
    monkeypatch.undo()
    earlier = (job / "checkpoint.pt").read_bytes()

    result = launch_mod.launch(DEMO, overrides, only=["name=cat_fold1"], restart=True, outputs=outputs,
                               jobs_dir=jobs)
    try:
        deadline = time.monotonic() + 600
        while time.monotonic() < deadline:
            progress = json.loads((job / "progress.json").read_text()) if (job / "progress.json").exists() else {}
            if progress.get("restarts", 0) >= 1 and progress.get("state") == "training":
                break
            time.sleep(2)
        else:
            pytest.fail("no requeue of the --restart job within 600 s")
        [kept] = _previous(job)
        assert (kept / "checkpoint.pt").read_bytes() == earlier, "the earlier training, moved aside once"
        ckpt = _ckpt(job / "checkpoint.pt")
        assert ckpt["run_id"] == result.restart and ckpt["state"]["epoch"] >= 1
        log = (result.manifest.parent / json.loads(result.manifest.read_text())["jobs"]["cat_fold1"]["stdout"]).read_text()
        assert log.count("--restart: earlier outputs moved") == 1 and "resuming cat_fold1 from" in log
    finally:
        subprocess.run(["scancel", result.array_id, result.aggregate_id], capture_output=True)


def test_a_training_on_otherwise_normalized_inputs_is_not_resumed(synth_store, tmp_path):
    """train_hash covers the config only: a checkpoint also records the statistics its inputs were
    normalized with, and one from before per-fold statistics (no record: global) is not resumed on
    a store that now gives the job its fold's; best.pt of other statistics is not evaluated."""
    from camvis.job import identity

    job, cfg = tmp_path / "e" / "j", _cfg(synth_store)
    run_job(cfg, tmp_path)
    norm = synth_store.normalization(cfg.data.fold, cfg.data.factors).record()
    assert _ckpt(job / "checkpoint.pt")["normalization"] == _ckpt(job / "best.pt")["normalization"] == norm
    assert _scores(job)["normalization"] == "per-fold (training views)"
    assert identity.settle(job, cfg, inputs=lambda: norm) is None  # the same inputs: kept
    assert identity.settle(job, cfg, inputs=lambda: {**norm, "rule": "global"}) is not None
    [moved] = _previous(job)
    shutil.move(str(moved / "checkpoint.pt"), job / "checkpoint.pt")  # back, without the record:
    shutil.move(str(moved / "best.pt"), job / "best.pt")              # as camvis wrote it before
    for name in ("checkpoint.pt", "best.pt"):
        payload = _ckpt(job / name)
        payload.pop("normalization")
        torch.save(payload, job / name)
    run_job(cfg, tmp_path)
    assert len(_previous(job)) == 2
    ckpt = _ckpt(job / "checkpoint.pt")
    assert ckpt["state"]["restarts"] == 0 and ckpt["normalization"] == norm  # trained afresh
    # weights recorded with other statistics are refused by the evaluation
    best = _ckpt(job / "best.pt")
    best["normalization"] = {**norm, "mean": synth_store.normalization(None, cfg.data.factors).record()["mean"]}
    torch.save(best, job / "best.pt")
    with pytest.raises(CheckpointError, match="normalized with per-fold statistics"):
        EvalInputs.load(cfg, job / "best.pt", BatchSource(synth_store, cfg.data.factors, fold=cfg.data.fold))
