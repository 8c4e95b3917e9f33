"""The house's layers: imports point down, so the folders say where code runs.

    base (camvis/*.py) < plots < data < model < job < cluster < results < cli

Module-level imports, type-only ones included, may name only the module's own layer or lower ones.
Inside functions two upward names are allowed, both from cluster (the login node's launcher): the
submitit task of camvis.job and the aggregate of camvis.results, named there so that they are pickled
by path and the launcher stays free of torch. The job side never names cluster or results at all.
"""

from __future__ import annotations

import ast
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "camvis"
LAYERS = ["base", "plots", "data", "model", "job", "cluster", "results", "cli"]
FUNCTION_LEVEL_UPWARD = {("cluster", "job"), ("cluster", "results")}


def layer_of(module: str) -> str:
    """camvis.data.store -> data; camvis.model -> model; camvis.io -> base."""
    parts = module.split(".")
    if parts[0] != "camvis" or len(parts) == 1:
        return "base"
    return parts[1] if parts[1] in LAYERS else "base"


def module_name(path: Path, root: Path = PACKAGE) -> str:
    rel = path.relative_to(root.parent).with_suffix("")
    parts = list(rel.parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def camvis_imports(tree: ast.AST, package: str) -> list[tuple[str, int, bool]]:
    """(imported module, line, inside a function) for every import of camvis in `tree`."""
    found = []

    def visit(node: ast.AST, in_function: bool) -> None:
        for child in ast.iter_child_nodes(node):
            inner = in_function or isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda))
            if isinstance(child, ast.Import):
                found.extend((a.name, child.lineno, inner) for a in child.names if a.name.startswith("camvis"))
            elif isinstance(child, ast.ImportFrom):
                base = child.module or ""
                if child.level:  # relative: resolve against the importing package
                    base = ".".join(package.split(".")[: len(package.split(".")) - child.level + 1] + [base])
                if base.startswith("camvis"):
                    # `from camvis import data` names the subpackage camvis.data
                    names = [f"camvis.{a.name}" for a in child.names] if base == "camvis" else [base]
                    found.extend((name, child.lineno, inner) for name in names)
            visit(child, inner)

    visit(tree, False)
    return found


def violations(root: Path = PACKAGE) -> list[str]:
    problems = []
    for path in sorted(root.rglob("*.py")):
        module = module_name(path, root)
        package = module if path.name == "__init__.py" else module.rpartition(".")[0]
        own = layer_of(module)
        for target, line, in_function in camvis_imports(ast.parse(path.read_text()), package):
            theirs = layer_of(target)
            if LAYERS.index(theirs) <= LAYERS.index(own):
                continue
            if in_function and (own, theirs) in FUNCTION_LEVEL_UPWARD:
                continue
            where = "inside a function" if in_function else "at module level"
            problems.append(f"{path.relative_to(root.parent)}:{line}: {own} imports {theirs} ({target}) {where}")
    return problems


def test_every_import_points_down() -> None:
    assert violations() == []


def test_an_upward_import_is_caught(tmp_path: Path) -> None:
    """The check itself can fail: a job module naming the cluster's manifest, at module level, under
    TYPE_CHECKING and inside a function, is reported each time; a data module naming the job side too."""
    fake = tmp_path / "camvis"
    (fake / "job").mkdir(parents=True)
    (fake / "data").mkdir()
    (fake / "job" / "train.py").write_text(textwrap.dedent("""
        from typing import TYPE_CHECKING
        from camvis.bookkeeping.manifest import read_manifest
        if TYPE_CHECKING:
            from camvis.results import aggregate
        def f():
            from camvis.cluster import launch
    """))
    (fake / "data" / "store.py").write_text("from camvis.job.batches import BatchSource\nfrom camvis import io\n")
    found = violations(fake)
    assert len(found) == 4, found
    assert any("job imports cluster (camvis.bookkeeping.manifest) at module level" in f for f in found)
    assert any("job imports results (camvis.results) at module level" in f for f in found)
    assert any("inside a function" in f for f in found)
    assert any("data imports job" in f for f in found)


@pytest.mark.parametrize("module", ["camvis.cluster.launch", "camvis.cluster.monitor", "camvis.results.aggregate",
                                    "camvis.cli.launch", "camvis.cli.status", "camvis.cli.aggregate"])
def test_the_login_node_side_starts_without_torch(module: str) -> None:
    code = f"import sys, {module}; print(sorted(m for m in sys.modules if m == 'torch' or m.split('.')[:2] == ['camvis', 'job']))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]", f"{module} pulls in {out.strip()}"
