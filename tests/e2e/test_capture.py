"""Capture end to end: a real gateway process, a fake upstream, a real SQLite file, ``turnout export``."""

from __future__ import annotations

import asyncio
import json
import signal
import time
from pathlib import Path

import httpx

from tests.e2e.capture_client import Seen, ask, export
from tests.fakes.openai_server import Behavior, FakeOpenAI
from tests.harness import GatewayProcess, write_config

CONFIG = """
server: {{state_dir: {state}}}
store: sqlite:///{db}
shadow: {{max_in_flight: 500}}
upstreams:
  prod: {{base_url: "{url}", model: m-ok}}
  cand: {{base_url: "{url}", model: m-cand}}
  broken: {{base_url: "{url}", model: m-500}}
routes:
  bot: {{variants: {{prod: 1}}, shadows: [{{upstream: cand, sample: 1.0}}]}}
  flaky: {{variants: {{broken: 1}}}}
"""


def config(tmp_path: Path, fake: FakeOpenAI) -> Path:
    text = CONFIG.format(state=tmp_path / "state", db=tmp_path / "t.db", url=fake.url)
    return write_config(tmp_path, text)


def metric(text: str, line_start: str) -> float:
    for line in text.splitlines():
        if line.startswith(line_start + " "):
            return float(line.rsplit(" ", 1)[1])
    return 0.0


async def test_every_answered_request_is_exported_with_its_feedback(tmp_path: Path, fake_openai: FakeOpenAI) -> None:
    fake_openai.set("m-500", Behavior(statuses=[500] * 1000))
    fake_openai.set("m-ok", Behavior(chunk_delay_s=0.002))
    cfg = config(tmp_path, fake_openai)
    with GatewayProcess(cfg) as gw:
        async with httpx.AsyncClient(timeout=30) as client:

            async def one(i: int) -> Seen | None:
                route = "flaky" if i % 10 == 7 else "bot"
                seen = await ask(client, gw.url, route, f"question {i}", stream=i % 2 == 0, opted_out=i % 10 == 3)
                if seen is None or route == "flaky":
                    return seen
                if i % 4 == 0:  # feedback 0 ms after the answer, long before the writer's batch
                    r = await client.post(
                        gw.url + "/v1/feedback",
                        json={"request_id": seen.request_id, "score": 0.9, "label": "good", "task_completed": True},
                    )
                    assert r.status_code == 202
                elif i % 4 == 1:
                    r = await client.post(
                        gw.url + "/v1/feedback", json={"response_id": seen.response_id, "label": "bad"}
                    )
                    assert r.status_code == 202
                return seen

            seen = await asyncio.gather(*(one(i) for i in range(80)))
            assert all(s is not None for s in seen)
            r = await client.post(gw.url + "/v1/feedback", json={"request_id": "never-seen", "score": 1})
            assert r.status_code == 202
            for bad in ({"request_id": "x", "score": "high"}, {"request_id": "x", "label": "meh"}, {"score": 1},
                        {"request_id": 5}, {"request_id": "x", "task_completed": "yes"}, [1]):  # fmt: skip
                r = await client.post(gw.url + "/v1/feedback", json=bad)
                assert r.status_code == 400, bad
                assert r.json()["error"]["type"] == "invalid_request_error"
            captured = [s for s in seen if s is not None and not s.opted_out]
            bot = [s for s in captured if s.route == "bot"]
            deadline = time.monotonic() + 15
            while True:
                text = (await client.get(gw.url + "/metrics")).text
                if metric(text, 'turnout_interactions_captured_total{route="bot"}') == 2 * len(bot):  # + shadows
                    break
                assert time.monotonic() < deadline, "writer did not catch up"
                await asyncio.sleep(0.1)
            assert (await client.get(gw.url + "/readyz")).json()["status"] == "ok"
        assert gw.stop(signal.SIGTERM) in (0, -signal.SIGTERM)  # uvicorn re-raises the signal once it is done
        assert "Application shutdown complete" in gw.output()

    everything = export(cfg, "--format", "raw")
    rows = {r["request_id"]: r for r in everything if r["role"] == "primary"}
    assert set(rows) == {s.request_id for s in captured}
    shadows = [r for r in everything if r["role"] == "shadow"]
    assert sorted(r["parent_id"] for r in shadows) == sorted(s.request_id for s in bot)  # none for opted-out ones
    for shadow in shadows:
        assert shadow["variant"] == "cand" and shadow["route"] == "bot"
        assert shadow["request"]["messages"] == rows[shadow["parent_id"]]["request"]["messages"]
        assert shadow["response"]["choices"][0]["message"]["content"]
    assert len({r["request_id"] for r in everything}) == len(everything)
    assert not (tmp_path / "state" / "dead-letter.jsonl").exists()
    for s in captured:
        row = rows[s.request_id]
        assert row["request"]["messages"] == s.messages
        assert row["route"] == s.route and row["role"] == "primary" and row["parent_id"] is None
        assert row["latency_ms"] > 0 and row["ts"].endswith("Z")
        assert row["stream"] is s.stream
        if s.route == "flaky":
            assert row["status"] == 502 and row["response"] is None and row["error"]
            continue
        assert row["status"] == 200 and row["error"] is None
        assert row["response"]["object"] == "chat.completion"
        assert row["response"]["choices"][0]["message"]["content"] == s.content
        assert row["usage"]["total_tokens"] > 0
        assert (row["ttft_ms"] is not None) is s.stream
        i = int(s.messages[0]["content"].split()[1])
        labels = [f.get("label") for f in row["feedback"]]
        assert labels == (["good"] if i % 4 == 0 else ["bad"] if i % 4 == 1 else []), (i, row["feedback"])
    chat = export(cfg, "--format", "openai-chat")
    assert len(chat) == len(bot)
    assert all(line["messages"][-1]["role"] == "assistant" for line in chat)
    good = export(cfg, "--format", "openai-chat", "--label", "good")
    assert len(good) == sum(1 for s in bot if int(s.messages[0]["content"].split()[1]) % 4 == 0)


