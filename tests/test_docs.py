"""The docs stay true: the site builds strictly, the configuration reference is the config classes', and
every figure marked in README.md and docs/ is the one in its results file, and the README stays short.

A marked figure (docs/benchmarks.md, "Numbers in the docs"):

    median <!-- number: benchmarks/results/launch_5000.json#median_s -->**2.69 s**
    <!-- number: benchmarks/results/build.md#case=paper:peak MiB -->1,280 MiB
    <!-- number: benchmarks/results/model_cpu.json#results.0.model_tflop_s scale=1000 -->35 GFLOP/s

must be the file's value (times `scale`) rounded to the decimals written: within half a unit of its last digit.
"""

from __future__ import annotations

import csv
import dataclasses
import difflib
import json
import os
import re
import shutil
import subprocess
import sys
from fractions import Fraction
from pathlib import Path
from typing import Any

import pytest

from camvis.cli import config_reference
from camvis.errors import ConfigError

REPO = Path(__file__).resolve().parents[1]
MARKER = re.compile(r"<!--\s*number:")
MARKED = re.compile(r"<!--\s*number:\s*(?P<file>[^#\s]+)#(?P<key>(?:(?!-->).)+?)(?:\s+scale=(?P<scale>\S+))?\s*-->"
                    r"[*_]*(?P<figure>-?\d[\d,]*(?:\.\d+)?)")


# --------------------------------------------------------------------------- the site


def test_the_site_builds_strictly(tmp_path: Path) -> None:
    """mkdocs build --strict: a broken link (the README's into docs/ too: mkdocs_hooks.py), a link to a
    heading that is gone (a section renamed), a page missing from the nav or a bad config fails it."""
    done = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "--config-file", str(REPO / "mkdocs.yml"),
                           "--site-dir", str(tmp_path / "site")], capture_output=True, text=True, cwd=tmp_path,
                          env={**os.environ, "NO_MKDOCS_2_WARNING": "1"})
    assert done.returncode == 0, done.stdout + done.stderr
    assert (tmp_path / "site" / "configuration" / "index.html").is_file()
    assert "data.stage" in (tmp_path / "site" / "configuration" / "index.html").read_text()
    for page in ("grids", "job", "monitoring", "statistics", "prediction", "reliability", "benchmarks", "first-run"):
        assert (tmp_path / "site" / page / "index.html").is_file(), page


def test_a_broken_anchor_fails_the_build(tmp_path: Path) -> None:
    """The check can fail: the same site with one link to a section of another page that does not exist."""
    docs = tmp_path / "docs"
    shutil.copytree(REPO / "docs", docs)
    (docs / "statistics.md").write_text("# Statistics\n\nSee [gone](reliability.md#no-such-section).\n")
    config = (REPO / "mkdocs.yml").read_text().replace("docs_dir: docs", f"docs_dir: {docs}")
    config = config.replace("  - mkdocs_hooks.py", f"  - {REPO / 'mkdocs_hooks.py'}")
    (tmp_path / "mkdocs.yml").write_text(config)
    done = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(tmp_path / "site")],
                          capture_output=True, text=True, cwd=tmp_path, env={**os.environ, "NO_MKDOCS_2_WARNING": "1"})
    assert done.returncode != 0
    assert "no-such-section" in done.stdout + done.stderr


README_MAX_LINES = 250


def test_the_readme_is_short() -> None:
    """What camvis is, the two commands, a tour, the commands, links: everything else is a docs page."""
    lines = (REPO / "README.md").read_text(encoding="utf-8").count("\n")
    assert lines <= README_MAX_LINES, f"README.md has {lines} lines, at most {README_MAX_LINES}: move the text to docs/"


def test_a_broken_readme_link_fails_the_build(tmp_path: Path) -> None:
    """The README is a page outside the nav (mkdocs_hooks.py): its links into docs/ are checked too."""
    shutil.copytree(REPO / "docs", tmp_path / "docs")
    shutil.copy(REPO / "mkdocs_hooks.py", tmp_path / "mkdocs_hooks.py")  # it reads the README beside it
    readme = (REPO / "README.md").read_text()
    (tmp_path / "README.md").write_text(readme.replace("(docs/grids.md)", "(docs/grids.md#no-such-heading)", 1))
    assert "(docs/grids.md)" in readme
    shutil.copy(REPO / "mkdocs.yml", tmp_path / "mkdocs.yml")
    done = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(tmp_path / "site")],
                          capture_output=True, text=True, cwd=tmp_path, env={**os.environ, "NO_MKDOCS_2_WARNING": "1"})
    assert done.returncode != 0
    assert "no-such-heading" in done.stdout + done.stderr


