"""Grid expansion, names, hashes, validation messages, overrides, selection and skip logic."""

from __future__ import annotations

import dataclasses
import json
import shutil
from pathlib import Path

import pytest
import yaml
import zarr

from camvis.config import config_hash
from camvis.errors import ConfigError
from camvis.cluster.grid import job_name, load_grid, select
from camvis.console import shape_text
from camvis.bookkeeping.jobfolder import is_finished
from camvis.cluster.plan import outputs_status, plan
from camvis.data.store_info import FORMAT_NAME, FORMAT_VERSION

CONFIGS = Path(__file__).resolve().parents[2] / "configs"
SHIPPED = {"demo.yaml": 8, "mymodel.yaml": 9, "cat_vs_align.yaml": 18, "all_architectures.yaml": 72}


def write(path: Path, grid: dict) -> Path:
    path.write_text(yaml.safe_dump(grid, sort_keys=False))
    return path


def fake_store(path: Path, views: list[str], factors: list[int] = [2, 4, 8]) -> str:
    """A real Zarr v3 group with the root attributes the launcher reads (no arrays needed)."""
    zarr.open_group(str(path), mode="w", attributes={
        "format": FORMAT_NAME, "format_version": FORMAT_VERSION, "views": views, "factors": factors})
    return str(path)


def small(tmp_path: Path, **changes) -> dict:
    grid = {
        "experiment": "exp",
        "folds": 3,
        "base": {"data": {"store": str(tmp_path / "missing.zarr"), "factors": [2, 4, 8]},
                 "model": {"size_hidden": 8}},
        "axes": {"fold": "all", "group": {"cat": {"model.align_features": False},
                                          "align": {"model": {"align_features": True}}}},
    }
    grid.update(changes)
    return grid


def error_of(path: Path, overrides=()) -> str:
    with pytest.raises(ConfigError) as info:
        load_grid(path, overrides)
    return str(info.value)


# --------------------------------------------------------------------------- shipped grids


@pytest.mark.parametrize("name", sorted(SHIPPED))
def test_every_shipped_grid_loads_and_validates(name: str) -> None:
    grid = load_grid(CONFIGS / name)
    assert len(grid.jobs) == SHIPPED[name]
    assert len(set(grid.names)) == len(grid.names)
    assert all(j.config.experiment == grid.experiment and j.config.name == j.name for j in grid.jobs)


def test_paper_grids_use_camvis2_settings() -> None:
    for name in ("mymodel.yaml", "cat_vs_align.yaml", "all_architectures.yaml"):
        grid = load_grid(CONFIGS / name)
        assert {j.fold for j in grid.jobs} == set(range(1, 10))
        assert grid.slurm.gpus_per_node == 1 and grid.slurm.ntasks == 1
        for job in grid.jobs:
            assert job.config.data.store == "data/processed/camvis2.zarr"
            assert job.config.data.factors == (2, 4, 8, 16, 32)
            assert job.config.model.size_hidden == 128


def test_all_architectures_groups_match_camvis2_table() -> None:
    from camvis.model import ARCHITECTURES

    grid = load_grid(CONFIGS / "all_architectures.yaml")
    for job in grid.jobs:
        m = job.config.model
        flags = {"share_weights": m.share_weights, "use_mlp": m.use_mlp, "align_features": m.align_features}
        assert ARCHITECTURES[job.group].flags() == flags, job.name


def test_mymodel_is_share_mlp_cat() -> None:
    m = load_grid(CONFIGS / "mymodel.yaml").jobs[0].config.model
    assert (m.share_weights, m.use_mlp, m.align_features) == (True, True, False)


# --------------------------------------------------------------------------- expansion


def test_expansion_names_order_and_hashes(tmp_path: Path) -> None:
    grid = load_grid(write(tmp_path / "g.yaml", small(tmp_path)))
    assert grid.names == [f"{g}_fold{k}" for g in ("cat", "align") for k in (1, 2, 3)]
    for job in grid.jobs:
        assert job.hash == config_hash(job.config)
        assert job.config.data.fold == job.fold and job.config.group == job.group
    assert [j.config.model.align_features for j in grid.jobs] == [False] * 3 + [True] * 3
    again = load_grid(tmp_path / "g.yaml")
    assert [j.hash for j in again.jobs] == [j.hash for j in grid.jobs]


