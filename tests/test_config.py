"""Job configs: loading, overrides, and errors that name the file, the key and what was expected."""

import dataclasses
import re
import tracemalloc
from pathlib import Path

import pytest

from camvis.config import (
    MAX_BOOTSTRAP,
    MAX_YAML_NODES,
    JobConfig,
    apply_overrides,
    bootstrap_bytes,
    check_name,
    config_hash,
    experiment_dir,
    factors_double,
    job_config_from_dict,
    job_dir,
    load_job_config,
    load_yaml,
    non_finite,
    parse_override,
    parse_yaml,
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
    assert "train.lr must be in (0, 10], got -1.0" in message
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


def test_speed_ups_are_in_no_hash():
    """train.compile / train.fused_adam change how fast a job trains, not what: adding the keys changed no
    job's hash, and setting them changes none (a checkpoint resumes whatever they are)."""
    from camvis.config import TRAIN_SECTIONS, eval_hash, sections_hash, train_hash

    default = load_job_config(None)
    for overrides in (["train.compile=auto", "train.fused_adam=auto"], ["train.compile=true"],
                      ["train.compile=false", "train.fused_adam=true"], ["train.threads=1"], ["train.threads=auto"]):
        cfg = load_job_config(None, overrides)
        assert (config_hash(cfg), train_hash(cfg), eval_hash(cfg)) == \
            (config_hash(default), train_hash(default), eval_hash(default)), overrides
    assert train_hash(load_job_config(None, ["train.lr=0.01"])) != train_hash(default)
    before = to_dict(default)  # a config recorded before the keys existed (e.g. in an old checkpoint)
    for key in ("compile", "fused_adam", "threads"):
        del before["train"][key]
    del before["replicate"]
    assert sections_hash(before, TRAIN_SECTIONS) == train_hash(default)
    assert sections_hash(before, ("data", "model", "train", "eval")) == config_hash(default)
    # the defaults' hashes as camvis computed them before the keys (commit dfab7e1)
    assert (config_hash(default), train_hash(default)) == ("cffdcc7793c8", "2fd692303b82")


def test_threads_and_replicate_are_checked():
    assert load_job_config(None, ["train.threads=2"]).train.threads == 2
    for bad, message in ((["train.threads=0"], "train.threads must be 'auto' or an int >= 1, got 0"),
                         (["train.threads=many"], "train.threads: expected one of 'auto' or int"),
                         (["replicate=0"], "replicate must be >= 1, got 0"),
                         (["replicate=two"], "replicate: expected int")):
        with pytest.raises(ConfigError, match=re.escape(message)):
            load_job_config(None, bad)
    cfg = load_job_config(None, ["replicate=3"])
    assert cfg.replicate == 3 and config_hash(cfg) == config_hash(load_job_config(None))  # identity, not hashed
    assert job_config_from_dict(to_dict(cfg), "x").replicate == 3


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


# --------------------------------------------------------------------------- issue 9: names, values, YAML


def test_a_collected_error_carries_each_problem():
    with pytest.raises(ConfigError) as err:
        job_config_from_dict({"eval": {"confidence": 2.0}, "data": {"fold": 0}}, "x.yaml")
    assert err.value.problems == ["data.fold must be >= 1 (folds are 1-based), got 0",
                                  "eval.confidence must be in (0, 1), got 2.0"]
    assert str(err.value).startswith("x.yaml: 2 problems:\n  ")
    with pytest.raises(ConfigError) as one:
        job_config_from_dict({"data": {"fold": 0}}, "x.yaml")
    assert str(one.value) == f"x.yaml: {one.value.problems[0]}" and len(one.value.problems) == 1


@pytest.mark.parametrize("key", ["experiment", "name", "group"])
@pytest.mark.parametrize("value", ["../../x", "/abs/path", "..", ".hidden", "-rf", "a/b", "a\nb", "ab\n", "",
                                   "x" * 201])
def test_identity_names_are_file_system_safe(key, value):
    with pytest.raises(ConfigError, match=rf"^<o>: {key}: expected a file-system-safe name") as err:
        job_config_from_dict({key: value}, "<o>")
    assert "\n" not in str(err.value)
    assert check_name(key, "cat_fold1.v-2") == "cat_fold1.v-2"
    with pytest.raises(ConfigError, match=f"{key}: expected a file-system-safe name"):
        check_name(key, value)


def test_job_dir_and_experiment_dir_stay_under_the_outputs_root(tmp_path):
    outputs = tmp_path / "outputs"
    cfg = load_job_config(None, ["experiment=e", "name=j"])
    assert job_dir(cfg, outputs) == outputs / "e" / "j" and experiment_dir("e", outputs) == outputs / "e"
    (tmp_path / "elsewhere").mkdir()
    outputs.mkdir()
    (outputs / "e").symlink_to(tmp_path / "elsewhere")  # a planted link out of the root
    with pytest.raises(ConfigError, match=r"outputs/e/j: resolves to .*elsewhere/j, outside the outputs root"):
        job_dir(cfg, outputs)
    with pytest.raises(ConfigError, match="outside the outputs root"):
        experiment_dir("e", outputs)
    forged = dataclasses.replace(cfg, name="../../../x")  # a config built around validation
    with pytest.raises(ConfigError, match="name: expected a file-system-safe name"):
        job_dir(forged, outputs)
    linked_root = tmp_path / "link"
    linked_root.symlink_to(tmp_path / "elsewhere")  # the root itself may be a link (e.g. to scratch)
    assert job_dir(cfg, linked_root) == linked_root / "e" / "j"


@pytest.mark.parametrize("text, key", [
    ("train: {lr: .inf}", "train.lr"), ("train: {lr: -.Inf}", "train.lr"),
    ("eval: {confidence: .nan}", "eval.confidence"), ("train: {lr: 1.0e+999}", "train.lr"),
    ("train: {lr: inf}", "train.lr"), ("train: {weight_decay: '-inf'}", "train.weight_decay"),
    ("data: {factors: [2, .inf]}", "data.factors"),
])
def test_non_finite_numbers_are_refused(tmp_path, text, key):
    path = tmp_path / "job.yaml"
    path.write_text(text + "\n")
    with pytest.raises(ConfigError, match=rf"job.yaml: {re.escape(key)}(\[1\])?: expected a finite"):
        load_job_config(path)


def test_non_finite_anywhere_names_its_key_even_where_nothing_is_typed():
    assert non_finite({"a": [1, {"b": 2.5}], "c": {"d": [0.0, float("nan")]}})[0] == "c.d[1]"
    assert non_finite({"a": [1, "inf", 2.5]}) is None
    with pytest.raises(ConfigError, match=r"override 'train.lr=.nan': train.lr: expected a finite number, got nan"):
        parse_override("train.lr=.nan")


def test_bootstrap_is_capped_and_the_cap_is_documented():
    load_job_config(None, [f"eval.bootstrap={MAX_BOOTSTRAP}"])
    with pytest.raises(ConfigError, match=r"eval.bootstrap must be at most 1,000,000 resamples .* ~671 GiB"):
        load_job_config(None, ["eval.bootstrap=10000000000"])
    page = (Path(__file__).resolve().parents[1] / "docs" / "grids.md").read_text()  # "Refused before anything runs"
    assert f"{MAX_BOOTSTRAP:,}" in page


def test_bootstrap_memory_estimate_bounds_what_the_evaluation_allocates():
    """bootstrap_bytes must stay an upper bound of what evaluate keeps per resample (the resamples,
    their CIs and the bootstrap.csv frame), and not a wild one: measured with tracemalloc."""
    import numpy as np
    import pandas as pd

    from camvis import metrics

    rng = np.random.default_rng(0)
    scores, labels = rng.random(100), rng.random(100) > 0.5

    def peak(n: int) -> int:
        tracemalloc.start()
        boot = metrics.bootstrap(scores, labels, n=n, seed=0)  # chunks of equal size from n >= 80,000
        _ = {k: metrics.percentile_ci(v, 0.95) for k, v in boot.items()}
        _ = pd.DataFrame({"resample": np.arange(n), **boot})
        peak_bytes = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
        return peak_bytes

    growth = peak(400_000) - peak(100_000)
    assert bootstrap_bytes(300_000) / 3 <= growth <= bootstrap_bytes(300_000)


def test_duplicate_keys_are_refused_but_merge_keys_may_override(tmp_path):
    path = tmp_path / "dup.yaml"
    path.write_text("train: {lr: 0.1}\nmodel: {size_hidden: 8}\ntrain: {lr: 0.2}\n")
    with pytest.raises(ConfigError, match=r"dup.yaml: invalid YAML at line 3, column 1: duplicate key 'train' "
                                          r"\(first at line 1\)"):
        load_yaml(path)
    path.write_text("model: {size_hidden: 8, size_hidden: 16}\n")
    with pytest.raises(ConfigError, match="duplicate key 'size_hidden'"):
        load_yaml(path)
    path.write_text("shared: &s {lr: 0.1, seed: 3}\ntrain: {<<: *s, lr: 0.2}\n")
    assert load_yaml(path)["train"] == {"lr": 0.2, "seed": 3}


def test_dates_stay_text_so_a_date_for_a_number_is_a_type_error(tmp_path):
    assert parse_yaml("a: 2024-01-01\nb: 2001-12-14t21:59:43.10-05:00\n", "t") == {
        "a": "2024-01-01", "b": "2001-12-14t21:59:43.10-05:00"}
    with pytest.raises(ConfigError, match=r"train.lr: expected a finite float, got str '2024-01-01'"):
        load_job_config(None, ["train.lr=2024-01-01"])
    with pytest.raises(ConfigError, match=r"eval.seed: expected int, got str '2024-01-01'"):
        load_job_config(None, ["eval.seed=2024-01-01"])


def test_a_file_that_is_not_utf8_names_the_byte(tmp_path):
    path = tmp_path / "latin1.yaml"
    path.write_bytes("# café\ntrain: {lr: 0.1}\n".encode("latin-1"))
    with pytest.raises(ConfigError, match=r"latin1.yaml: not UTF-8 text \(byte 0xe9 at offset 5\)"):
        load_yaml(path)


def test_alias_bombs_and_recursive_aliases_are_capped():
    bomb = "a: &a [x, x, x, x, x, x, x, x, x, x]\n" + "".join(
        f"{chr(98 + i)}: &{chr(98 + i)} [{', '.join(['*' + chr(97 + i)] * 10)}]\n" for i in range(5))
    with pytest.raises(ConfigError, match=f"more than {MAX_YAML_NODES:,} nodes once its aliases are expanded"):
        parse_yaml(bomb, "bomb")  # 10^6 leaves: refused before anything copies them
    assert len(parse_yaml(bomb.rsplit("\n", 3)[0], "small")["c"]) == 10  # 10^3 leaves: fine
    with pytest.raises(ConfigError, match="recursive alias"):
        parse_yaml("a: &a [*a]", "loop")
    with pytest.raises(ConfigError, match="nested too deeply"):
        parse_yaml("[" * 5000 + "]" * 5000, "deep")


def test_keys_with_control_characters_stay_on_one_line():
    with pytest.raises(ConfigError) as err:
        job_config_from_dict({"model": {"a\nb": 1}}, "x.yaml")
    assert "\n" not in str(err.value) and "model.'a\\nb': unknown key" in str(err.value)


def test_to_dict_is_the_json_copy_of_asdict():
    """to_dict builds what json_copy(asdict(cfg)) gives, key order and types included (the config
    hash and config.yaml depend on both), however the config was built."""
    import json

    from camvis.config import DataConfig, EvalConfig, JobConfig, ModelConfig, TrainConfig, to_dict
    from camvis.io import json_copy

    configs = [JobConfig(), JobConfig(name="x", data=DataConfig(factors=(2, 4), fold=3)),
               JobConfig(train=TrainConfig(lr=1, epoch_patches=None, seed=7, device="cpu"),
                         model=ModelConfig(size_hidden=3, use_mlp=False), eval=EvalConfig(confidence=0.5)),
               JobConfig(data=DataConfig(factors=[2, 4]), train=TrainConfig(lr=float("inf")))]
    for cfg in configs:
        expected = json_copy(dataclasses.asdict(cfg))
        got = to_dict(cfg)
        assert json.dumps(got) == json.dumps(expected)  # values, their JSON types, key order
        assert got == expected and list(got) == list(expected)
    assert to_dict(configs[1].data) == {"store": "data/processed/demo.zarr", "fold": 3, "factors": [2, 4],
                                        "stage": None}


LOADER_DOCS = ["a: 2024-01-01", "a: 1e-4", "a: 0x1F", "a: 017", "a: yes", "a: ~", "a: [1, 2.5, '3']",
               "a: &x [1]\nb: *x", "<<: {a: 1}\nb: 2", "a: |\n  x\n", "? k\n: 2", "a: 1_000", "a: \u00e9\U0001F600",
               "- 1\n- {b: [c, {d: null}]}", "a: !!binary aGVsbG8=", "a: .inf"]


@pytest.mark.parametrize("text", LOADER_DOCS)
def test_libyaml_and_pure_python_loaders_read_the_same(text):
    import yaml

    from camvis import config as cfgmod

    if getattr(cfgmod, "StrictCLoader", None) is None:
        pytest.skip("PyYAML without libyaml: only the pure-Python loader")
    assert yaml.load(text, Loader=cfgmod.StrictCLoader) == yaml.load(text, Loader=cfgmod.StrictLoader)  # noqa: S506


@pytest.mark.parametrize("text", ["a: 1\nb: 2\na: 3", "a: [1, 2", "a: 'x", "a: \x07", "a: b: c", "a:\n\t- 1"])
def test_yaml_errors_are_the_pure_python_loaders(text):
    """What libyaml refuses is read again by the pure-Python loader: its message, line and column."""
    import yaml

    from camvis import config as cfgmod

    with pytest.raises(yaml.YAMLError) as python:
        yaml.load(text, Loader=cfgmod.StrictLoader)  # noqa: S506
    with pytest.raises(ConfigError) as info:
        parse_yaml(text, "g.yaml")
    assert str(info.value) == f"g.yaml: invalid YAML{cfgmod._yaml_where(python.value)}"
    assert "duplicate key 'a' (first at line 1)" in str(info.value) or not text.startswith("a: 1\n")
