"""The Dockerfile, checked statically (no container engine in CI): a multi-stage build whose final stage
runs `turnout serve` as an unprivileged user from a copied virtualenv, with no build tools and no
HEALTHCHECK (Kubernetes probes do that), and a .dockerignore that still sends what the build copies.
"""

from __future__ import annotations

import fnmatch
import json
import re
import tomllib
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
BUILD_TOOLS = re.compile(r"\b(apt-get|apt|apk|gcc|g\+\+|make|build-essential|pip\d?\s+install|python\S*\s+-m\s+pip)\b")

Instruction = tuple[str, str]


def instructions(text: str) -> list[Instruction]:
    """(KEYWORD, arguments) per instruction, continuation lines joined, comments dropped."""
    joined = re.sub(r"\\\n", " ", "\n".join(ln for ln in text.splitlines() if not ln.lstrip().startswith("#")))
    found = []
    for line in joined.splitlines():
        if line.strip():
            keyword, _, args = line.strip().partition(" ")
            found.append((keyword.upper(), args.strip()))
    return found


def stages() -> list[list[Instruction]]:
    result: list[list[Instruction]] = []
    for keyword, args in instructions((REPO / "Dockerfile").read_text()):
        if keyword == "FROM":
            result.append([])
        if result:
            result[-1].append((keyword, args))
    return result


def test_multi_stage_build_copies_only_the_virtualenv() -> None:
    builder, final = stages()[0], stages()[-1]
    assert len(stages()) >= 2
    builder_name = builder[0][1].split()[-1]
    assert builder[0][1].split()[-2].upper() == "AS"
    venv = [args for keyword, args in final if keyword == "COPY"]
    assert venv == [f"--from={builder_name} /opt/turnout /opt/turnout"], venv
    assert any(k == "RUN" and "pip install" in a for k, a in builder), "the builder installs the wheel"
    env = " ".join(args for keyword, args in final if keyword == "ENV")
    assert "PYTHONUNBUFFERED=1" in env and "PATH=/opt/turnout/bin:$PATH" in env


def test_final_stage_has_no_build_tools_and_no_healthcheck() -> None:
    final = stages()[-1]
    for keyword, args in final:
        assert keyword != "HEALTHCHECK", "Kubernetes probes /healthz and /readyz"
        if keyword == "RUN":
            assert not BUILD_TOOLS.search(args), args
    base_images = {
        args.split()[0] for keyword, args in instructions((REPO / "Dockerfile").read_text()) if keyword == "FROM"
    }
    assert base_images == {"${PYTHON_IMAGE}"}, "builder and runtime share one base: venv paths match"
    arg = next(a for k, a in instructions((REPO / "Dockerfile").read_text()) if k == "ARG")
    assert re.fullmatch(r"PYTHON_IMAGE=python:3\.1[1-9]-slim(-\w+)?", arg), arg


def test_runs_turnout_serve_as_non_root() -> None:
    final = stages()[-1]
    users = [args for keyword, args in final if keyword == "USER"]
    assert users, "the final stage sets USER"
    user = users[-1].split(":")[0]
    assert user.isdigit() and int(user) >= 1000, "numeric non-root uid, so runAsNonRoot can verify it"
    entrypoint = [json.loads(args) for keyword, args in final if keyword == "ENTRYPOINT"]
    cmd = [json.loads(args) for keyword, args in final if keyword == "CMD"]
    assert entrypoint == [["turnout"]]
    assert cmd == [["serve", "-c", "/etc/turnout/turnout.yaml"]]
    scripts = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["scripts"]
    assert "turnout" in scripts


def test_dockerignore_sends_what_the_build_copies() -> None:
    patterns = [
        ln.strip() for ln in (REPO / ".dockerignore").read_text().splitlines() if ln.strip() and not ln.startswith("#")
    ]

    def sent(path: str) -> bool:
        included = True
        for pattern in patterns:
            negated = pattern.startswith("!")
            bare = pattern.removeprefix("!").rstrip("/")
            if fnmatch.fnmatch(path, bare) or path.startswith(bare + "/"):
                included = negated
        return included

    copied = [
        src
        for keyword, args in instructions((REPO / "Dockerfile").read_text())
        if keyword == "COPY" and not args.startswith("--from")
        for src in args.split()[:-1]
    ]
    assert {"pyproject.toml", "README.md", "gateway"} <= set(copied)
    for src in copied:
        assert (REPO / src).exists(), f"{src} is copied but missing"
        assert sent(src), f"{src} is copied but excluded by .dockerignore"
    for private in (".git", ".venv", "tests", "turnout.db", "turnout-state", "helm"):
        assert not sent(private), f"{private} would be sent to the build"
    packages = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"]["find"]
    assert {p.rstrip("*") for p in packages["include"]} <= set(copied), "every package is copied"