def test_hash_ignores_names_but_follows_settings(tmp_path: Path) -> None:
    a = load_grid(write(tmp_path / "a.yaml", small(tmp_path)))
    b = load_grid(write(tmp_path / "b.yaml", small(tmp_path, experiment="other")))
    assert [j.hash for j in a.jobs] == [j.hash for j in b.jobs]
    c = load_grid(tmp_path / "a.yaml", ["train.lr=1e-4"])
    assert all(x.hash != y.hash for x, y in zip(a.jobs, c.jobs))
    assert c.jobs[0].config.train.lr == pytest.approx(1e-4)


def test_plain_axes_cartesian_product_and_names(tmp_path: Path) -> None:
    grid_dict = small(tmp_path)
    grid_dict["axes"] = {"fold": [1, 3], "train.lr": [1e-3, 1e-4], "train.batch_size": [8, 16],
                         "eval.batch_size": [64]}
    grid = load_grid(write(tmp_path / "g.yaml", grid_dict))
    assert len(grid.jobs) == 2 * 2 * 2
    # the batch sizes clash: dotted labels
    assert grid.jobs[0].name == "default_fold1_lr0.001_train-batch_size8_eval-batch_size64"
    assert grid.jobs[0].axes == {"train.lr": 1e-3, "train.batch_size": 8, "eval.batch_size": 64}
    assert {(j.config.train.lr, j.config.train.batch_size) for j in grid.jobs if j.fold == 3} == \
        {(1e-3, 8), (1e-3, 16), (1e-4, 8), (1e-4, 16)}


def test_replicates_train_each_point_with_successive_seeds(tmp_path: Path) -> None:
    grid_dict = small(tmp_path)
    grid_dict["replicates"] = 3
    grid_dict["base"].setdefault("train", {})["seed"] = 10
    grid_dict["axes"] = {"fold": [1, 3], "group": {"a": {"model.use_mlp": True}, "b": {"train.seed": 5}}}
    grid = load_grid(write(tmp_path / "g.yaml", grid_dict))
    assert grid.replicates == 3 and len(grid.jobs) == 2 * 2 * 3
    assert [j.name for j in grid.jobs[:3]] == ["a_fold1_rep1", "a_fold1_rep2", "a_fold1_rep3"]
    assert [(j.replicate, j.config.replicate, j.config.train.seed) for j in grid.jobs[:3]] == \
        [(1, 1, 10), (2, 2, 11), (3, 3, 12)]
    assert [j.config.train.seed for j in grid.jobs if j.group == "b" and j.fold == 3] == [5, 6, 7]  # the group's seed
    assert len({j.hash for j in grid.jobs}) == len(grid.jobs)  # another seed, another training
    assert all(j.axes == {} for j in grid.jobs)  # the aggregate pools replicates: no axis of their own
    assert [j.name for j in select(grid.jobs, ["replicate=2", "group=b"])] == ["b_fold1_rep2", "b_fold3_rep2"]
    assert shape_text(grid.jobs) == "2 groups x 2 folds x 3 replicates"
    # the same as an override; one replicate keeps the plain names and the base seed
    again = load_grid(write(tmp_path / "h.yaml", {**grid_dict, "replicates": 1}), ["replicates=2"])
    assert again.names[:2] == ["a_fold1_rep1", "a_fold1_rep2"]
    one = load_grid(write(tmp_path / "i.yaml", {**grid_dict, "replicates": 1}))
    assert one.names[0] == "a_fold1" and one.jobs[0].config.train.seed == 10 and one.jobs[0].replicate == 1
    assert shape_text(one.jobs) == "2 groups x 2 folds"


def test_a_train_seed_axis_means_replicates(tmp_path: Path) -> None:
    grid_dict = small(tmp_path)
    grid_dict["axes"] = {"fold": [1], "train.seed": [7, 3], "train.lr": [1e-3]}
    grid = load_grid(write(tmp_path / "g.yaml", grid_dict))
    assert grid.names == ["default_fold1_lr0.001_rep1", "default_fold1_lr0.001_rep2"]
    assert [(j.replicate, j.config.train.seed) for j in grid.jobs] == [(1, 7), (2, 3)]
    assert grid.jobs[0].axes == {"train.lr": 1e-3}