# --------------------------------------------------------------------------- the configuration reference


def test_the_configuration_reference_is_the_config_classes() -> None:
    page = REPO / "docs" / "configuration.md"
    written, generated = page.read_text(), config_reference.render()
    diff = "".join(difflib.unified_diff(written.splitlines(True), generated.splitlines(True),
                                        "docs/configuration.md", "the config classes", n=0))
    assert written == generated, (f"docs/configuration.md differs from the config classes' fields and docstrings; "
                                  f"regenerate it: {config_reference.COMMAND} (or make docs)\n{diff[:3000]}")


def test_every_field_of_every_section_is_in_the_reference() -> None:
    """Fields, types and defaults come from the dataclasses: every key a config accepts has a row."""
    page = config_reference.render()
    for section in config_reference.SECTIONS:
        for f in config_reference.section_keys(section):
            assert f"| `{section.prefix}{f.name}` |" in page, f"{section.prefix}{f.name}"
    assert "| `train.lr` | a finite float | `0.001` | Initial Adam learning rate, in (0, 10]. |" in page
    assert "| `train.min_lr` | a finite float | `1e-6` |" in page
    assert "| `data.factors` | a list of int | `[2, 4, 8, 16, 32]` |" in page
    assert "| `profile` | str or null | `null` |" in page and "`$CAMVIS_PROFILE`" in page


def test_a_field_without_a_docstring_is_an_error() -> None:
    @dataclasses.dataclass(frozen=True, kw_only=True)
    class Settings:
        documented: int = 1
        """A documented key."""
        bare: str = "x"

    section = config_reference.Section("`demo`", "demo.", Settings, "intro")
    assert config_reference.field_docs(Settings) == {"documented": "A documented key."}
    with pytest.raises(ConfigError, match=r"no docstring under the field\(s\) bare"):
        config_reference.table(section)


# --------------------------------------------------------------------------- numbers


def marked_figures(path: Path) -> list[tuple[int, re.Match[str] | None, str, bool]]:
    """(line, match or None when the marker is malformed, the marker's text, inside a code span) of every
    marker in `path`."""
    found = []
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        for start in MARKER.finditer(line):
            in_code = line[:start.start()].count("`") % 2 == 1
            found.append((number, MARKED.match(line, start.start()), line[start.start():start.start() + 120], in_code))
    return found


def table_rows(path: Path) -> list[dict[str, str]]:
    """The rows of a CSV file, or of the first Markdown table of a .md file."""
    text = path.read_text(encoding="utf-8")
    if path.suffix != ".md":
        return list(csv.DictReader(text.splitlines()))
    lines = [line.strip() for line in text.splitlines() if line.strip().startswith("|")]
    cells = [[c.strip() for c in line.strip("|").split("|")] for line in lines]
    header, body = cells[0], [c for c in cells[1:] if not all(set(x) <= set("-: ") for x in c)]
    return [dict(zip(header, row)) for row in body]


def value_at(path: Path, key: str) -> Any:
    """The value `key` names in the results file `path` (KeyError/IndexError/ValueError when it names none)."""
    if path.suffix in (".csv", ".md"):
        where, _, column = key.rpartition(":")
        conditions = dict(c.split("=", 1) for c in where.split(",")) if where else {}
        rows = [r for r in table_rows(path) if all(r.get(k) == v for k, v in conditions.items())]
        if len(rows) != 1:
            raise KeyError(f"{len(rows)} rows match {where!r}")
        return rows[0][column]
    return json_at(json.loads(path.read_text(encoding="utf-8")), key.split("."))


def json_at(node: Any, parts: list[str]) -> Any:
    """The value at a dotted path whose keys may hold dots themselves ("true difference 0.5 x ROPE"):
    every way of joining the next parts into a key is tried, shortest first."""
    if not parts:
        return node
    if isinstance(node, list):
        return json_at(node[int(parts[0])], parts[1:])
    for n in range(1, len(parts) + 1):
        name = ".".join(parts[:n])
        if name in node:
            try:
                return json_at(node[name], parts[n:])
            except (KeyError, IndexError, ValueError, TypeError):
                continue
    raise KeyError(parts[0])


def leading_number(value: Any) -> float:
    """A number, or the number a text starts with ("16.5 min", "1,280"); ValueError for anything else."""
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    found = re.match(r"\s*(-?\d[\d,]*(?:\.\d+)?)", value) if isinstance(value, str) else None
    if found is None:
        raise ValueError(f"not a number: {value!r}")
    return float(found[1].replace(",", ""))


