"""train.selection: the inner validation split (whole training images, seeded) and its config rules."""

import numpy as np
import pytest
import torch

from camvis.config import job_config_from_dict
from camvis.errors import ConfigError
from camvis.job.batches import fold_split, inner_split
from camvis.job.train import open_inputs


def test_inner_split_takes_whole_training_images_seeded(synth_store):
    train_idx, val_idx, _ = fold_split(synth_store, 1)
    fit, inner = inner_split(synth_store, train_idx, 0.25, seed=7)
    image = np.asarray(synth_store.table["image"])
    assert sorted(np.concatenate([fit, inner]).tolist()) == sorted(train_idx.tolist())
    assert not set(image[fit]) & set(image[inner])  # no image on both sides
    assert not set(inner.tolist()) & set(val_idx.tolist())  # the held-out view stays out
    n_images = len(np.unique(image[train_idx]))
    assert len(np.unique(image[inner])) == max(1, round(0.25 * n_images))
    again, _ = inner_split(synth_store, train_idx, 0.25, seed=7)
    other, _ = inner_split(synth_store, train_idx, 0.25, seed=8)
    np.testing.assert_array_equal(fit, again)
    assert not np.array_equal(fit, other) or n_images < 3


def test_open_inputs_validates_on_the_inner_split_only_when_asked(synth_store):
    base = {"data": {"store": str(synth_store.path), "factors": list(synth_store.factors)[:1]}}
    held_cfg = job_config_from_dict({**base, "train": {"selection": "heldout"}}, "x.yaml")
    held = open_inputs(held_cfg, torch.device("cpu"), synth_store)
    inner_cfg = job_config_from_dict({**base, "train": {"selection": "inner", "inner_fraction": 0.3}}, "x.yaml")
    inner = open_inputs(inner_cfg, torch.device("cpu"), synth_store)
    view = np.asarray(synth_store.table["view"])
    assert set(view[held.val_idx]) == {0}  # fold 1: the first view
    assert 0 not in set(view[inner.val_idx]) and 0 not in set(view[inner.train_idx])
    assert len(inner.train_idx) + len(inner.val_idx) == len(held.train_idx)


def test_new_configs_select_on_the_inner_split_and_the_paper_grids_on_the_held_out_view():
    from pathlib import Path

    import yaml

    assert job_config_from_dict({}, "x.yaml").train.selection == "inner"
    configs = Path(__file__).resolve().parents[2] / "configs"
    for name in ("mymodel.yaml", "cat_vs_align.yaml", "all_architectures.yaml"):
        assert yaml.safe_load((configs / name).read_text())["base"]["train"]["selection"] == "heldout", name


def test_selection_keys_are_checked():
    with pytest.raises(ConfigError) as err:
        job_config_from_dict({"train": {"selection": "test", "inner_fraction": 1.0}}, "x.yaml")
    assert "train.selection: expected one of 'heldout', 'inner'" in str(err.value)
    with pytest.raises(ConfigError, match=r"train.inner_fraction must be in \(0, 1\), got 1.0"):
        job_config_from_dict({"train": {"inner_fraction": 1.0}}, "x.yaml")


def test_a_job_with_inner_selection_trains_and_records_its_rule(synth_store, tmp_path):
    from camvis.config import load_job_config
    from camvis.job.task import run_job

    cfg = load_job_config(None, [f"data.store={synth_store.path}", "data.factors=[2,4,8]", "model.size_hidden=8",
                                 "train.batch_size=32", "train.epoch_patches=128", "eval.bootstrap=20",
                                 "eval.figures=false", "train.max_epochs=1", "train.selection=inner",
                                 "name=j", "experiment=e"])
    scores = run_job(cfg, tmp_path)
    assert scores["selection"] == "inner"
    _, val_idx, _ = fold_split(synth_store, 1)
    assert scores["n_val"] == len(val_idx)  # the held-out view is what is scored
