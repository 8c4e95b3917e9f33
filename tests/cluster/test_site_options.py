"""One set of site options (camvis.cluster.site_options), list overrides (key=[...] replaces, key+=[...]
appends), camvis-launch --smoke's grid, and status/logs/aggregate of an experiment that does not exist."""

from __future__ import annotations

import argparse
from pathlib import Path

import pytest

from camvis.cli import launch as launch_cli
from camvis.cli import status as status_cli
from camvis.cluster import launch as launch_mod
from camvis.cluster import site_options
from camvis.config import apply_overrides
from camvis.errors import ConfigError
from test_launch import DEMO, demo_store, in_demo_root  # noqa: F401 (fixtures: the demo store, run beside it)
from test_monitor import EXP, make_experiment

PROFILE = Path(__file__).parents[2] / "slurm" / "profiles" / "example-site.yaml"


def setup_lines(script: str) -> list[str]:
    lines = script.split("# setup\n", 1)[1].split("\n\n", 1)[0].splitlines()
    return [line for line in lines if not line.startswith("export OMP_NUM_THREADS")]


def dry(tmp_path: Path, *overrides: str, profile: Path | None = PROFILE, **kw) -> launch_mod.LaunchResult:
    return launch_mod.launch(DEMO, list(overrides), dry_run=True, outputs=tmp_path / "o", jobs_dir=tmp_path / "j",
                             profile=profile, **kw)


def test_list_override_replaces_and_plus_appends(tmp_path: Path) -> None:
    assert setup_lines(dry(tmp_path).scripts["array"]) == ["module load cuda/12.4"]  # the profile's line
    replaced = dry(tmp_path, "slurm.setup=[echo mine]").scripts["array"]
    assert setup_lines(replaced) == ["echo mine"]  # = replaces the whole list, the profile's line too
    appended = dry(tmp_path, "slurm.setup+=[echo a, echo b]", "slurm.setup+=echo c").scripts["array"]
    assert setup_lines(appended) == ["module load cuda/12.4", "echo a", "echo b", "echo c"]
    merged = dry(tmp_path, "slurm.additional+={reservation: r1}").scripts["array"]
    assert "#SBATCH --reservation=r1\n" in merged and "#SBATCH --mail-type=FAIL\n" in merged  # the profile's kept
    only = dry(tmp_path, "slurm.additional={reservation: r1}").scripts["array"]
    assert "#SBATCH --reservation=r1\n" in only and "mail-type" not in only


def test_plus_on_a_scalar_or_mismatch_is_one_error() -> None:
    with pytest.raises(ConfigError, match=r"\+= adds items to a list .* train.lr is float"):
        apply_overrides({"train": {"lr": 0.1}}, ["train.lr+=[1]"])
    assert apply_overrides({}, ["data.factors+=[2, 4]"]) == {"data": {"factors": [2, 4]}}


def test_launch_flags_are_overrides_under_key_value(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    args = ["--dry-run", "--profile", str(PROFILE), "--partition", "p1", "--time", "7", "--mem-gb", "3",
            "--setup", "echo flag", "--qos", "q", "--account", "acc", "--outputs", str(tmp_path / "o"),
            "--jobs-dir", str(tmp_path / "j"), str(DEMO), "slurm.qos=q2"]
    assert launch_cli.main(args) == 0
    out = capsys.readouterr().out
    for line in ("--partition=p1", "--time=7", "--mem=3GB", "--account=acc", "--qos=q2"):
        assert f"#SBATCH {line}\n" in out, line
    assert "module load cuda/12.4\nexport OMP_NUM_THREADS=$SLURM_CPUS_PER_TASK\necho flag\n" in out


def test_site_settings_resolver(tmp_path: Path) -> None:
    parser = argparse.ArgumentParser(parents=[site_options.site_parser()])
    s = site_options.site_settings(parser.parse_args(["--profile", str(PROFILE), "--setup", "x", "--time", "5"]),
                                   time=60)
    assert (s.partition, s.account, s.time) == ("gpu", "my-lab", 5)
    assert s.setup[0] == "module load cuda/12.4" and s.setup[-1] == "x"  # the profile's lines, then --setup's
    assert site_options.site_settings(parser.parse_args([]), time=60).time == 60
    with pytest.raises(ConfigError, match=r"--time: must be >= 1, got 0"):
        site_options.site_settings(parser.parse_args(["--time", "0"]))
    with pytest.raises(ConfigError, match="whitespace or control characters"):
        site_options.site_settings(parser.parse_args(["--partition", "a\nb"]))
    bad = tmp_path / "p.yaml"
    bad.write_text("slurm: {partion: gpu}\n")
    with pytest.raises(ConfigError, match=r"profile .*p.yaml.*did you mean slurm.partition\?"):
        site_options.site_settings(parser.parse_args(["--profile", str(bad)]))


def test_smoke_is_one_tiny_job_per_group_under_its_own_name(tmp_path: Path) -> None:
    full = dry(tmp_path)
    result = dry(tmp_path, smoke=True)
    assert result.grid.experiment == "demo_smoke" and result.submitted == ["cat_fold1", "align_fold1"]
    for job in result.grid.jobs:
        c = job.config
        assert c.experiment == "demo_smoke" and c.train.max_epochs == 1 and c.train.epoch_patches <= 128
        assert c.eval.bootstrap <= 20 and not c.eval.figures
    assert {j.hash for j in result.grid.jobs}.isdisjoint({j.hash for j in full.grid.jobs})
    array = result.scripts["array"]
    assert "#SBATCH --partition=gpu\n" in array and "module load cuda/12.4" in array  # the site's resources
    assert "/j/demo_smoke/" in array and result.grid.slurm.time <= 15


def test_status_logs_aggregate_of_a_missing_experiment_exit_2(tmp_path: Path,
                                                             capsys: pytest.CaptureFixture[str]) -> None:
    from camvis.cli import aggregate as aggregate_cli

    make_experiment(tmp_path)
    wrong = ["--jobs-dir", str(tmp_path / "jobs"), "--outputs", str(tmp_path / "no" / "such")]
    for argv in ([EXP, *wrong], [EXP, "--logs", "cat_fold1", *wrong]):
        assert status_cli.main(argv) == 2
        err = capsys.readouterr().err
        assert f"experiment {EXP!r} has no folder" in err and f"says its jobs write under {tmp_path / 'outputs'}" in err
    assert aggregate_cli.main([EXP, *wrong]) == 2 and "has no folder" in capsys.readouterr().err
    assert status_cli.main(["nope", *wrong]) == 2 and "unknown experiment 'nope'" in capsys.readouterr().err