def figure_problem(doc: Path, match: re.Match[str], root: Path) -> str | None:
    """Why a marked figure disagrees with its results file, or None."""
    results = root / match["file"]
    if not results.is_file():
        return f"no results file {match['file']}"
    try:
        value = leading_number(value_at(results, match["key"]))
    except (KeyError, IndexError, ValueError, TypeError) as e:
        return f"{match['file']} has no number at {match['key']!r} ({e})"
    scale = float(Fraction(match["scale"])) if match["scale"] else 1.0
    figure = match["figure"].replace(",", "")
    decimals = len(figure.partition(".")[2])
    expected = value * scale
    if abs(expected - float(figure)) > 0.5 * 10 ** -decimals * (1 + 1e-9) + 1e-12:
        return (f"{match['figure']} written, {match['file']}#{match['key']} says {expected:.{decimals + 3}g}"
                f" ({expected:,.{decimals}f} at the decimals written)")
    return None


def stale_figures(paths: list[Path], root: Path = REPO) -> list[str]:
    problems = []
    for path in paths:
        for line, match, text, in_code in marked_figures(path):
            where = f"{path.relative_to(root)}:{line}"
            if match is None:
                problems.append(f"{where}: a marker without FILE#KEY or without a figure right after it: {text}")
            elif in_code:
                problems.append(f"{where}: a marker inside a code span shows as text: {text}")
            elif problem := figure_problem(path, match, root):
                problems.append(f"{where}: {problem}")
    return problems


DOCS = [REPO / "README.md", *sorted((REPO / "docs").rglob("*.md"))]


def test_numbers_every_marked_figure_is_its_results_file() -> None:
    problems = stale_figures(DOCS)
    assert not problems, "stale or unchecked figures (update the text, or rerun the benchmark):\n" + "\n".join(problems)
    counts = {p.name: len(marked_figures(p)) for p in DOCS}
    assert counts["benchmarks.md"] >= 100 and counts["grids.md"] >= 4 and counts["prediction.md"] >= 8, counts  # read at all


def test_numbers_a_stale_figure_is_named(tmp_path: Path) -> None:
    (tmp_path / "r.json").write_text(json.dumps({"median_s": 2.6866, "runs": [{"s": 3.0348}], "bytes": 85958718,
                                                 "row": ["store build", "16.5 min"], "flag": True,
                                                 "at": {"difference 0": {"p": 0.1}, "difference 0.5 x ROPE": {"p": 0.608}}}))
    (tmp_path / "summary.csv").write_text("group,metric,mean\ncat,acc,0.9581\nalign,acc,0.8812\n")
    (tmp_path / "build.md").write_text("# title\n| case | build s |\n|---|---|\n| demo | 0.52 |\n| paper | 7.70 |\n")
    page = tmp_path / "page.md"
    page.write_text(
        "ok <!-- number: r.json#median_s -->**2.69 s**, <!-- number: r.json#runs.0.s -->3.03,"
        " <!-- number: r.json#bytes scale=1/1000000 -->86 MB, <!-- number: summary.csv#group=cat,metric=acc:mean -->0.958,"
        " <!-- number: build.md#case=paper:build s -->7.7 s, <!-- number: r.json#row.1 -->16.5 min,"
        " <!-- number: r.json#at.difference 0.5 x ROPE.p -->0.608\n"
        "stale <!-- number: r.json#median_s -->2.71 s and <!-- number: summary.csv#group=align:mean -->0.883\n"
        "broken <!-- number: r.json#nokey -->1 <!-- number: gone.json#a -->1 <!-- number: r.json#median_s --> two"
        " <!-- number: r.json#row.0 -->1 <!-- number: r.json#flag -->1 `x=<!-- number: r.json#median_s -->2.69`\n")
    problems = stale_figures([page], tmp_path)
    assert [p.split(": ", 1)[0] for p in problems] == ["page.md:2"] * 2 + ["page.md:3"] * 6, problems
    assert "2.71 written, r.json#median_s says 2.6866 (2.69 at the decimals written)" in problems[0]
    assert "0.883 written" in problems[1]
    assert "has no number at 'nokey'" in problems[2]
    assert "no results file gone.json" in problems[3]
    assert "without a figure right after it" in problems[4]
    assert "not a number: 'store build'" in problems[5] and "not a number: True" in problems[6]
    assert "a marker inside a code span shows as text" in problems[7]
