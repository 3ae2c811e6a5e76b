"""The long commands' output conventions, run as a user types them: a bar on a terminal's stderr, plain lines
when piped (no carriage return, no escape sequence), nothing on stderr with --quiet, results on stdout always."""

from __future__ import annotations

import asyncio
import fcntl
import json
import os
import pty
import select
import struct
import subprocess
import sys
import termios
from pathlib import Path

from tests.gateway.test_dataset_cli import seed, setup
from tests.gateway.test_eval_cli import files  # noqa: F401  (the fixture: a config and a 60-case suite)
from tests.harness import ROOT

CONTROL = ("\r", "\x1b")


def turnout(*args: str) -> subprocess.CompletedProcess[str]:
    cmd = [sys.executable, "-m", "gateway", *args]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=120, cwd=ROOT, check=False)


def test_eval_run_piped_prints_plain_progress_lines_and_quiet_prints_none(files: tuple[Path, Path]) -> None:  # noqa: F811
    config, suite = files
    piped = turnout("eval", "run", str(suite), "-c", str(config), "--upstream", "prod", "--no-store")
    assert piped.returncode == 0, piped.stderr
    assert "PASS plus-one on prod" in piped.stdout
    assert "eval plus-one on prod: 60/60 cases" in piped.stderr.splitlines()
    assert not any(c in piped.stdout + piped.stderr for c in CONTROL)
    quiet = turnout("eval", "run", str(suite), "-c", str(config), "--upstream", "prod", "--no-store", "--quiet")
    assert quiet.returncode == 0 and quiet.stderr == ""
    assert quiet.stdout == piped.stdout


def test_eval_compare_quiet_keeps_the_verdict_and_the_json(files: tuple[Path, Path]) -> None:  # noqa: F811
    config, suite = files
    args = ("eval", "compare", str(suite), "-c", str(config), "--baseline", "prod", "--candidate", "cand", "--no-store")
    piped = turnout(*args)
    assert piped.returncode == 1 and "eval compare prod vs cand: 120 cases" in piped.stderr.splitlines()
    quiet = turnout(*args, "--quiet", "--json", "-")
    assert quiet.returncode == 1 and quiet.stderr == ""
    assert '"not_worse": false' in quiet.stdout and not any(c in quiet.stdout for c in CONTROL)


def test_eval_run_on_a_terminal_draws_a_bar(files: tuple[Path, Path]) -> None:  # noqa: F811
    config, suite = files
    leader, follower = pty.openpty()
    fcntl.ioctl(follower, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 100, 0, 0))  # a new pty is 0 columns wide
    cmd = [sys.executable, "-m", "gateway", "eval", "run", str(suite), "-c", str(config), "--upstream", "prod"]
    proc = subprocess.Popen([*cmd, "--no-store"], stdout=subprocess.PIPE, stderr=follower, cwd=ROOT)
    os.close(follower)
    drawn = b""
    try:
        while proc.poll() is None or select.select([leader], [], [], 0)[0]:
            if select.select([leader], [], [], 0.5)[0]:
                try:
                    drawn += os.read(leader, 65536)
                except OSError:  # the terminal closed with the process
                    break
        out = proc.stdout.read().decode() if proc.stdout else ""
    finally:
        proc.wait(timeout=60)
        os.close(leader)
        if proc.stdout:
            proc.stdout.close()
    assert proc.returncode == 0 and "PASS plus-one on prod" in out
    screen = drawn.decode(errors="replace")
    assert "\r" in screen and "/60 [" in screen and "eval plus-one on prod:" in screen, screen


def test_export_piped_and_quiet(tmp_path: Path) -> None:
    cfg = setup(tmp_path)
    asyncio.run(seed(tmp_path / "t.db", 30))
    piped = turnout("export", "-c", str(cfg), "--format", "raw")
    assert piped.returncode == 0, piped.stderr
    assert len(piped.stdout.splitlines()) == 30
    assert piped.stderr.splitlines() == ["exporting: 30 lines", "turnout export: 30 lines"]
    assert not any(c in piped.stderr for c in CONTROL)
    quiet = turnout("export", "-c", str(cfg), "--format", "raw", "-q")
    assert quiet.returncode == 0 and quiet.stderr == "" and quiet.stdout == piped.stdout


def test_dataset_build_json_is_the_result_as_data(tmp_path: Path) -> None:
    cfg = setup(tmp_path)
    asyncio.run(seed(tmp_path / "t.db", 12))
    dry = turnout("dataset", "build", "support", "-c", str(cfg), "--dry-run", "--json", "--quiet")
    assert dry.returncode == 0 and dry.stderr == "", dry.stderr
    assert json.loads(dry.stdout)["version"] is None and json.loads(dry.stdout)["dry_run"] is True
    built = turnout("dataset", "build", "support", "-c", str(cfg), "--json")
    assert built.stderr.splitlines() == ["dataset support: reading: 12 interactions"]
    doc = json.loads(built.stdout)
    assert built.returncode == 0 and doc["version"] == "v0001" and doc["counts"]["examples"] == 12
    assert Path(doc["path"], "train.jsonl").is_file() and len(doc["sha256"]) == 64