@pytest.mark.parametrize("replicates, axes, message", [
    (0, {"fold": [1]}, "replicates: expected the number of training seeds"),
    ("3", {"fold": [1]}, "replicates: expected the number of training seeds"),
    (True, {"fold": [1]}, "replicates: expected the number of training seeds"),
    (2, {"fold": [1], "train.seed": [1, 2]}, "replicates: 2, but axes.train.seed also sets the seeds"),
])
def test_bad_replicates_name_the_key(tmp_path: Path, replicates, axes, message) -> None:
    grid_dict = small(tmp_path)
    grid_dict["replicates"], grid_dict["axes"] = replicates, axes
    with pytest.raises(ConfigError, match=message):
        load_grid(write(tmp_path / "g.yaml", grid_dict))


def test_job_name_is_file_system_safe() -> None:
    assert job_name("cat", 3) == "cat_fold3"
    assert job_name("g", 1, {"factors": [2, 4], "flag": True, "x": "a/b c"}) == "g_fold1_factors2-4_flagtrue_xa-b-c"


def test_without_axes_one_job_from_the_base(tmp_path: Path) -> None:
    grid_dict = small(tmp_path)
    del grid_dict["axes"]
    grid_dict["base"]["data"]["fold"] = 2
    grid = load_grid(write(tmp_path / "g.yaml", grid_dict))
    assert grid.names == ["default_fold2"]


def test_fold_all_reads_the_store_views(tmp_path: Path) -> None:
    store = fake_store(tmp_path / "s.zarr", ["1148_1", "1148_2", "1206_4", "1206_5"])
    grid_dict = small(tmp_path)
    del grid_dict["folds"]
    grid_dict["base"]["data"]["store"] = store
    grid = load_grid(write(tmp_path / "g.yaml", grid_dict))
    assert [j.fold for j in grid.jobs if j.group == "cat"] == [1, 2, 3, 4]
    assert [j.view for j in grid.jobs if j.group == "cat"] == ["1148_1", "1148_2", "1206_4", "1206_5"]
    assert grid.views == ("1148_1", "1148_2", "1206_4", "1206_5")


def test_fold_all_without_store_needs_folds_hint(tmp_path: Path) -> None:
    message = error_of(write(tmp_path / "g.yaml", {k: v for k, v in small(tmp_path).items() if k != "folds"}))
    assert "axes.fold: 'all' needs the store's views" in message and "folds: N" in message


def test_folds_hint_must_match_store(tmp_path: Path) -> None:
    grid_dict = small(tmp_path, folds=9)
    grid_dict["base"]["data"]["store"] = fake_store(tmp_path / "s.zarr", ["a_1", "b_2"])
    assert "folds: 9, but store" in error_of(write(tmp_path / "g.yaml", grid_dict))


def test_folds_outside_the_store_range(tmp_path: Path) -> None:
    grid_dict = small(tmp_path)
    grid_dict["base"]["data"]["store"] = fake_store(tmp_path / "s.zarr", ["a_1", "b_2", "c_3"])
    grid_dict["axes"]["fold"] = [1, 4]
    message = error_of(write(tmp_path / "g.yaml", grid_dict))
    assert "axes.fold: fold(s) [4] out of range" in message and "3 views" in message


def test_factors_must_be_store_levels(tmp_path: Path) -> None:
    grid_dict = small(tmp_path)
    grid_dict["base"]["data"]["store"] = fake_store(tmp_path / "s.zarr", ["a_1", "b_2", "c_3"], [2, 4])
    message = error_of(write(tmp_path / "g.yaml", grid_dict))
    assert "jobs cat_fold1 and 5 more: data.factors [2, 4, 8]: [8] not levels of store" in message
    assert "\n" not in message  # one problem of the base, reported once rather than once per job


def test_not_a_store(tmp_path: Path) -> None:
    (tmp_path / "junk.zarr").mkdir()
    grid_dict = small(tmp_path)
    grid_dict["base"]["data"]["store"] = str(tmp_path / "junk.zarr")
    assert "is not a Zarr v3 store" in error_of(write(tmp_path / "g.yaml", grid_dict))


