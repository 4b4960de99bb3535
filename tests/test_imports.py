"""No import cycle anywhere in the package: a seam is clean when nothing imports back up into it. Imports inside
functions (deliberately lazy ones) do not count; imports under ``TYPE_CHECKING`` do."""

from __future__ import annotations

import ast
from pathlib import Path

from conftest import REPO_DIR


def module_name(root: Path, file: Path) -> str:
    parts = list(file.relative_to(root.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def top_level_imports(tree: ast.Module) -> list[ast.Import | ast.ImportFrom]:
    """Import statements outside function bodies (module level, class bodies, if-blocks)."""
    found: list[ast.Import | ast.ImportFrom] = []
    stack: list[ast.AST] = [tree]
    while stack:
        node = stack.pop()
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.Import | ast.ImportFrom):
                found.append(child)
            elif not isinstance(child, ast.FunctionDef | ast.AsyncFunctionDef | ast.Lambda):
                stack.append(child)
    return found


def import_graph(root: Path) -> dict[str, set[str]]:
    """Module -> the package modules it imports at load time (``from pkg.mod import name`` counts ``pkg.mod``)."""
    files = {module_name(root, f): f for f in root.rglob("*.py")}
    graph: dict[str, set[str]] = {m: set() for m in files}
    for mod, file in files.items():
        package = mod if file.name == "__init__.py" else mod.rpartition(".")[0]
        for node in top_level_imports(ast.parse(file.read_text())):
            if isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            else:
                base = node.module or ""
                if node.level:
                    anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                    base = ".".join([*anchor, base] if base else anchor)
                targets = [base, *(f"{base}.{alias.name}" for alias in node.names)]
            for target in targets:
                while target and target not in files:
                    target = target.rpartition(".")[0]
                if target and target != mod and target != root.name:
                    graph[mod].add(target)
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan's algorithm)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for nxt in sorted(graph[node]):
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def test_the_package_has_no_import_cycle() -> None:
    assert cycles(import_graph(REPO_DIR / "verity")) == []


def test_the_check_finds_a_cycle_and_ignores_lazy_imports(tmp_path: Path) -> None:
    pkg = tmp_path / "pkg"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "a.py").write_text("from pkg.b import thing\n")
    lazy_type_only = "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from . import a\nthing = 1\n"
    (pkg / "b.py").write_text(lazy_type_only)
    (pkg / "c.py").write_text("import pkg.a\n")
    (pkg / "d.py").write_text("def late():\n    from pkg import c\n")
    assert cycles(import_graph(pkg)) == [["pkg.a", "pkg.b"]]
    (pkg / "b.py").write_text("thing = 1\n")
    assert cycles(import_graph(pkg)) == []
