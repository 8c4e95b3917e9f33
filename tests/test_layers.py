"""The house's layers, checked on the full module graph: every import of camvis, at module level,
under TYPE_CHECKING or inside a function, `from x import y` taken as the module x.y when y is one.

    base (camvis/*.py, adapters/) < bookkeeping < plots < data < model < job < node < results < cluster < cli

No import runs up a layer and no modules import each other, directly or round a circle (within a
subpackage too: its modules form a DAG). The login side (bookkeeping, results, cluster, node: their
modules are imported by the launcher to pickle callables by path, and the CLIs that name none of
job/, node/ or model) is imported with torch made unimportable. No exemption lists. The last tests
plant an upward import, a cycle and a login-side torch import in a copy of the package and show each
is reported.
"""

from __future__ import annotations

import ast
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "camvis"
LAYERS = ["base", "bookkeeping", "plots", "data", "model", "job", "node", "results", "cluster", "cli"]
LOGIN_LAYERS = {"bookkeeping", "results", "cluster", "node"}
TORCH_LAYERS = {"model", "job", "node"}  # a CLI naming one of these runs where torch is


def module_name(path: Path, root: Path) -> str:
    parts = list(path.relative_to(root.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def modules(root: Path = PACKAGE) -> dict[str, Path]:
    return {module_name(p, root): p for p in sorted(root.rglob("*.py"))}


def layer_of(module: str) -> str:
    """camvis.data.store -> data; camvis.model -> model; camvis.io, camvis.adapters.zarr_api -> base."""
    parts = module.split(".")
    if len(parts) > 1 and parts[1] in LAYERS:
        return parts[1]
    return "base"


def imports_of(path: Path, module: str, known: set[str]) -> list[tuple[str, int]]:
    """(imported camvis module, line) for every import in the file, wherever it stands."""
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found += [(a.name, node.lineno) for a in node.names if a.name.split(".")[0] == "camvis"]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # relative: resolved against the importing package
                up = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(up + ([base] if base else []))
            if base.split(".")[0] == "camvis":
                found += [(f"{base}.{a.name}" if f"{base}.{a.name}" in known else base, node.lineno)
                          for a in node.names]
    return found


def graph(root: Path = PACKAGE) -> dict[str, list[tuple[str, int]]]:
    """module -> [(imported module, line)]: the edges of the package's import graph."""
    found = modules(root)
    known = set(found)
    return {m: [(t, line) for t, line in imports_of(p, m, known) if t != m] for m, p in found.items()}


def upward(root: Path = PACKAGE) -> list[str]:
    problems = []
    for module, edges in graph(root).items():
        own = layer_of(module)
        for target, line in edges:
            if LAYERS.index(layer_of(target)) > LAYERS.index(own):
                problems.append(f"{module}:{line}: {own} imports {layer_of(target)} ({target})")
    return problems


def cycles(root: Path = PACKAGE) -> list[list[str]]:
    """Every circle of imports (one per strongly connected component of more than one module), as
    the modules round it in order, the first repeated at the end."""
    g = graph(root)
    edges = {m: sorted({t for t, _ in e if t in g}) for m, e in g.items()}
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    components: list[list[str]] = []

    def visit(v: str) -> None:  # Tarjan
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in edges[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                components.append(component)

    for v in sorted(edges):
        if v not in index:
            visit(v)
    return [_circle(sorted(c), edges) for c in components]


def _circle(component: list[str], edges: dict[str, list[str]]) -> list[str]:
    """One circle through the component's first module (breadth-first back to it)."""
    members, start = set(component), component[0]
    paths = {start: [start]}
    queue = [start]
    while queue:
        v = queue.pop(0)
        for w in edges[v]:
            if w == start:
                return paths[v] + [start]
            if w in members and w not in paths:
                paths[w] = paths[v] + [w]
                queue.append(w)
    return component  # unreachable: a component of more than one module has a circle through each


def login_modules(root: Path = PACKAGE) -> list[str]:
    """What runs (or is imported) on the login node: every module of the login layers, and the CLIs
    that name nothing of the torch layers."""
    g = graph(root)
    return sorted(m for m in g if layer_of(m) in LOGIN_LAYERS
                  or layer_of(m) == "cli" and not {layer_of(t) for t, _ in g[m]} & TORCH_LAYERS)


NO_TORCH = """
import importlib, sys, traceback
class NoTorch:
    def find_spec(self, name, path=None, target=None):
        if name == "torch" or name.startswith("torch."):
            raise ImportError(f"torch is not importable here (login side): {name}")
sys.meta_path.insert(0, NoTorch())
for module in sys.argv[1:]:
    try:
        importlib.import_module(module)
    except BaseException as e:
        print(f"{module}: {type(e).__name__}: {e}")
"""


def torch_imports(names: list[str], root: Path = PACKAGE) -> list[str]:
    """The modules among `names` that cannot be imported without torch (a fresh interpreter, the
    package under `root` first on the path)."""
    proc = subprocess.run([sys.executable, "-c", NO_TORCH, *names], capture_output=True, text=True,
                          cwd=root.parent, env={**os.environ, "PYTHONPATH": str(root.parent)})
    return [line for line in proc.stdout.splitlines() if line] + ([proc.stderr] if proc.returncode else [])


# --------------------------------------------------------------------------- the house as it is


def test_every_import_points_down() -> None:
    assert upward() == []


def test_no_modules_import_each_other() -> None:
    assert cycles() == []


def test_the_login_side_imports_without_torch() -> None:
    names = login_modules()
    assert {"camvis.cluster.launch", "camvis.bookkeeping.status", "camvis.results.aggregate",
            "camvis.cli.launch", "camvis.cli.status", "camvis.cli.aggregate", "camvis.cli.doctor"} <= set(names)
    assert "camvis.cli.train" not in names and "camvis.job.task" not in names
    assert torch_imports(names) == []


# --------------------------------------------------------------------------- the checks can fail


def planted(tmp_path: Path, module: str, code: str) -> Path:
    """A copy of the package with `code` appended to `module`'s file."""
    root = tmp_path / "camvis"
    shutil.copytree(PACKAGE, root, ignore=shutil.ignore_patterns("__pycache__", "*.so"))
    path = root.parent / (module.replace(".", "/") + ".py")
    path.write_text(path.read_text() + "\n" + textwrap.dedent(code))
    return root


def test_an_upward_import_is_caught(tmp_path: Path) -> None:
    """Inside a function, under TYPE_CHECKING and as `from package import module`: each reported."""
    root = planted(tmp_path, "camvis.bookkeeping.jobfolder", """
        from typing import TYPE_CHECKING
        if TYPE_CHECKING:
            from camvis.job.task import TrainEvalTask
        def _planted():
            from camvis.cluster import launch
    """)
    found = upward(root)
    assert any("camvis.bookkeeping.jobfolder:" in f and "bookkeeping imports job (camvis.job.task)" in f
               for f in found), found
    assert any("bookkeeping imports cluster (camvis.cluster.launch)" in f for f in found), found
    assert len(found) == 2, found


def test_a_cycle_is_caught(tmp_path: Path) -> None:
    """store imports store_info; store_info importing store (in a function) closes a circle."""
    root = planted(tmp_path, "camvis.data.store_info", """
        def _planted():
            from camvis.data import store
    """)
    assert cycles(root) == [["camvis.data.store", "camvis.data.store_info", "camvis.data.store"]]
    assert upward(root) == []  # same layer: only the cycle check sees it


def test_a_torch_import_on_the_login_side_is_caught(tmp_path: Path) -> None:
    root = planted(tmp_path, "camvis.cluster.grid", "import torch\n")
    found = torch_imports(login_modules(root), root)
    assert any(f.startswith("camvis.cluster.grid: ImportError: torch is not importable") for f in found), found
    assert any(f.startswith("camvis.cluster.launch: ImportError") for f in found), found  # it imports grid