async def test_feedback_is_durable_before_202(tmp_path: Path, fake_openai: FakeOpenAI) -> None:
    cfg = config(tmp_path, fake_openai)
    gw = GatewayProcess(cfg)
    gw.wait_ready()
    async with httpx.AsyncClient(timeout=10) as client:
        seen = await ask(client, gw.url, "bot", "remember me", stream=False)
        assert seen is not None
        r = await client.post(gw.url + "/v1/feedback", json={"request_id": seen.request_id, "score": 0.25})
        assert r.status_code == 202
    gw.stop(signal.SIGKILL)  # at once: only the journal has them
    with GatewayProcess(cfg) as again:
        pass
    assert "Application shutdown complete" in again.output()
    (row,) = export(cfg, "--role", "primary")
    assert row["request_id"] == seen.request_id
    assert [f["score"] for f in row["feedback"]] == [0.25]


async def test_two_workers_share_one_sqlite_file(tmp_path: Path, fake_openai: FakeOpenAI) -> None:
    cfg = config(tmp_path, fake_openai)
    with GatewayProcess(cfg, args=("--workers", "2")) as gw:
        async with httpx.AsyncClient(timeout=30, limits=httpx.Limits(max_keepalive_connections=0)) as client:
            gate = asyncio.Semaphore(16)

            async def one(i: int) -> Seen | None:
                async with gate:
                    return await ask(client, gw.url, "flaky" if i % 5 == 0 else "bot", f"w {i}", stream=i % 2 == 0)

            seen = [s for s in await asyncio.gather(*(one(i) for i in range(120))) if s is not None]
        gw.stop(signal.SIGTERM)
    assert len(seen) == 120
    assert len({line.split()[-1] for line in gw.output().splitlines() if "Started server process" in line}) == 2
    rows = export(cfg, "--role", "primary")
    assert sorted(r["request_id"] for r in rows) == sorted(s.request_id for s in seen)
    assert list((tmp_path / "state" / "journal").iterdir()) == []


async def test_secrets_never_reach_the_store(tmp_path: Path, fake_openai: FakeOpenAI) -> None:
    client_key, upstream_key = "canary-client-7f3a91", "canary-upstream-c2d8e4"
    text = CONFIG.format(state=tmp_path / "state", db=tmp_path / "t.db", url=fake_openai.url)
    text = text.replace("model: m-ok}", "model: m-ok, api_key_env: T_UPSTREAM}")
    cfg = write_config(tmp_path, "auth: {client_keys_env: T_CLIENTS}\n" + text)
    env = {"T_CLIENTS": client_key, "T_UPSTREAM": upstream_key}
    with GatewayProcess(cfg, env=env) as gw:
        async with httpx.AsyncClient(timeout=10, headers={"authorization": f"Bearer {client_key}"}) as client:
            for content in (
                f"my key is {client_key} and theirs {upstream_key}",
                "curl -H 'Authorization: Bearer sk-proj-abcdefghijklmnopqrstuvwx' https://api.example.com",
            ):
                body = {"model": "bot", "messages": [{"role": "user", "content": content}]}
                r = await client.post(gw.url + "/v1/chat/completions", json=body)
                assert r.status_code == 200
            r = await client.post(gw.url + "/v1/feedback", json={"request_id": "x", "comment": f"key {client_key}"})
            assert r.status_code == 202
        gw.stop(signal.SIGTERM)
    primary = next(r for r in fake_openai.requests if r.body["model"] == "m-ok")  # the shadow (m-cand) has no key
    headers = {k.lower(): v for k, v in primary.headers.items()}
    assert headers["authorization"] == f"Bearer {upstream_key}"  # the upstream did get its key
    dumped = json.dumps(export(cfg))
    assert "[redacted:secret]" in dumped
    for canary in (client_key, upstream_key, "sk-proj-abcdefghijklmnopqrstuvwx"):
        assert canary not in dumped
        assert files_holding(tmp_path, canary.encode()) == []  # store, journal, dead letters


def files_holding(root: Path, needle: bytes) -> list[Path]:
    return [p for p in root.rglob("*") if p.is_file() and p.suffix != ".log" and needle in p.read_bytes()]
