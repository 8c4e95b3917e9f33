"""The corpus of malformed grids and job configs (tests/data/bad_configs/), run through the real CLIs.

Each case is a YAML file whose first line names what its error must name (`# expect: KEY`) and
whose optional second line gives command-line arguments (`# args: key=value ...`, shell words).
`@STORE@` stands for a real store (the session's synthetic one), so that only the case's own
problem is wrong. Every case must exit 2 with exactly one stderr line, `error: ...` naming KEY,
no traceback, and nothing written under outputs/ or jobs/.
"""

from __future__ import annotations

import shlex
from pathlib import Path

import pytest

from camvis.cli import aggregate as aggregate_cli
from camvis.cli import launch as launch_cli
from camvis.cli import status as status_cli
from camvis.cli import train as train_cli
from camvis.config import load_job_config

CORPUS = Path(__file__).resolve().parent / "data" / "bad_configs"
CASES = sorted([*CORPUS.glob("grids/*.yaml"), *CORPUS.glob("jobs/*.yaml")])


def header(case: Path) -> tuple[str, list[str]]:
    """(what the error must name, extra CLI arguments) from the case's first comment lines."""
    lines = case.read_bytes().decode("latin-1").splitlines()
    expect = lines[0].removeprefix("# expect:").strip()
    assert lines[0].startswith("# expect:") and expect, f"{case}: first line must be '# expect: KEY'"
    args = shlex.split(lines[1].removeprefix("# args:")) if lines[1].startswith("# args:") else []
    return expect, args


def placed(case: Path, store: Path, folder: Path) -> Path:
    """The case with @STORE@ replaced, as a file in `folder` (bytes: some cases are not UTF-8)."""
    path = folder / case.name
    path.write_bytes(case.read_bytes().replace(b"@STORE@", str(store).encode()))
    return path


def run_case(kind: str, path: Path, args: list[str], root: Path) -> int:
    """Exit status of the case's CLI, with outputs/ and jobs/ two levels below `root` (so that a
    name like ../../x that escaped them would still land under `root`)."""
    root = root / "a" / "b"
    places = ["--outputs", str(root / "outputs")]
    if kind == "grids":
        return launch_cli.main([str(path), *args, "--dry-run", *places, "--jobs-dir", str(root / "jobs")])
    return train_cli.main([str(path), *args, *places])


@pytest.fixture(scope="module")
def store(synth_store) -> Path:
    return Path(synth_store.path)


def test_corpus_is_large_enough() -> None:
    assert len(list(CORPUS.glob("grids/*.yaml"))) >= 40 and len(list(CORPUS.glob("jobs/*.yaml"))) >= 20
    assert len(CASES) >= 60


@pytest.mark.parametrize("case", CASES, ids=lambda p: f"{p.parent.name}/{p.stem}")
def test_bad_config_is_one_line_error(case: Path, store: Path, tmp_path: Path, capsys) -> None:
    expect, args = header(case)
    path = placed(case, store, tmp_path)
    status = run_case(case.parent.name, path, args, tmp_path)
    err = capsys.readouterr().err
    assert status == 2, f"{case.name}: exit {status}, stderr {err!r}"
    assert "Traceback" not in err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), lines
    assert expect in lines[0], f"{case.name}: {expect!r} not in {lines[0]!r}"
    assert list(tmp_path.rglob("*")) == [path]  # nothing written: no outputs/, jobs/, nor an escaped folder


def test_the_valid_templates_work(store: Path, tmp_path: Path, capsys) -> None:
    """The cases differ from these templates by their one problem: the grid's dry run and the job load."""
    grid = placed(CORPUS / "valid" / "grid.yaml", store, tmp_path)
    assert launch_cli.main([str(grid), "--dry-run", "--outputs", str(tmp_path / "o"),
                            "--jobs-dir", str(tmp_path / "j")]) == 0
    out = capsys.readouterr().out
    assert "cat_fold1" in out and "align_fold3" in out and "#SBATCH" in out
    cfg = load_job_config(placed(CORPUS / "valid" / "job.yaml", store, tmp_path))
    assert (cfg.experiment, cfg.name, cfg.data.factors) == ("bad", "cat_fold1", (2, 4, 8))


@pytest.mark.parametrize("main, argv", [
    (aggregate_cli.main, ["../../x"]),
    (aggregate_cli.main, ["/abs/path"]),
    (aggregate_cli.main, [".."]),
    (status_cli.main, ["../x"]),
    (status_cli.main, ["../x", "--logs", "cat_fold1"]),
    (status_cli.main, ["/abs/path", "--cancel"]),
], ids=["aggregate-traversal", "aggregate-absolute", "aggregate-dotdot", "status-traversal", "status-logs",
        "status-cancel"])
def test_traversal_names_are_refused_by_every_command(main, argv, tmp_path: Path, monkeypatch, capsys) -> None:
    work = tmp_path / "a" / "b"
    work.mkdir(parents=True)
    monkeypatch.chdir(work)
    assert main(argv) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: experiment: expected a file-system-safe name"), lines
    assert sorted(p.name for p in tmp_path.rglob("*")) == ["a", "b"]  # nothing written anywhere
