"""Lineage: the dataset version a model was trained on (``upstreams.X.dataset: NAME@vN``) and its ancestors.

Usage::

    chain(root, "support@v3")     # [{"ref": "support@v0003", "created_at", "examples", "sha256"}, ... v0001]
    resolved(root, "support@v3")  # "support@v0003" when it exists, else None (eval runs record this)
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from collectors.datasets.manifest import UnknownVersion, parse_ref, read_manifest


def resolved(root: Path, ref: str | None) -> str | None:
    """The canonical ``NAME@vNNNN`` of ``ref`` when that version exists under ``root``."""
    if not ref:
        return None
    try:
        manifest = read_manifest(root, ref)
    except (UnknownVersion, OSError, ValueError):
        return None
    return f"{manifest['name']}@{manifest['version']}"


def chain(root: Path, ref: str) -> list[dict[str, Any]]:
    """``ref`` and its parents, newest first; raises ``UnknownVersion`` when ``ref`` does not exist (a missing
    parent ends the chain with an entry saying so)."""
    name, version = parse_ref(ref)
    found: list[dict[str, Any]] = []
    current: str | None = version
    while current is not None:
        try:
            m = read_manifest(root, f"{name}@{current}")
        except UnknownVersion:
            if not found:
                raise
            found.append({"ref": f"{name}@{current}", "missing": True})
            break
        found.append(
            {"ref": f"{name}@{m['version']}", "created_at": m["created_at"], "examples": m["counts"]["examples"],
             "sha256": m["sha256"], "filters": m["filters"]}
        )  # fmt: skip
        current = m.get("parent")
    return found
