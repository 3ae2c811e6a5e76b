"""Dataset versions on disk: ``DIR/NAME/vNNNN/`` holding ``train.jsonl``, ``index.jsonl`` and ``manifest.json``.

A version directory is complete or absent: it is written under ``DIR/.building/`` (the same file system), its
files flushed to disk, then renamed into place, so a crash mid-build leaves the previous versions as they were and
nothing half-written under ``NAME/`` (the next build clears what a dead one left in ``.building``). A version is
never written again. ``train.jsonl`` holds the OpenAI chat fine-tuning lines; ``index.jsonl`` one line per example
in the same order (interaction id, route, variant, label, source, sha256 of the line); ``manifest.json`` the name,
version, sha256 of ``train.jsonl``, parent, creation time, filters, counts and the interaction ids.

Usage::

    versions(root, "support")                  # ["v0001", "v0002"]
    m = read_manifest(root, "support@v2")      # NAME@vN or NAME@v000N; raises UnknownVersion
    for line in read_rows(root, "support@v2"): ...   # the training lines as dicts (e.g. drift's reference)
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import re
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson

_VERSION = re.compile(r"^v(\d{4,})$")
_REF = re.compile(r"^(?P<name>[A-Za-z0-9][A-Za-z0-9_.-]{0,63})@v(?P<n>\d+)$")
BUILDING = ".building"


class UnknownVersion(LookupError):
    """A ``NAME@vN`` that is malformed or names no complete version."""


def version_name(n: int) -> str:
    return f"v{n:04d}"


def parse_ref(ref: str) -> tuple[str, str]:
    """``support@v3`` or ``support@v0003`` -> ("support", "v0003")."""
    match = _REF.match(ref.strip())
    if not match:
        raise UnknownVersion(f"{ref!r}: expected NAME@vN, e.g. support@v0003")
    return match.group("name"), version_name(int(match.group("n")))


def versions(root: Path, name: str) -> list[str]:
    """Complete versions of ``name``, oldest first."""
    directory = root / name
    if not directory.is_dir():
        return []
    found = [p.name for p in directory.iterdir() if _VERSION.match(p.name) and (p / "manifest.json").is_file()]
    return sorted(found, key=lambda v: int(v[1:]))


def version_dir(root: Path, ref: str) -> Path:
    name, version = parse_ref(ref)
    path = root / name / version
    if not (path / "manifest.json").is_file():
        raise UnknownVersion(f"{ref}: no such version in {root / name}")
    return path


def read_manifest(root: Path, ref: str) -> dict[str, Any]:
    return orjson.loads((version_dir(root, ref) / "manifest.json").read_bytes())  # type: ignore[no-any-return]


def read_rows(root: Path, ref: str) -> Iterator[dict[str, Any]]:
    """The training lines of a version, in order."""
    with open(version_dir(root, ref) / "train.jsonl", "rb") as f:
        for line in f:
            yield orjson.loads(line)


def read_index(root: Path, ref: str) -> list[dict[str, Any]]:
    with open(version_dir(root, ref) / "index.jsonl", "rb") as f:
        return [orjson.loads(line) for line in f]


def latest(root: Path, name: str) -> dict[str, Any] | None:
    found = versions(root, name)
    return read_manifest(root, f"{name}@{found[-1]}") if found else None


@contextlib.contextmanager
def build_lock(root: Path, name: str) -> Iterator[Path]:
    """Hold the build lock of ``name`` (one build at a time per dataset, across processes) and clear what a dead
    build left; yields the ``.building`` directory to write in."""
    building = root / BUILDING
    building.mkdir(parents=True, exist_ok=True)
    fd = os.open(building / f"{name}.lock", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        for stale in building.glob(f"{name}.v*"):
            shutil.rmtree(stale, ignore_errors=True)
        yield building
    finally:
        os.close(fd)


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def publish(building: Path, root: Path, name: str, version: str, files: dict[str, bytes]) -> Path:
    """Write ``files`` as version ``version`` of ``name`` (under the build lock): temp dir, fsync, rename."""
    tmp = building / f"{name}.{version}"
    tmp.mkdir()
    for filename, data in files.items():
        with open(tmp / filename, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
    _fsync_dir(tmp)
    target_parent = root / name
    target_parent.mkdir(parents=True, exist_ok=True)
    target = target_parent / version
    os.rename(tmp, target)  # fails if the version exists: a version is never overwritten
    _fsync_dir(target_parent)
    return target
