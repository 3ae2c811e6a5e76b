"""Sanitising at the write boundary: what reaches the journal and the store is valid, bounded JSON.

NUL characters and lone surrogates become U+FFFD, strings longer than ``MAX_STRING`` are cut with a visible
marker, nesting deeper than ``MAX_DEPTH`` is replaced by a marker; every change is listed (by path) so a
sanitised row is never silently different from what was sent. Containers that need no change are returned
as they are (no copy), so the common case costs one walk.

Usage: ``clean, notes = sanitize(value)``; ``notes`` is e.g. ``["request.messages.0.content: nul"]``.
"""

from __future__ import annotations

from typing import Any

MAX_STRING = 1 << 20  # characters kept of one string field
MAX_DEPTH = 128  # orjson serialises up to 255 levels; deeper input is cut here
REPLACEMENT = "\ufffd"


def _marker_cut(s: str) -> str:
    return s[:MAX_STRING] + f"…[truncated by turnout: {len(s)} characters]"


def clean_string(s: str, path: str, notes: list[str]) -> str:
    if len(s) > MAX_STRING:
        s = _marker_cut(s)
        notes.append(f"{path}: truncated")
    if "\x00" in s:
        s = s.replace("\x00", REPLACEMENT)
        notes.append(f"{path}: nul")
    if not s.isascii():
        try:
            s.encode("utf-8")
        except UnicodeEncodeError:
            s = "".join(REPLACEMENT if "\ud800" <= c <= "\udfff" else c for c in s)
            notes.append(f"{path}: surrogate")
    return s


def _walk(value: Any, path: str, depth: int, notes: list[str]) -> Any:
    if isinstance(value, str):
        return clean_string(value, path, notes)
    if isinstance(value, dict):
        if depth >= MAX_DEPTH:
            notes.append(f"{path}: too deep")
            return "[nesting too deep: removed by turnout]"
        out: dict[str, Any] | None = None
        for i, (key, item) in enumerate(value.items()):
            new_key = key if type(key) is str else str(key)
            new_key = (
                clean_string(new_key, f"{path}.<key>", notes) if not new_key.isascii() or "\x00" in new_key else new_key
            )
            new_item = _walk(item, f"{path}.{new_key}" if path else new_key, depth + 1, notes)
            if out is None and (new_key is not key or new_item is not item):
                out = dict(list(value.items())[:i])
            if out is not None:
                out[new_key] = new_item
        return value if out is None else out
    if isinstance(value, list | tuple):
        if depth >= MAX_DEPTH:
            notes.append(f"{path}: too deep")
            return "[nesting too deep: removed by turnout]"
        items: list[Any] | None = None
        for i, item in enumerate(value):
            new_item = _walk(item, f"{path}.{i}" if path else str(i), depth + 1, notes)
            if items is None and (new_item is not item or isinstance(value, tuple)):
                items = list(value[:i])
            if items is not None:
                items.append(new_item)
        return value if items is None else items
    if value is None or isinstance(value, bool | float):
        return value
    if isinstance(value, int):
        if -(1 << 63) <= value < (1 << 64):
            return value
        notes.append(f"{path}: integer out of range stored as text")
        return str(value)
    notes.append(f"{path}: {type(value).__name__} stored as text")
    return clean_string(str(value), path, notes)


def sanitize(value: Any, path: str = "") -> tuple[Any, list[str]]:
    """``value`` made safe for JSON, SQLite and PostgreSQL text, and the list of changes made."""
    notes: list[str] = []
    return _walk(value, path, 0, notes), notes
