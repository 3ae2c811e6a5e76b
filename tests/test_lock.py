"""The hash-pinned lock files (security finding 8) against pyproject.toml: every dependency it names (runtime, the
dev extra, the build system) is pinned with ``==`` and file hashes, at a version its range admits; the runtime lock
and the dev lock agree; the image and CI install from them with hashes required."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

ROOT = Path(__file__).resolve().parent.parent
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())
PIN = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._-]*)==(\S+)")
HASH = re.compile(r"--hash=sha256:[0-9a-f]{64}\b")


def read_lock(name: str) -> dict[str, tuple[str, int]]:
    """``{canonical name: (version, hashes)}`` from a lock file (a pin line and its ``\\``-continued hashes)."""
    text = (ROOT / name).read_text()
    entries: dict[str, tuple[str, int]] = {}
    for block in re.split(r"\n(?=\S)", text):
        first = block.split("\n", 1)[0]
        if first.startswith("#") or not first.strip():
            continue
        match = PIN.match(first)
        assert match, f"{name}: not a '==' pin: {first!r}"
        entries[canonicalize_name(match.group(1))] = (match.group(2), len(HASH.findall(block)))
    return entries


RUNTIME = [Requirement(r) for r in PYPROJECT["project"]["dependencies"]]
DEV = [Requirement(r) for r in PYPROJECT["project"]["optional-dependencies"]["dev"]]
BUILD = [Requirement(r) for r in PYPROJECT["build-system"]["requires"]]
LOCKS = {"requirements.lock": RUNTIME + BUILD, "requirements-dev.lock": RUNTIME + DEV + BUILD}


@pytest.mark.parametrize("lock", sorted(LOCKS))
def test_every_dependency_is_pinned_with_hashes_inside_its_range(lock: str) -> None:
    entries = read_lock(lock)
    problems = []
    for req in LOCKS[lock]:
        if req.marker is not None and not req.marker.evaluate({"extra": "dev"}):
            continue
        pinned = entries.get(canonicalize_name(req.name))
        if pinned is None:
            problems.append(f"{req.name}: not in {lock}")
            continue
        version, hashes = pinned
        if not req.specifier.contains(Version(version), prereleases=True):
            problems.append(f"{req.name}=={version} is outside pyproject's {req.specifier}")
        if hashes == 0:
            problems.append(f"{req.name}=={version}: no --hash")
    assert not problems, f"{lock} is stale (regenerate it: bash .ci/lock):\n" + "\n".join(problems)


@pytest.mark.parametrize("lock", sorted(LOCKS))
def test_every_locked_package_has_a_hash(lock: str) -> None:
    unhashed = [f"{name}=={version}" for name, (version, hashes) in read_lock(lock).items() if hashes == 0]
    assert read_lock(lock) and not unhashed


def test_the_dev_lock_holds_the_runtime_lock_at_the_same_versions() -> None:
    runtime, dev = read_lock("requirements.lock"), read_lock("requirements-dev.lock")
    differ = {
        name: (v, dev.get(name, ("missing", 0))[0]) for name, (v, _) in runtime.items() if dev.get(name, ("",))[0] != v
    }
    assert not differ, f"runtime vs dev lock: {differ}"


def test_image_and_ci_install_only_from_the_locks() -> None:
    dockerfile = (ROOT / "Dockerfile").read_text()
    assert "pip install --require-hashes -r requirements.lock" in dockerfile
    assert "pip install --no-deps --no-build-isolation ." in dockerfile
    ci = (ROOT / ".ci" / "run").read_text()
    assert "pip install -q --require-hashes -r requirements-dev.lock" in ci
    assert "pip install -q --no-deps --no-build-isolation -e ." in ci
    unpinned = [line for line in ci.splitlines() if "pip install" in line and "--require-hashes" not in line]
    assert all("--no-deps" in line for line in unpinned), unpinned