def test_store_of_another_format_version(tmp_path: Path, synth_store) -> None:
    path = Path(shutil.copytree(synth_store.path, tmp_path / "old.zarr"))
    meta = json.loads((path / "zarr.json").read_text())
    meta["attributes"]["format_version"] = 99
    (path / "zarr.json").write_text(json.dumps(meta))
    grid_dict = small(tmp_path)
    grid_dict["base"]["data"]["store"] = str(path)
    message = error_of(write(tmp_path / "g.yaml", grid_dict))
    assert f"{path} has store format version 99, this camvis reads version {FORMAT_VERSION}" in message
    assert "camvis-data build" in message and "--force" in message


# --------------------------------------------------------------------------- validation


def test_group_key_typo_names_file_group_and_suggestion(tmp_path: Path) -> None:
    grid_dict = small(tmp_path)
    grid_dict["axes"]["group"]["cat"] = {"model.align_feature": False}
    path = write(tmp_path / "x.yaml", grid_dict)
    assert error_of(path).startswith(
        f"{path}: axes.group.cat: model.align_feature: unknown key (did you mean model.align_features?)")


def test_unknown_top_level_and_slurm_keys(tmp_path: Path) -> None:
    message = error_of(write(tmp_path / "g.yaml", small(tmp_path, exprimnt=1, slurm={"partiton": "gpu"})))
    assert "2 problems" in message
    assert "exprimnt: unknown key (did you mean experiment?)" in message
    assert "slurm.partiton: unknown key (did you mean slurm.partition?)" in message


@pytest.mark.parametrize("changes, expected", [
    ({"slurm": {"time": "1h"}}, "slurm.time: expected int, got str '1h'"),
    ({"slurm": {"gpus_per_node": -1}}, "slurm.gpus_per_node: must be >= 0"),
    ({"slurm": {"array_parallelism": 0}}, "slurm.array_parallelism: must be >= 1"),
    ({"slurm": {"gpus_per_node": 2, "tasks_per_node": 1}}, "one task per GPU"),
    ({"slurm": {"additional": {"x": [1]}}}, "slurm.additional.x: expected a scalar"),
    ({"axes": {}}, "axes: empty"),
    ({"axes": {"fold": []}}, "axes.fold: expected 'all' or a non-empty list"),
    ({"axes": {"group": {}}}, "axes.group: expected a non-empty mapping"),
    ({"axes": {"train.lr": []}}, "axes.train.lr: expected a non-empty list"),
    ({"axes": {"train.lr": 1e-3}}, "axes.train.lr: expected a non-empty list"),
    ({"axes": {"train.lrr": [1]}}, "axes: train.lrr: unknown key (did you mean train.lr?)"),
    ({"axes": {"group": {"a b": {}}}}, "axes.group.a b: expected a file-system-safe name"),
    ({"axes": {"group": {"x": {"data.fold": 2}}}}, "a group cannot set it"),
    ({"axes": {"train.batch_size": [8, "big"]}}, "axes.train.batch_size[1]: train.batch_size: expected int"),
    ({"experiment": "a/b"}, "experiment: expected a file-system-safe name"),
    ({"folds": 0}, "folds: expected the number of views"),
    ({"base": {"name": "x"}}, "base.name: set by the grid"),
    ({"base": {"model": {"size_hiden": 3}}}, "base: model.size_hiden: unknown key (did you mean model.size_hidden?)"),
    ({"slurm": {"time": 525_601}}, "slurm.time: at most 525600 minutes"),
    ({"slurm": {"aggregate_time": 10**9}}, "slurm.aggregate_time: at most 525600 minutes"),
    ({"slurm": {"time": 1, "signal_delay_s": 60}}, "slurm.signal_delay_s: must be below the time limit"),
    ({"slurm": {"time": 2000, "signal_delay_s": 65_536}}, "slurm.signal_delay_s: at most 65535 s"),
    ({"slurm": {"partition": "gpu\n#SBATCH --x"}}, "slurm.partition: whitespace or control characters"),
    ({"slurm": {"additional": {"comment": "a b"}}}, "slurm.additional.comment: whitespace or control"),
    ({"slurm": {"additional": {"Mail Type": "END"}}}, "slurm.additional: expected sbatch option names"),
    ({"experiment": "x" * 201}, "experiment: expected a file-system-safe name"),
    ({"experiment": "ok\n"}, "experiment: expected a file-system-safe name"),
])
def test_validation_errors(tmp_path: Path, changes: dict, expected: str) -> None:
    path = write(tmp_path / "g.yaml", small(tmp_path, **changes))
    message = error_of(path)
    assert message.startswith(str(path)) and expected in message


