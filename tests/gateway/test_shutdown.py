"""Graceful shutdown of a real gateway process (GS-1, GS-2): readiness, drain, cut streams, stored rows."""

from __future__ import annotations

import asyncio
import json
import signal
import time
from pathlib import Path

import httpx

from tests.e2e.capture_client import export
from tests.fakes.openai_server import Behavior, FakeOpenAI
from tests.harness import GatewayProcess, write_config

CONFIG = """
server: {{state_dir: {state}, drain_s: {drain}, heartbeat_s: 0}}
store: sqlite:///{db}
upstreams:
  prod: {{base_url: "{url}", model: m-slow, timeout_s: 30}}
  hung: {{base_url: "{url}", model: m-hang, timeout_s: 30}}
routes:
  bot: {{variants: {{prod: 1}}}}
  stuck: {{variants: {{hung: 1}}}}
"""
MESSAGES = [{"role": "user", "content": "hello there"}]


def config(tmp_path: Path, fake: FakeOpenAI, drain: float) -> Path:
    text = CONFIG.format(state=tmp_path / "state", db=tmp_path / "t.db", url=fake.url, drain=drain)
    return write_config(tmp_path, text)


async def first_failed_readiness(url: str, since: float) -> float:
    """Seconds from ``since`` until /readyz (on a fresh connection) stops answering 200."""
    while True:
        try:
            async with httpx.AsyncClient(timeout=1) as probe:
                ok = (await probe.get(url + "/readyz")).status_code == 200
        except httpx.HTTPError:
            ok = False
        if not ok:
            return time.monotonic() - since
        await asyncio.sleep(0.02)


async def test_sigterm_with_200_in_flight_drains_them_all(tmp_path: Path, fake_openai: FakeOpenAI) -> None:
    fake_openai.set("m-slow", Behavior(delay_s=1.5, chunks=4, chunk_delay_s=0.1))
    cfg = config(tmp_path, fake_openai, drain=20)
    gw = GatewayProcess(cfg)
    try:
        gw.wait_ready()
        limits = httpx.Limits(max_connections=400, max_keepalive_connections=0)
        async with httpx.AsyncClient(timeout=30, limits=limits) as client:

            async def one(i: int) -> tuple[int, str, bool]:
                body = {"model": "bot", "messages": MESSAGES, "stream": i % 2 == 0}
                async with client.stream("POST", gw.url + "/v1/chat/completions", json=body) as resp:
                    text = (await resp.aread()).decode()
                complete = "[DONE]" in text if i % 2 == 0 else '"finish_reason": "stop"' in text.replace('":"', '": "')
                return resp.status_code, resp.headers["x-turnout-request-id"], complete

            calls = [asyncio.ensure_future(one(i)) for i in range(200)]
            await asyncio.to_thread(fake_openai.wait_for, 200, 20.0)
            in_flight = sum(not c.done() for c in calls)
            sent = time.monotonic()
            gw.proc.send_signal(signal.SIGTERM)
            readiness_s = await first_failed_readiness(gw.url, sent)
            results = await asyncio.gather(*calls)
        code = await asyncio.to_thread(gw.proc.wait, 30)
        exited_s = time.monotonic() - sent
    finally:
        gw.stop(signal.SIGKILL)
    assert in_flight == 200
    assert readiness_s < 1.0
    assert [r[0] for r in results] == [200] * 200 and all(r[2] for r in results)
    assert code == 0 and exited_s < 20
    rows = export(cfg, "--format", "raw")
    assert sorted(r["request_id"] for r in rows) == sorted(r[1] for r in results)
    assert {r["outcome"] for r in rows} == {"ok"}
    print(f"GS-1: readiness failed after {readiness_s * 1000:.0f}ms, 200 drained, exit 0 after {exited_s:.2f}s")


async def test_streams_open_at_the_drain_bound_get_an_error_event(tmp_path: Path, fake_openai: FakeOpenAI) -> None:
    fake_openai.set("m-slow", Behavior(chunks=100, chunk_delay_s=0.2))
    fake_openai.set("m-hang", Behavior(hang=True))
    cfg = config(tmp_path, fake_openai, drain=1)
    gw = GatewayProcess(cfg)
    try:
        gw.wait_ready()
        async with httpx.AsyncClient(timeout=30) as client:

            async def stream() -> tuple[str, list[str]]:
                body = {"model": "bot", "messages": MESSAGES, "stream": True}
                async with client.stream("POST", gw.url + "/v1/chat/completions", json=body) as resp:
                    events = [line[6:] async for line in resp.aiter_lines() if line.startswith("data: ")]
                return resp.headers["x-turnout-request-id"], events

            streams = [asyncio.ensure_future(stream()) for _ in range(5)]
            waiting = asyncio.ensure_future(
                client.post(gw.url + "/v1/chat/completions", json={"model": "stuck", "messages": MESSAGES})
            )
            await asyncio.to_thread(fake_openai.wait_for, 6, 10.0)
            await asyncio.sleep(0.5)  # a few chunks went out
            sent = time.monotonic()
            gw.proc.send_signal(signal.SIGTERM)
            cut = await asyncio.gather(*streams)
            cut_s = time.monotonic() - sent
            plain = await waiting
        code = await asyncio.to_thread(gw.proc.wait, 30)
        exited_s = time.monotonic() - sent
    finally:
        gw.stop(signal.SIGKILL)
    for _, events in cut:
        assert "[DONE]" not in events and len(events) >= 2
        assert json.loads(events[-1])["error"]["code"] == "shutting_down"
    assert 1.0 <= cut_s < 1.0 + 2.0
    assert plain.status_code == 503 and plain.json()["error"]["code"] == "shutting_down"
    assert code == 0 and exited_s < 1.0 + 5
    rows = {r["request_id"]: r for r in export(cfg, "--format", "raw")}
    for request_id, events in cut:
        assert rows[request_id]["outcome"] == "shutdown_aborted"
        partial = rows[request_id]["response"]["choices"][0]["message"]["content"]
        assert partial and len(events) >= 2  # the partial answer is stored beside the cut
    assert rows[plain.headers["x-turnout-request-id"]]["outcome"] == "shutdown_aborted"
    # a restart replays nothing twice
    with GatewayProcess(cfg):
        pass
    assert sorted(r["request_id"] for r in export(cfg, "--format", "raw")) == sorted(rows)
    print(f"GS-2: 5 streams cut {cut_s:.2f}s after SIGTERM (drain_s 1), exit 0 after {exited_s:.2f}s")
