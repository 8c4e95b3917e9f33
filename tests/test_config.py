"""Job configs: loading, overrides, and errors that name the file, the key and what was expected."""

import pytest

from camvis.config import (
    JobConfig,
    apply_overrides,
    config_hash,
    factors_double,
    job_config_from_dict,
    load_job_config,
    parse_override,
    to_dict,
)
from camvis.errors import ConfigError


def test_defaults_and_yaml(tmp_path):
    path = tmp_path / "job.yaml"
    path.write_text("experiment: exp\nname: cat_fold2\ndata: {fold: 2, factors: [1, 2]}\ntrain: {lr: 1e-4}\n")
    cfg = load_job_config(path)
    assert cfg.experiment == "exp" and cfg.name == "cat_fold2"
    assert cfg.data.fold == 2 and cfg.data.factors == (1, 2)
    assert cfg.train.lr == pytest.approx(1e-4) and isinstance(cfg.train.lr, float)
    assert cfg.model == JobConfig().model


def test_overrides_are_typed_and_validated():
    cfg = load_job_config(None, ["train.max_epochs=3", "model.use_mlp=false", "data.factors=[2,4]"])
    assert cfg.train.max_epochs == 3 and cfg.model.use_mlp is False and cfg.data.factors == (2, 4)
    with pytest.raises(ConfigError, match=r"train.max_epochs: expected int, got str 'three'"):
        load_job_config(None, ["train.max_epochs=three"])


def test_parse_override_needs_key_and_value():
    assert parse_override("train.lr=0.5") == ("train.lr", 0.5)
    with pytest.raises(ConfigError, match="expected key=value"):
        parse_override("train.lr")


def test_unknown_key_suggests_the_close_one(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("model: {align_feature: true}\n")
    with pytest.raises(ConfigError) as err:
        load_job_config(path)
    message = str(err.value)
    assert str(path) in message
    assert "model.align_feature: unknown key (did you mean model.align_features?)" in message


def test_every_error_is_collected():
    raw = {"train": {"lr": -1, "selection_metric": "auc"}, "bogus": 1, "eval": {"confidence": 2.0}}
    with pytest.raises(ConfigError) as err:
        job_config_from_dict(raw, "grid.yaml")
    message = str(err.value)
    assert "bogus: unknown key" in message
    assert "train.selection_metric: expected one of 'acc', 'f1', 'loss'" in message


def test_value_rules():
    with pytest.raises(ConfigError) as err:
        job_config_from_dict({"train": {"lr": -1.0}, "eval": {"confidence": 2.0}, "data": {"fold": 0}}, "x.yaml")
    message = str(err.value)
    assert "train.lr must be > 0, got -1.0" in message
    assert "eval.confidence must be in (0, 1), got 2.0" in message
    assert "data.fold must be >= 1" in message


def test_align_needs_doubling_factors():
    assert factors_double((2, 4, 8, 16, 32)) and factors_double((1, 2, 4))
    assert not factors_double((2, 4, 16)) and not factors_double((3, 6)) and not factors_double((4, 2))
    with pytest.raises(ConfigError, match=r"model.align_features needs data.factors .* got \[2, 4, 16\]"):
        load_job_config(None, ["model.align_features=true", "data.factors=[2,4,16]"])
    load_job_config(None, ["model.align_features=false", "data.factors=[2,4,16]"])  # cat does not care


def test_bad_yaml_and_missing_file_name_the_file(tmp_path):
    with pytest.raises(ConfigError, match="nope.yaml: cannot read config"):
        load_job_config(tmp_path / "nope.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("data: [unclosed\n")
    with pytest.raises(ConfigError, match="bad.yaml: invalid YAML"):
        load_job_config(bad)


def test_hash_ignores_identity_but_not_settings():
    base = load_job_config(None, ["name=a", "experiment=e1"])
    renamed = load_job_config(None, ["name=b", "experiment=e2", "group=g"])
    changed = load_job_config(None, ["name=a", "train.lr=0.01"])
    assert config_hash(base) == config_hash(renamed)
    assert config_hash(base) != config_hash(changed)


def test_round_trip_through_dict():
    cfg = load_job_config(None, ["data.factors=[1,2,4]", "train.epoch_patches=100"])
    assert job_config_from_dict(to_dict(cfg), "dict") == cfg
    assert apply_overrides({"a": {"b": 1}}, ["a.c=2"]) == {"a": {"b": 1, "c": 2}}


def test_a_grid_is_not_a_job_config_but_its_base_can_be_read(tmp_path):
    grid = tmp_path / "grid.yaml"
    grid.write_text("experiment: x\nbase: {model: {size_hidden: 8}}\naxes: {fold: [1]}\n")
    with pytest.raises(ConfigError, match=r"grid.yaml: is an experiment grid .* camvis-launch"):
        load_job_config(grid)
    assert load_job_config(grid, ["train.lr=0.01"], grid_base=True).model.size_hidden == 8