def test_slurm_limits_at_their_bounds_are_accepted(tmp_path: Path) -> None:
    grid = load_grid(write(tmp_path / "g.yaml", small(tmp_path, slurm={
        "time": 525_600, "aggregate_time": 525_600, "signal_delay_s": 65_535,
        "additional": {"mail-type": "END,FAIL", "gres_flags": "enforce-binding"}})))
    assert (grid.slurm.time, grid.slurm.signal_delay_s) == (525_600, 65_535)
    grid = load_grid(write(tmp_path / "g.yaml", small(tmp_path, slurm={"time": 2, "signal_delay_s": 119})))
    assert grid.slurm.signal_delay_s == 119


def test_sbatch_parameters_refuse_injected_text_however_the_grid_was_built(tmp_path: Path) -> None:
    from camvis.cluster.sbatch import aggregate_parameters, dry_run_scripts, executor_parameters
    from camvis.cluster.slurm_settings import SlurmSettings

    grid = load_grid(write(tmp_path / "g.yaml", small(tmp_path)))
    assert "afterany:<array id>" in dry_run_scripts(grid, list(grid.jobs), tmp_path / "jobs")["aggregate"]
    for settings in (SlurmSettings(account="lab\nsrun x"), SlurmSettings(additional={"comment": "a\rb"})):
        forged = dataclasses.replace(grid, slurm=settings)  # around parse_slurm_settings
        with pytest.raises(ConfigError, match="whitespace or control characters cannot go into an #SBATCH line"):
            executor_parameters(forged, 2)
    with pytest.raises(ConfigError, match="slurm_partition: whitespace"):
        aggregate_parameters(dataclasses.replace(grid, slurm=SlurmSettings(aggregate_partition="cpu --x")), "1")


def test_a_plain_axis_may_not_set_what_a_group_sets(tmp_path: Path) -> None:
    grid_dict = small(tmp_path)
    grid_dict["axes"]["group"]["cat"] = {"model.align_features": False, "train": {"lr": 0.01}}
    grid_dict["axes"]["train.lr"] = [1e-3, 1e-4]
    message = error_of(write(tmp_path / "g.yaml", grid_dict))
    assert message.endswith("axes.train.lr: also set by axes.group.cat; the plain axis would override the group's "
                            "value (the groups would train the same model): set train.lr in one place")
    del grid_dict["axes"]["group"]["cat"]["train"]  # the same axis beside groups that leave lr alone: fine
    assert len(load_grid(write(tmp_path / "g.yaml", grid_dict)).jobs) == 2 * 3 * 2


def test_a_duplicate_group_is_an_error_not_a_dropped_group(tmp_path: Path) -> None:
    text = yaml.safe_dump(small(tmp_path), sort_keys=False)
    text = text.replace("    align:\n", "    cat:\n      model.use_mlp: false\n    align:\n")
    path = tmp_path / "g.yaml"
    path.write_text(text)
    assert "duplicate key 'cat' (first at line" in error_of(path)


def test_grid_lists_every_problem_of_a_group_from_the_config_error(tmp_path: Path) -> None:
    grid_dict = small(tmp_path)
    grid_dict["axes"]["group"]["cat"] = {"train.batch_size": 0, "eval.confidence": 2.0}
    message = error_of(write(tmp_path / "g.yaml", grid_dict))
    assert message.splitlines()[1:] == ["  axes.group.cat: train.batch_size must be >= 1, got 0",
                                        "  axes.group.cat: eval.confidence must be in (0, 1), got 2.0"]


def test_align_needs_doubling_factors(tmp_path: Path) -> None:
    grid_dict = small(tmp_path)
    grid_dict["base"]["data"]["factors"] = [2, 6]
    message = error_of(write(tmp_path / "g.yaml", grid_dict))
    assert "axes.group.align: model.align_features needs data.factors that are consecutive powers of 2" in message
    assert "axes.group.cat" not in message


def test_missing_experiment(tmp_path: Path) -> None:
    grid_dict = small(tmp_path)
    del grid_dict["experiment"]
    assert "experiment: missing" in error_of(write(tmp_path / "g.yaml", grid_dict))


# --------------------------------------------------------------------------- overrides and profiles


