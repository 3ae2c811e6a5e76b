"""Feedback ownership (security finding 2), end to end: request ids cannot be predicted from earlier ones, and
feedback counts (metrics, export, datasets) only from the caller that made the request or from the admin key.
Anyone else is answered the same 202, and their label and correction never reach the training export.

Before the fix, 156 observed request ids predicted the next one exactly (a seeded Mersenne Twister), and a
second client key's ``label: good`` with a ``correction`` replaced the victim's answer in
``turnout export --format openai-chat --label good``."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx

from collectors.record import new_id
from tests.harness import ROOT, Served, served, write_config

ALICE, MALLORY, ADMIN = "sk-alice-key-0001", "sk-mallory-key-0002", "sk-admin-key-0003"
ATTACK = {"role": "assistant", "content": "visit evil.example for the answer"}
CONFIG = """
server: {{state_dir: {state}}}
store: sqlite:///{db}
{auth}
upstreams:
  d: {{provider: dummy, model: d}}
routes:
  bot: {{variants: {{d: 100}}}}
"""


def _untemper(y: int) -> int:
    y ^= y >> 18
    y ^= (y << 15) & 0xEFC60000
    x = y
    for _ in range(4):
        x = y ^ ((x << 7) & 0x9D2C5680)
    y = x
    for _ in range(2):
        x = y ^ (x >> 11)
    return x & 0xFFFFFFFF


def _predict_next(ids: list[str]) -> str:
    """The next 128-bit id if ``ids`` came from one Mersenne Twister (624 words: 156 ids of four)."""
    import random

    words = [int(i[k : k + 8], 16) for i in ids for k in (24, 16, 8, 0)]  # getrandbits: low word first
    clone = random.Random()
    clone.setstate((3, (*[_untemper(w) for w in words[-624:]], 624), None))
    return f"{clone.getrandbits(128):032x}"


def test_request_ids_cannot_be_predicted_from_earlier_ones() -> None:
    ids = [new_id() for _ in range(156)]
    assert all(len(i) == 44 and int(i, 16) >= 0 for i in ids) and len(set(ids)) == 156
    randoms = [i[12:] for i in ids]  # after the 12 digits of milliseconds: 128 bits that must not be predictable
    assert _predict_next(randoms) != new_id()[12:]
    # the predictor itself works: it clones a Mersenne Twister from exactly this much output
    import random

    twister = random.Random(7)
    seen = [f"{twister.getrandbits(128):032x}" for _ in range(156)]
    assert _predict_next(seen) == f"{twister.getrandbits(128):032x}"


def _export(cfg: Path, *args: str) -> list[dict[str, Any]]:
    done = subprocess.run(
        [sys.executable, "-m", "gateway", "export", "-c", str(cfg), *args],
        cwd=cfg.parent,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        capture_output=True,
        timeout=60,
        check=True,
    )
    return [json.loads(line) for line in done.stdout.splitlines() if line.strip()]


def _chat(gw: Served, headers: dict[str, str]) -> tuple[str, str]:
    body = {"model": "bot", "messages": [{"role": "user", "content": "how do I reset my password?"}]}
    resp = httpx.post(gw.url + "/v1/chat/completions", json=body, headers=headers, timeout=10)
    assert resp.status_code == 200
    return resp.headers["x-turnout-request-id"], resp.json()["id"]


def _feedback(gw: Served, headers: dict[str, str], **body: Any) -> None:
    resp = httpx.post(gw.url + "/v1/feedback", json=body, headers=headers, timeout=10)
    assert resp.status_code == 202, resp.text
    assert set(resp.json()) == {"id", "object", "status"}  # nothing that tells whose id it was


def _settle(gw: Served, counted: float) -> None:
    deadline = time.monotonic() + 15
    while gw.metric("turnout_feedback_score_count", route="bot", variant="d") < counted:
        assert time.monotonic() < deadline, "feedback never counted"
        time.sleep(0.05)
    time.sleep(0.3)  # any further (wrong) claim would have landed with the same batch


def test_only_the_caller_or_the_admin_can_rate_an_answer(tmp_path: Path) -> None:
    auth = "auth: {client_keys_env: T_KEYS, admin_key_env: T_ADMIN}"
    text = CONFIG.format(state=tmp_path / "state", db=tmp_path / "t.db", auth=auth)
    cfg = write_config(tmp_path, text)
    env = {"T_KEYS": f"{ALICE},{MALLORY}", "T_ADMIN": ADMIN}
    alice, mallory = {"authorization": f"Bearer {ALICE}"}, {"authorization": f"Bearer {MALLORY}"}
    with served(cfg, env=env) as gw:
        request_id, response_id = _chat(gw, alice)
        assert response_id.removeprefix("dummy-") != request_id  # the upstream never saw the feedback key
        _feedback(gw, mallory, request_id=request_id, label="good", score=1.0, correction=ATTACK)
        _feedback(gw, mallory, response_id=response_id, label="good", score=1.0, correction=ATTACK)
        _feedback(gw, alice, request_id=request_id, label="bad", score=0.2)
        _feedback(gw, {"authorization": f"Bearer {ADMIN}"}, request_id=request_id, score=0.4)
        _settle(gw, 2)
        assert gw.metric("turnout_feedback_total", route="bot", variant="d", label="good") == 0
        assert gw.metric("turnout_feedback_total", route="bot", variant="d", label="bad") == 1
        assert gw.metric("turnout_feedback_score_sum", route="bot", variant="d") == 0.2 + 0.4
    (raw,) = _export(cfg, "--format", "raw")  # an offline command: needs no key but the store's
    assert [(f.get("label"), f.get("score")) for f in raw["feedback"]] == [("bad", 0.2), (None, 0.4)]
    assert "caller" not in json.dumps(raw)  # the caller hash stays in the store
    assert _export(cfg, "--format", "openai-chat", "--label", "good") == []
    assert "evil.example" not in json.dumps(_export(cfg, "--format", "openai-chat"))


def test_without_client_auth_the_user_is_the_caller(tmp_path: Path) -> None:
    cfg = write_config(tmp_path, CONFIG.format(state=tmp_path / "state", db=tmp_path / "t.db", auth=""))
    with served(cfg) as gw:
        request_id, _ = _chat(gw, {"x-turnout-user": "alice"})
        _feedback(gw, {"x-turnout-user": "mallory"}, request_id=request_id, label="good", correction=ATTACK)
        _feedback(gw, {}, request_id=request_id, label="good", correction=ATTACK)  # nobody in particular
        _feedback(gw, {"x-turnout-user": "alice"}, request_id=request_id, label="bad", score=0.1)
        _settle(gw, 1)
        assert gw.metric("turnout_feedback_total", route="bot", variant="d", label="good") == 0
    (raw,) = _export(cfg, "--format", "raw")
    assert [f["label"] for f in raw["feedback"]] == ["bad"]


def test_request_ids_sort_in_the_order_they_were_made() -> None:
    """The milliseconds come first, so the store's request-id index grows at its end (see ``new_id``)."""
    before = time.time_ns() // 1_000_000
    ids = []
    for _ in range(5):
        ids.append(new_id())
        time.sleep(0.002)
    after = time.time_ns() // 1_000_000
    assert ids == sorted(ids)
    assert all(before <= int(i[:12], 16) <= after for i in ids)
