"""Rewriting a route's weights in the config file (``turnout promote`` / ``turnout rollback``), so the file stays
the truth: every byte but the weights is kept (comments, quoting, layout), the result is validated before it
is written, and it replaces the file in one atomic rename.

ruamel.yaml's round-trip loader finds where each weight sits (line and column, block or flow style); the new
numbers are spliced in at exactly those places instead of re-dumping the document, because a re-dump may
re-indent or re-wrap lines that nobody asked to change.

Usage: ``set_weights(Path("turnout.yaml"), "support-bot", {"prod-v3": 0, "cand-v4": 100})``
"""

from __future__ import annotations

import contextlib
import os
import re
import tempfile
from collections.abc import Mapping
from pathlib import Path

from ruamel.yaml import YAML
from ruamel.yaml.error import YAMLError

from gateway.config import ConfigError, parse_config

_NUMBER = re.compile(r"[-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?")


def _number(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else repr(float(value))


def rewrite(text: str, route: str, weights: Mapping[str, float], path: Path | str) -> str:
    """``text`` with ``routes.<route>.variants`` set to ``weights`` (every variant named must exist)."""
    try:
        data = YAML(typ="rt").load(text)
    except YAMLError as exc:
        raise ConfigError(path, [f"(YAML) {exc}"]) from None
    try:
        variants = data["routes"][route]["variants"]
    except (KeyError, TypeError):
        raise ConfigError(path, [f"routes.{route}.variants: not found"]) from None
    missing = [v for v in weights if v not in variants]
    if missing:
        raise ConfigError(path, [f"routes.{route}.variants: no variant {m!r}" for m in missing])
    lines = text.splitlines(keepends=True)
    # splice from the end of each line so earlier columns stay valid
    edits = sorted(((*variants.lc.value(name), name) for name in weights), reverse=True)
    for line, col, name in edits:
        found = _NUMBER.match(lines[line], col)
        if found is None:
            raise ConfigError(path, [f"routes.{route}.variants.{name}: the weight is not a plain number"])
        lines[line] = lines[line][:col] + _number(weights[name]) + lines[line][found.end() :]
    return "".join(lines)


def set_weights(path: Path, route: str, weights: Mapping[str, float]) -> str:
    """Rewrite the file at ``path``; returns the new text. Raises ConfigError, leaving the file untouched,
    when the result would not validate."""
    text = path.read_text(encoding="utf-8")
    new = rewrite(text, route, weights, path)
    parse_config(new.encode(), path, store_only=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8", newline="") as f:
            f.write(new)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, path.stat().st_mode & 0o7777)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    return new