def test_overrides_go_to_base_and_slurm(tmp_path: Path) -> None:
    path = write(tmp_path / "g.yaml", small(tmp_path))
    grid = load_grid(path, ["train.max_epochs=3", "slurm.time=15", "slurm.additional.reservation=r1",
                            "experiment=renamed", "base.model.size_hidden=4"])
    assert {j.config.train.max_epochs for j in grid.jobs} == {3}
    assert {j.config.model.size_hidden for j in grid.jobs} == {4}
    assert grid.slurm.time == 15 and grid.slurm.additional == {"reservation": "r1"}
    assert grid.experiment == "renamed" and grid.jobs[0].config.experiment == "renamed"
    assert grid.overrides == ("train.max_epochs=3", "slurm.time=15", "slurm.additional.reservation=r1",
                              "experiment=renamed", "base.model.size_hidden=4")


@pytest.mark.parametrize("override, expected", [
    ("train.lrr=1", "train.lrr: unknown key (did you mean train.lr?)"),
    ("lr=1e-4", "lr: unknown key (did you mean train.lr?)"),
    ("data.fold=2", "select jobs with --only instead (e.g. --only fold=2)"),
    ("model.align_features=true", "--only group=cat"),
    ("slurm.tme=3", "slurm.tme: unknown key (did you mean slurm.time?)"),
    ("train.max_epochs=many", "train.max_epochs: expected int"),
    ("novalue", "expected key=value"),
])
def test_bad_overrides(tmp_path: Path, override: str, expected: str) -> None:
    assert expected in error_of(write(tmp_path / "g.yaml", small(tmp_path)), [override])


def test_site_profile_sits_under_the_grid(tmp_path: Path) -> None:
    profile = write(tmp_path / "site.yaml", {"slurm": {"partition": "gpu", "account": "lab", "time": 5,
                                                       "additional": {"reservation": "r"}}})
    path = write(tmp_path / "g.yaml", small(tmp_path, slurm={"time": 30, "additional": {"mail-type": "END"}}))
    grid = load_grid(path, ["slurm.account=other"], profile=profile)
    assert (grid.slurm.partition, grid.slurm.account, grid.slurm.time) == ("gpu", "other", 30)
    assert grid.slurm.additional == {"reservation": "r", "mail-type": "END"}
    with pytest.raises(ConfigError, match="site profile holds one `slurm:` mapping"):
        load_grid(path, profile=write(tmp_path / "bad.yaml", {"base": {}}))


def test_setup_lines_site_first_then_grid(tmp_path: Path) -> None:
    profile = write(tmp_path / "site.yaml", {"slurm": {"setup": ["module load cuda"]}})
    path = write(tmp_path / "g.yaml", small(tmp_path, slurm={"setup": ["source .venv/bin/activate"]}))
    assert load_grid(path, profile=profile).slurm.setup == ("module load cuda", "source .venv/bin/activate")
    assert load_grid(path).slurm.setup == ("source .venv/bin/activate",)


@pytest.mark.parametrize("setup, expected", [
    (["echo a\necho b"], "slurm.setup[0]: a newline"),
    (["ok", "x\x1b[2J"], "slurm.setup[1]: a control character"),
    ([3], "slurm.setup: expected a list of str, got list [3]"),
])
def test_bad_setup_lines(tmp_path: Path, setup: object, expected: str) -> None:
    assert expected in error_of(write(tmp_path / "g.yaml", small(tmp_path, slurm={"setup": setup})))


def test_one_setup_line_may_be_given_as_text(tmp_path: Path) -> None:
    """Like every list key (data.factors: 4 is [4]), a single line needs no list."""
    path = write(tmp_path / "g.yaml", small(tmp_path, slurm={"setup": "module load x"}))
    assert load_grid(path).slurm.setup == ("module load x",)


def test_example_site_profile_is_valid(tmp_path: Path) -> None:
    profile = CONFIGS.parent / "slurm" / "profiles" / "example-site.yaml"
    grid = load_grid(CONFIGS / "cat_vs_align.yaml", profile=profile)
    assert grid.slurm.partition


# --------------------------------------------------------------------------- selection


