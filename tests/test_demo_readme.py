"""`python -m camvis.cli.demo --check-readme`: the README's quoted demo table against a run's summary.csv."""

from __future__ import annotations

import shutil
from pathlib import Path

import pandas as pd
import pytest

from camvis.cli import demo


def write_readme(path: Path, lines: list[str]) -> Path:
    path.write_text("# camvis\n\n" + demo.README_MARKERS[0] + "\n" + "\n".join(lines) + "\n" + demo.README_MARKERS[1]
                    + "\n\nmore text\n")
    return path


def test_a_changed_number_is_one_line_naming_the_row(tmp_path: Path) -> None:
    summary = tmp_path / "summary.csv"
    shutil.copy(demo.DOCS / "demo_summary.csv", summary)
    table = demo.readme_table(pd.read_csv(summary))
    assert demo.readme_mismatches(summary, write_readme(tmp_path / "README.md", table)) == []
    changed = [line.replace("| cat | 0.", "| cat | 1.", 1) for line in table]
    found = demo.readme_mismatches(summary, write_readme(tmp_path / "README.md", changed))
    assert len(found) == 1 and "| cat | 1." in found[0] and "| cat | 0." in found[0]
    found = demo.readme_mismatches(summary, write_readme(tmp_path / "README.md", table[:-1]))  # a row missing
    assert len(found) == 1 and "(no line)" in found[0]


def test_the_cli_checks_the_checkouts_readme_against_outputs_demo(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                                  capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.chdir(tmp_path)
    assert demo.main(["--check-readme"]) == 2  # no outputs/demo/summary.csv: one line, no traceback
    assert "outputs/demo/summary.csv: no such file" in capsys.readouterr().err
    (tmp_path / "outputs" / "demo").mkdir(parents=True)
    shutil.copy(demo.DOCS / "demo_summary.csv", tmp_path / "outputs" / "demo" / "summary.csv")
    assert demo.main(["--check-readme"]) == 0  # the shipped table is the shipped summary's
    assert "matches" in capsys.readouterr().out
    frame = pd.read_csv(tmp_path / "outputs" / "demo" / "summary.csv")
    frame.loc[frame["metric"] == "acc", "mean"] += 0.01
    frame.to_csv(tmp_path / "outputs" / "demo" / "summary.csv", index=False)
    assert demo.main(["--check-readme"]) == 1
    out = capsys.readouterr().out.strip().splitlines()
    assert len(out) == 2 and all("README line" in line for line in out)  # align's and cat's rows
    assert demo.main(["--check-readme", "replicates=3"]) == 2
