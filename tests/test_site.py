"""Site settings (camvis.site): command line > environment > camvis.yaml (walking up) > defaults."""

from __future__ import annotations

from pathlib import Path

import pytest

from camvis import site
from camvis.cli import status as status_cli
from camvis.errors import ConfigError

NO_ENV: dict[str, str] = {}


def test_defaults_without_a_project_file(tmp_path: Path) -> None:
    s = site.resolve({}, NO_ENV, tmp_path)
    assert (s.outputs, s.jobs_dir, s.profile) == ("outputs", "jobs", None)
    assert set(s.sources.values()) == {"default"} and s.project_file is None


def test_project_file_found_walking_up_paths_against_its_folder(tmp_path: Path) -> None:
    (tmp_path / "camvis.yaml").write_text("outputs: out\njobs_dir: /abs/jobs\nprofile: slurm/site.yaml\n")
    deep = tmp_path / "a" / "b"
    deep.mkdir(parents=True)
    s = site.resolve({}, NO_ENV, deep)
    assert s.outputs == str(tmp_path / "out") and s.jobs_dir == "/abs/jobs"
    assert s.profile == str(tmp_path / "slurm" / "site.yaml")
    assert s.project_file == tmp_path / "camvis.yaml" and s.sources["outputs"] == str(tmp_path / "camvis.yaml")


def test_precedence_command_line_over_env_over_file_over_default(tmp_path: Path) -> None:
    (tmp_path / "camvis.yaml").write_text("outputs: file-out\njobs_dir: file-jobs\n")
    env = {"CAMVIS_OUTPUTS": "env-out", "CAMVIS_PROFILE": "env.yaml"}
    s = site.resolve({"outputs": "cli-out", "jobs_dir": None, "profile": None}, env, tmp_path)
    assert s.outputs == "cli-out" and s.sources["outputs"] == "--outputs"
    assert s.profile == "env.yaml" and s.sources["profile"] == "$CAMVIS_PROFILE"
    assert s.jobs_dir == str(tmp_path / "file-jobs")
    s = site.resolve({}, {"CAMVIS_JOBS_DIR": ""}, tmp_path)  # an empty variable is unset
    assert s.jobs_dir == str(tmp_path / "file-jobs") and s.outputs == str(tmp_path / "file-out")


@pytest.mark.parametrize("text, message", [
    ("output: x\n", "output: unknown key (did you mean outputs?)"),
    ("outputs: 3\n", "outputs: expected a path (text), got int 3"),
    ("- a\n", "expected a mapping at the top level"),
    ("outputs: !!python/object/apply:os.system [echo hi]\n", "invalid YAML"),
    ("outputs: a\noutputs: b\n", "duplicate key"),
])
def test_bad_project_file_is_one_error_naming_it(tmp_path: Path, text: str, message: str) -> None:
    (tmp_path / "camvis.yaml").write_text(text)
    with pytest.raises(ConfigError, match="camvis.yaml") as e:
        site.resolve({}, NO_ENV, tmp_path)
    assert message in str(e.value)


def test_every_command_takes_the_settings(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                          capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "camvis.yaml").write_text("jobs_dir: my-jobs\noutputs: my-out\n")
    (tmp_path / "my-jobs" / "exp1").mkdir(parents=True)
    (tmp_path / "my-jobs" / "exp1" / "manifest.json").write_text('{"jobs": {}, "outputs": "../../my-out"}')
    monkeypatch.chdir(tmp_path)
    for name in ("CAMVIS_OUTPUTS", "CAMVIS_JOBS_DIR", "CAMVIS_PROFILE"):
        monkeypatch.delenv(name, raising=False)
    assert status_cli.main([]) == 0
    assert "exp1" in capsys.readouterr().out  # the overview reads camvis.yaml's jobs folder
    monkeypatch.setenv("CAMVIS_JOBS_DIR", str(tmp_path / "elsewhere"))
    assert status_cli.main([]) == 0
    assert "no experiments under" in capsys.readouterr().out
    (tmp_path / "camvis.yaml").write_text("jobs-dir: x\n")
    with pytest.raises(SystemExit) as e:
        status_cli.main([])
    assert e.value.code == 2 and "did you mean jobs_dir?" in capsys.readouterr().err


def test_command_line_beats_the_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                            capsys: pytest.CaptureFixture[str]) -> None:
    for name in ("a", "b"):
        (tmp_path / name / f"exp_{name}").mkdir(parents=True)
        (tmp_path / name / f"exp_{name}" / "manifest.json").write_text('{"jobs": {}}')
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("CAMVIS_JOBS_DIR", str(tmp_path / "a"))
    assert status_cli.main(["--jobs-dir", str(tmp_path / "b")]) == 0
    out = capsys.readouterr().out
    assert "exp_b" in out and "exp_a" not in out
