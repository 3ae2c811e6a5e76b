"""Imports point down only: gateway -> policies, collectors; policies and collectors never import gateway or
each other; policies stay pure (stdlib only, no asyncio); only gateway/upstream.py imports litellm; inside a
package the modules have a reading order (no circle of imports, ``TYPE_CHECKING`` and function-local ones
counted too)."""

from __future__ import annotations

import ast
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def imports_of(path: Path) -> set[str]:
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found.add(node.module.split(".")[0])
    return found


def modules(package: str) -> list[Path]:
    return sorted((ROOT / package).rglob("*.py"))


def module_name(path: Path, root: Path = ROOT) -> str:
    parts = path.relative_to(root).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def internal_imports(path: Path, known: set[str], root: Path = ROOT) -> set[str]:
    """The project modules ``path`` imports anywhere in its text (module level, ``TYPE_CHECKING``, in functions);
    ``from package import name`` counts as importing ``package.name`` when that is a module."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module:
            base = node.module
            if node.level:
                package = module_name(path, root).split(".")
                if path.name != "__init__.py":
                    package = package[:-1]
                base = ".".join([*package[: len(package) - node.level + 1], node.module])
            names = [base, *(f"{base}.{alias.name}" for alias in node.names)]
        else:
            continue
        found.update(name for name in names if name in known)
    return found - {module_name(path, root)}


def circles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        for nxt in graph[node]:
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def test_circle_detection_sees_every_kind_of_import(tmp_path: Path) -> None:
    # the checker itself: a circle closed only by a TYPE_CHECKING import, or only inside a function, is found
    package = tmp_path / "pkg"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "a.py").write_text("from pkg.b import x\n")
    (package / "b.py").write_text("from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from pkg.c import y\n")
    (package / "c.py").write_text("def f():\n    from pkg import a\n")
    (package / "d.py").write_text("import pkg.a\n")
    known = {"pkg", "pkg.a", "pkg.b", "pkg.c", "pkg.d"}
    graph = {module_name(p, tmp_path): internal_imports(p, known, tmp_path) for p in sorted(package.glob("*.py"))}
    assert graph["pkg.d"] == {"pkg.a"}
    assert circles(graph) == [["pkg.a", "pkg.b", "pkg.c"]]


@pytest.mark.parametrize("package", ["gateway", "collectors", "policies"])
def test_no_circle_of_imports_inside_a_package(package: str) -> None:
    paths = modules(package)
    known = {module_name(p) for p in paths}
    graph = {module_name(p): internal_imports(p, known) for p in paths}
    assert not circles(graph), f"modules importing each other in a circle (give them a reading order): {circles(graph)}"


@pytest.mark.parametrize("path", modules("policies"), ids=lambda p: p.name)
def test_policies_are_pure(path: Path) -> None:
    allowed = set(sys.stdlib_module_names) - {"asyncio", "socket", "http", "urllib", "sqlite3", "threading"}
    bad = {m for m in imports_of(path) if m not in allowed and m not in ("policies", "__future__")}
    assert not bad, f"{path.relative_to(ROOT)} imports {bad}"


@pytest.mark.parametrize("path", modules("collectors"), ids=lambda p: str(p.relative_to(ROOT)))
def test_collectors_never_import_gateway_or_policies(path: Path) -> None:
    assert not imports_of(path) & {"gateway", "policies"}


def test_only_the_upstream_seam_imports_litellm() -> None:
    importers = [
        str(p.relative_to(ROOT))
        for package in ("gateway", "policies", "collectors")
        for p in modules(package)
        if "litellm" in imports_of(p)
    ]
    assert importers in ([], ["gateway/upstream.py"])


def test_modules_stay_small() -> None:
    big = [
        str(p.relative_to(ROOT))
        for pkg in ("gateway", "policies", "collectors")
        for p in modules(pkg)
        if len(p.read_text().splitlines()) > 500
    ]
    assert not big, f"split these by concept: {big}"
