"""docs/contracts.md made true: every file name of a contract is spelled once, in its home, and
every other module names it through the home's constant. The homes: a job folder's files
(camvis/bookkeeping/jobfolder.py) and the raw layout's (camvis/data/raw.py). A literal that IS such a
name (a string constant, f-string parts included; docstrings are prose and not counted) anywhere
else fails. File names only (a name with an extension): bare folder names such as `figures` are
also config keys (eval.figures), so their constants are not enforced by this scan.
"""

from __future__ import annotations

import ast
import re
import shutil
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "camvis"
HOMES = ("bookkeeping/jobfolder.py", "data/raw.py")
FILE_NAME = re.compile(r"^[\w.-]+\.(json|yaml|pt|csv|png|txt)$")


def docstrings(tree: ast.AST) -> set[int]:
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)) and node.body:
            first = node.body[0]
            if isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant):
                found.add(id(first.value))
    return found


def literals(path: Path) -> list[tuple[str, int]]:
    """(string, line) of every string constant of the file but its docstrings."""
    tree = ast.parse(path.read_text())
    skip = docstrings(tree)
    return [(n.value, n.lineno) for n in ast.walk(tree)
            if isinstance(n, ast.Constant) and isinstance(n.value, str) and id(n) not in skip]


def home_names(root: Path = PACKAGE) -> dict[str, set[str]]:
    """file name -> the homes that define it (a module-level NAME = "x.ext" or a tuple of them)."""
    names: dict[str, set[str]] = {}
    for home in HOMES:
        for node in ast.parse((root / home).read_text()).body:
            if isinstance(node, ast.Assign) and all(isinstance(t, (ast.Name, ast.Tuple)) for t in node.targets):
                for c in ast.walk(node.value):
                    if isinstance(c, ast.Constant) and isinstance(c.value, str) and FILE_NAME.match(c.value):
                        names.setdefault(c.value, set()).add(home)
    return names


def strays(root: Path = PACKAGE) -> list[str]:
    names = home_names(root)
    found = []
    for path in sorted(root.rglob("*.py")):
        rel = path.relative_to(root).as_posix()
        for value, line in literals(path):
            if value in names and rel not in names[value]:
                found.append(f"camvis/{rel}:{line}: {value!r} is spelled again (its home: "
                             f"{', '.join(sorted(names[value]))})")
    return found


def test_the_homes_name_the_contract_files() -> None:
    names = home_names()
    for name in ("config.yaml", "best.pt", "checkpoint.pt", "scores.json", "progress.json", "error.txt",
                 "bootstrap.csv", "predictions.csv", "confusion.csv", "learning_curve.png"):
        assert names.get(name) == {"bookkeeping/jobfolder.py"}, name
    # the job's per-image visibility.csv and the raw layout's: two contracts, one spelling each home
    assert names["visibility.csv"] == {"bookkeeping/jobfolder.py", "data/raw.py"}


def test_every_contract_file_name_is_spelled_only_in_its_home() -> None:
    assert strays() == []


def test_a_stray_file_name_is_caught(tmp_path: Path) -> None:
    root = tmp_path / "camvis"
    for home in HOMES:
        (root / home).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(PACKAGE / home, root / home)
    (root / "job").mkdir()
    (root / "job" / "planted.py").write_text(
        '"""Reads best.pt and scores.json (prose: not counted)."""\n'
        'def f(d, name):\n'
        '    return d / "best.pt", f"{d}/{name}", f"{d / \'scores.json\'}"\n')
    found = strays(root)
    assert len(found) == 2, found
    assert found[0].startswith("camvis/job/planted.py:3: 'best.pt' is spelled again (its home: bookkeeping/jobfolder.py)")
    assert "'scores.json'" in found[1]
