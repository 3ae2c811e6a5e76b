"""Imports point down only: gateway -> policies, collectors; policies and collectors never import gateway or
each other; policies stay pure (stdlib only, no asyncio); only gateway/upstream.py imports litellm."""

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
