"""Security findings 5, 9 and 13: bounded feedback (64 KB, a rate per caller) and ``n``; files created 0600;
``x-turnout-no-capture`` honoured for every usual truthy value.

Before: 1 MB feedback bodies were accepted without limit of count (twenty in 2.7 s), ``n: 1000000`` went to
primary and shadow, the store and exports were created 0644, and ``x-turnout-no-capture: True`` was ignored."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
import time
from pathlib import Path

import httpx

from tests.harness import ROOT, GatewayProcess, served, write_config

CONFIG = """
server: {{state_dir: {state}, max_n: 4}}
store: sqlite:///{db}
upstreams:
  d: {{provider: dummy, model: d}}
routes:
  bot: {{variants: {{d: 100}}}}
"""
CHAT = {"model": "bot", "messages": [{"role": "user", "content": "hi"}]}


def _config(tmp_path: Path) -> Path:
    return write_config(tmp_path, CONFIG.format(state=tmp_path / "state", db=tmp_path / "t.db"))


def test_feedback_size_and_rate_and_n_are_capped(tmp_path: Path) -> None:
    with served(_config(tmp_path)) as gw, httpx.Client(base_url=gw.url, timeout=10) as http:
        big = {"request_id": "x", "comment": "c" * (64 * 1024)}
        assert http.post("/v1/feedback", json=big).status_code == 413
        me = {"x-turnout-user": "me"}
        answers = [http.post("/v1/feedback", json={"request_id": "x"}, headers=me).status_code for _ in range(121)]
        assert answers[:120] == [202] * 120 and answers[120] == 429
        limited = http.post("/v1/feedback", json={"request_id": "x"}, headers=me)
        assert limited.status_code == 429 and int(limited.headers["retry-after"]) >= 1
        other = http.post("/v1/feedback", json={"request_id": "x"}, headers={"x-turnout-user": "you"})
        assert other.status_code == 202  # per caller: one caller's flood does not silence another
        for n in (1000000, 5, 0, True, "2"):
            resp = http.post("/v1/chat/completions", json={**CHAT, "n": n})
            assert resp.status_code == 400 and resp.json()["error"]["param"] == "n", n
        assert http.post("/v1/chat/completions", json={**CHAT, "n": 4}).status_code == 200


def _stored_ids(db: Path) -> set[str]:
    import sqlite3

    with sqlite3.connect(db) as conn:
        rows = conn.execute("SELECT request_id FROM interactions").fetchall()
    conn.close()
    return {r[0] for r in rows}


def test_no_capture_takes_any_truthy_value_and_refuses_nonsense(tmp_path: Path) -> None:
    with served(_config(tmp_path)) as gw, httpx.Client(base_url=gw.url, timeout=10) as http:
        skipped, kept = [], []
        for value in ("1", "true", "True", "yes", "ON"):
            resp = http.post("/v1/chat/completions", json=CHAT, headers={"x-turnout-no-capture": value})
            assert resp.status_code == 200
            skipped.append(resp.headers["x-turnout-request-id"])
        for value in ("0", "false", "no"):
            resp = http.post("/v1/chat/completions", json=CHAT, headers={"x-turnout-no-capture": value})
            kept.append(resp.headers["x-turnout-request-id"])
        bad = http.post("/v1/chat/completions", json=CHAT, headers={"x-turnout-no-capture": "maybe"})
        assert bad.status_code == 400 and "x-turnout-no-capture" in bad.json()["error"]["message"]
        deadline = time.monotonic() + 10
        while not set(kept) <= _stored_ids(tmp_path / "t.db"):
            assert time.monotonic() < deadline
            time.sleep(0.05)
    assert not set(skipped) & _stored_ids(tmp_path / "t.db")


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_store_journal_and_exports_are_private_files(tmp_path: Path) -> None:
    cfg = _config(tmp_path)
    old = os.umask(0o022)  # what a shell usually has: the gateway must not depend on it
    try:
        with GatewayProcess(cfg) as gw:
            assert httpx.post(gw.url + "/v1/chat/completions", json=CHAT, timeout=10).status_code == 200
            deadline = time.monotonic() + 10
            while not (tmp_path / "t.db").exists() or not _stored_ids(tmp_path / "t.db"):
                assert time.monotonic() < deadline
                time.sleep(0.05)
            made = [p for p in tmp_path.glob("t.db*")] + [p for p in (tmp_path / "state").rglob("*") if p.is_file()]
            assert {p.name for p in made} >= {"t.db", "t.db-wal"}
            assert all(_mode(p) & 0o077 == 0 for p in made), {p.name: oct(_mode(p)) for p in made}
        out = tmp_path / "train.jsonl"
        subprocess.run(
            [sys.executable, "-m", "gateway", "export", "-c", str(cfg), "-o", str(out)],
            env={**os.environ, "PYTHONPATH": str(ROOT)},
            cwd=tmp_path,
            check=True,
            capture_output=True,
            timeout=60,
        )
        assert _mode(out) == 0o600
    finally:
        os.umask(old)