def test_select(tmp_path: Path) -> None:
    jobs = load_grid(write(tmp_path / "g.yaml", small(tmp_path))).jobs
    assert [j.name for j in select(jobs, ["group=cat", "fold=3"])] == ["cat_fold3"]
    assert [j.name for j in select(jobs, ["fold=1,3", "group=align"])] == ["align_fold1", "align_fold3"]
    assert [j.name for j in select(jobs, ["name=cat_fold2", "name=align_fold2"])] == ["cat_fold2", "align_fold2"]
    assert len(select(jobs, [])) == 6
    assert select(jobs, ["group=cat", "name=align_fold1"]) == []  # values the grid has, no job with both
    with pytest.raises(ConfigError, match="did you mean group"):
        select(jobs, ["grop=cat"])


@pytest.mark.parametrize("only, named", [(["fold=1,x"], "fold=x"), (["group=nope"], "group=nope"),
                                         (["fold=1", "fold=9"], "fold=9"), (["name=cat_fold1,a,b"], "name=a,b")])
def test_select_refuses_a_value_the_grid_does_not_have(tmp_path: Path, only: list[str], named: str) -> None:
    """--only fold=1,x once dropped the x silently: a typo ran another subset than asked."""
    jobs = load_grid(write(tmp_path / "g.yaml", small(tmp_path))).jobs
    with pytest.raises(ConfigError, match=f"--only {named}: the grid has no job with"):
        select(jobs, only)


def test_select_by_plain_axis(tmp_path: Path) -> None:
    grid_dict = small(tmp_path)
    grid_dict["axes"]["train.lr"] = [0.001, 0.0001]
    jobs = load_grid(write(tmp_path / "g.yaml", grid_dict)).jobs
    assert len(select(jobs, ["lr=0.0001"])) == 6
    assert len(select(jobs, ["train.lr=0.001", "group=cat"])) == 3


# --------------------------------------------------------------------------- skip logic


def finish(outputs: Path, job, config_hash_: str) -> None:
    directory = outputs / job.config.experiment / job.name
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "scores.json").write_text(json.dumps({"config_hash": config_hash_, "job": job.name}))


def test_skip_finished_resubmit_stale_failed_incomplete(tmp_path: Path) -> None:
    outputs = tmp_path / "outputs"
    jobs = load_grid(write(tmp_path / "g.yaml", small(tmp_path))).jobs
    finished, stale, failed, incomplete, fresh, queued = jobs
    finish(outputs, finished, finished.hash)
    finish(outputs, stale, "0123456789ab")
    (outputs / "exp" / failed.name).mkdir(parents=True)
    (outputs / "exp" / failed.name / "error.txt").write_text("Traceback ...")
    (outputs / "exp" / incomplete.name).mkdir(parents=True)
    (outputs / "exp" / incomplete.name / "checkpoint.pt").write_bytes(b"x")
    decisions = plan(jobs, outputs, active={queued.name: "12_5 RUNNING"})
    by_name = {d.job.name: d for d in decisions}
    assert [d.submit for d in decisions] == [False, True, True, True, True, False]
    assert by_name[finished.name].status == "finished" and finished.hash in by_name[finished.name].reason
    assert by_name[stale.name].status == "stale" and "hash 0123456789ab" in by_name[stale.name].reason
    assert by_name[failed.name].status == "failed"
    assert by_name[incomplete.name].status == "incomplete" and "checkpoint" in by_name[incomplete.name].reason
    assert by_name[fresh.name].status == "new"
    assert by_name[queued.name].status == "active" and "12_5 RUNNING" in by_name[queued.name].reason


def test_force_resubmits_finished_but_never_active(tmp_path: Path) -> None:
    outputs = tmp_path / "outputs"
    jobs = load_grid(write(tmp_path / "g.yaml", small(tmp_path))).jobs[:2]
    for job in jobs:
        finish(outputs, job, job.hash)
    decisions = plan(jobs, outputs, force=True, active={jobs[1].name: "3_1 PENDING"})
    assert [(d.submit, d.status) for d in decisions] == [(True, "forced"), (False, "active")]


def test_scores_without_hash_is_resubmitted(tmp_path: Path) -> None:
    # The same rule as camvis-status (jobfolder.is_finished): no hash, not this config's scores.
    outputs = tmp_path / "outputs"
    job = load_grid(write(tmp_path / "g.yaml", small(tmp_path))).jobs[0]
    (outputs / "exp" / job.name).mkdir(parents=True)
    (outputs / "exp" / job.name / "scores.json").write_text(json.dumps({"metrics": {"acc": 0.9}}))
    assert outputs_status(job, outputs)[0] == "stale"
    assert not is_finished(json.loads((outputs / "exp" / job.name / "scores.json").read_text()), job.hash)


