"""No import cycle anywhere in the package, counting every import: at module level, under ``TYPE_CHECKING``,
inside functions, and the modules a registry imports by name (a string ``verity.pkg.mod`` or
``verity.pkg.mod:name``). A seam is clean when nothing imports back up into it."""

from __future__ import annotations

import ast
import re
from pathlib import Path

from conftest import REPO_DIR


def module_name(root: Path, file: Path) -> str:
    parts = list(file.relative_to(root.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def named_modules(tree: ast.Module, package: str) -> list[str]:
    """Modules of ``package`` named by a whole string constant, as a registry names the modules it imports."""
    pattern = re.compile(rf"{re.escape(package)}(\.\w+)+(:\w+)?")
    strings = (n.value for n in ast.walk(tree) if isinstance(n, ast.Constant) and isinstance(n.value, str))
    return [text.partition(":")[0] for text in strings if pattern.fullmatch(text)]


def import_graph(root: Path) -> dict[str, set[str]]:
    """Module -> the package modules it imports (``from pkg.mod import name`` counts ``pkg.mod``), wherever the
    import stands, or names as a string."""
    files = {module_name(root, f): f for f in root.rglob("*.py")}
    graph: dict[str, set[str]] = {m: set() for m in files}
    for mod, file in files.items():
        package = mod if file.name == "__init__.py" else mod.rpartition(".")[0]
        tree = ast.parse(file.read_text())
        for node in [*ast.walk(tree), *named_modules(tree, root.name)]:
            if isinstance(node, str):
                targets = [node]
            elif isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                    base = ".".join([*anchor, base] if base else anchor)
                targets = [base, *(f"{base}.{alias.name}" for alias in node.names)]
            else:
                continue
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


def test_the_check_finds_cycles_through_type_checking_lazy_and_named_imports(tmp_path: Path) -> None:
    pkg = tmp_path / "pkg"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "a.py").write_text("from pkg.b import thing\n")
    type_only = "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from . import a\nthing = 1\n"
    (pkg / "b.py").write_text(type_only)
    (pkg / "c.py").write_text("import pkg.a\n")
    assert cycles(import_graph(pkg)) == [["pkg.a", "pkg.b"]]
    (pkg / "b.py").write_text("thing = 1\n")
    assert cycles(import_graph(pkg)) == []
    (pkg / "d.py").write_text('"""Docs may mention pkg.c freely."""\n\ndef late():\n    from pkg import c\n')
    (pkg / "c.py").write_text("import pkg.a\nBUILTINS = ('pkg.d',)\n")
    assert cycles(import_graph(pkg)) == [["pkg.c", "pkg.d"]]
    (pkg / "d.py").write_text('"""Docs may mention pkg.c freely."""\n')
    assert cycles(import_graph(pkg)) == []