def test_unreadable_scores_is_resubmitted(tmp_path: Path) -> None:
    outputs = tmp_path / "outputs"
    job = load_grid(write(tmp_path / "g.yaml", small(tmp_path))).jobs[0]
    (outputs / "exp" / job.name).mkdir(parents=True)
    (outputs / "exp" / job.name / "scores.json").write_text("{not json")
    assert outputs_status(job, outputs)[0] == "stale"


# --------------------------------------------------------------------------- fast expansion


def reference_expansion(grid) -> list:
    """Each job's config as the whole validation of its merged raw config gives it (the rule before
    grid points were derived from their group's config)."""
    from camvis import config as cfgmod
    from camvis.cluster import grid as grid_mod

    raw = cfgmod.load_yaml(grid.path)
    raw = grid_mod.apply_grid_overrides(raw, grid.overrides, str(grid.path))
    base = {k: v for k, v in (raw.get("base") or {}).items()}
    groups = (raw.get("axes") or {}).get("group") or {"default": {}}
    expected = []
    for job in grid.jobs:
        merged = grid_mod._merged(base, {**grid_mod._flatten(groups[job.group] or {}), **job.axes,
                                         "data.fold": job.fold})
        merged.update(experiment=grid.experiment, name=job.name, group=job.group)
        expected.append(cfgmod.job_config_from_dict(merged, "reference"))
    return expected


@pytest.mark.parametrize("name", sorted(SHIPPED))
def test_shipped_grids_expand_to_the_fully_validated_configs(name: str) -> None:
    grid = load_grid(CONFIGS / name)
    expected = reference_expansion(grid)
    assert [j.config for j in grid.jobs] == expected
    assert [j.hash for j in grid.jobs] == [config_hash(c) for c in expected]


def test_derived_configs_coerce_like_the_full_validation(tmp_path: Path) -> None:
    """Ints where floats are expected, YAML's "1e-4" strings, lists for tuples, a group on every
    section: each grid point equal (types included) to its whole validation."""
    grid_dict = small(tmp_path)
    grid_dict["base"]["train"] = {"lr": "1e-3", "min_lr": 0}
    grid_dict["axes"] = {"fold": [1, 3], "train.lr": [1, "1e-4", 0.5], "data.factors": [[2, 4, 8], [2, 4]],
                         "group": {"a": {"model.use_mlp": False, "eval.bootstrap": 7, "train.weight_decay": 1},
                                   "b": {"train.epoch_patches": 64}}}
    grid = load_grid(write(tmp_path / "g.yaml", grid_dict), ["eval.confidence=0.9"])
    expected = reference_expansion(grid)
    assert len(grid.jobs) == 2 * 2 * 3 * 2
    for job, cfg in zip(grid.jobs, expected):
        assert job.config == cfg and job.hash == config_hash(cfg)
        assert dataclasses.asdict(job.config) == dataclasses.asdict(cfg)
        assert type(job.config.train.lr) is float and type(job.config.data.factors) is tuple


def test_a_combination_breaking_a_cross_field_rule_names_its_jobs(tmp_path: Path) -> None:
    """Each axis value is valid on the base; their combination is checked per grid point."""
    grid_dict = small(tmp_path)
    grid_dict["axes"]["data.factors"] = [[2, 4, 8], [2, 8]]
    text = error_of(write(tmp_path / "g.yaml", grid_dict))
    assert "job align_fold1_factors2-8: model.align_features needs data.factors that are consecutive powers of 2" in text
    assert "cat_fold1_factors2-8:" not in text and "factors2-4-8" not in text


def test_an_axis_value_breaking_a_rule_names_the_value(tmp_path: Path) -> None:
    grid_dict = small(tmp_path)
    grid_dict["axes"]["train.lr"] = [1e-3, 20, "fast"]
    text = error_of(write(tmp_path / "g.yaml", grid_dict))
    assert "axes.train.lr[1]: train.lr must be in (0, 10], got 20.0" in text
    assert "axes.train.lr[2]: train.lr: expected a finite float, got str 'fast'" in text
    assert "axes.train.lr[0]" not in text
