"""Truth in streams under faults (SS-2, SS-3, SS-4, SS-6, SS-7): disconnects at every phase, cuts,
heartbeats, idle streams and slow consumers, against a real fake upstream."""

# ruff: noqa: F811

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import openai
import pytest

from collectors.record import Interaction
from tests.fakes.fixtures import fake_openai  # noqa: F401
from tests.fakes.openai_server import Behavior, FakeOpenAI
from tests.gateway.interactions import tap
from tests.harness import Served, served, write_config

CONFIG = """
server: {{heartbeat_s: 0.2, stream_idle_s: 1.0}}
upstreams:
  main: {{base_url: "{url}", model: main-model, timeout_s: 20}}
  backup: {{base_url: "{url}", model: backup-model}}
routes:
  bot: {{variants: {{main: 100}}}}
  safe: {{variants: {{main: 100}}, fallbacks: [backup]}}
"""
MESSAGES = [{"role": "user", "content": "hello there"}]


@pytest.fixture
def gw(tmp_path: Path, fake_openai: FakeOpenAI) -> Iterator[tuple[Served, list[Interaction]]]:
    with served(write_config(tmp_path, CONFIG.format(url=fake_openai.url))) as server:
        yield server, tap(server)


def body(route: str = "bot", *, stream: bool = True) -> dict[str, object]:
    return {"model": route, "messages": MESSAGES, "stream": stream}


async def wait_for(predicate: object, within: float = 5.0) -> None:
    deadline = time.monotonic() + within
    while not predicate():  # type: ignore[operator]
        assert time.monotonic() < deadline, "condition not met in time"
        await asyncio.sleep(0.01)


@pytest.mark.parametrize("phase", ["plain", "before-headers", "heartbeats", "mid-stream", "retry-wait"])
async def test_client_disconnect_aborts_the_upstream_at_every_phase(
    gw: tuple[Served, list[Interaction]], fake_openai: FakeOpenAI, phase: str
) -> None:
    server, seen = gw
    behavior = {
        "plain": Behavior(delay_s=5),
        "before-headers": Behavior(delay_s=5),
        "heartbeats": Behavior(delay_s=5),
        "mid-stream": Behavior(chunks=50, chunk_delay_s=0.2),
        "retry-wait": Behavior(statuses=[503, 200], retry_after=3),
    }[phase]
    fake_openai.set("main-model", behavior)
    lines: list[str] = []
    async with httpx.AsyncClient(timeout=10) as client:
        if phase in ("mid-stream", "heartbeats"):
            async with client.stream("POST", server.url + "/v1/chat/completions", json=body()) as r:
                async for line in r.aiter_lines():
                    lines.append(line)
                    if line.startswith(("data:", ":")):
                        break
        else:  # nothing came back yet (heartbeats start at 0.2 s): give up after 0.1 s
            asking = asyncio.ensure_future(
                client.post(server.url + "/v1/chat/completions", json=body(stream=phase != "plain"))
            )
            await asyncio.sleep(0.1)
            asking.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await asking
        closed_at = time.monotonic()
    first = (await asyncio.to_thread(fake_openai.wait_for, 1))[0]
    if phase == "retry-wait":
        await wait_for(lambda: seen)
        await asyncio.sleep(0.3)
        assert len(fake_openai.requests) == 1  # the retry after the wait never went out
    else:
        await asyncio.to_thread(first.wait_done, 3.0)
        assert first.aborted and first.finished_at is not None
        assert first.finished_at - closed_at < 1.0
    await wait_for(lambda: seen)
    assert seen[-1].outcome == "client_cancelled"
    if phase == "heartbeats":
        assert lines[0] == ": keep-alive"


async def test_upstream_cut_is_an_error_event_and_a_stored_partial_answer(
    gw: tuple[Served, list[Interaction]], fake_openai: FakeOpenAI
) -> None:
    server, seen = gw
    fake_openai.set("main-model", Behavior(text="one two three four five six", chunk_delay_s=0.05, cut_after=3))
    async with httpx.AsyncClient(timeout=10) as client:
        async with client.stream("POST", server.url + "/v1/chat/completions", json=body("safe")) as r:
            events = [line[5:].strip() async for line in r.aiter_lines() if line.startswith("data:")]
    assert "[DONE]" not in events and len(events) == 3 + 1
    assert json.loads(events[-1])["error"]["code"] == "stream_broken"
    assert all('"finish_reason": "stop"' not in e.replace('":"', '": "') for e in events)
    assert len(fake_openai.requests) == 1  # bytes went out: neither a retry nor the fallback
    it = seen[-1]
    assert it.outcome == "upstream_error" and "upstream" in (it.error or "")
    assert it.response is not None and it.response["choices"][0]["message"]["content"] == "one two three "


def test_heartbeats_while_the_first_token_is_awaited(
    gw: tuple[Served, list[Interaction]], fake_openai: FakeOpenAI
) -> None:
    server, _ = gw
    fake_openai.set("main-model", Behavior(delay_s=0.9))
    t0 = time.monotonic()
    beats: list[float] = []
    with httpx.stream("POST", server.url + "/v1/chat/completions", json=body(), timeout=10) as r:
        lines = []
        for line in r.iter_lines():
            if line.startswith(":"):
                beats.append(time.monotonic() - t0)
            lines.append(line)
    assert 3 <= len(beats) <= 5 and beats[0] < 0.6
    assert lines[-2 if lines[-1] == "" else -1] == "data: [DONE]"
    # the official SDK ignores the comments
    client = openai.OpenAI(base_url=server.url + "/v1", api_key="k", max_retries=0, timeout=10)
    chunks = list(client.chat.completions.create(model="bot", messages=MESSAGES, stream=True))  # type: ignore[arg-type]
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == "echo: hello there"
    print(f"SS-4 heartbeats at {[round(b, 2) for b in beats]}s while the upstream took 0.9s")


def test_heartbeats_after_the_head_until_the_first_token(
    gw: tuple[Served, list[Interaction]], fake_openai: FakeOpenAI
) -> None:
    server, seen = gw  # the head and a role-only chunk come at once, the first token 0.75 s later (idle_s is 1)
    fake_openai.set("main-model", Behavior(text="one two three", first_token_delay_s=0.5, chunk_delay_s=0.25))
    t0 = time.monotonic()
    with httpx.stream("POST", server.url + "/v1/chat/completions", json=body(), timeout=10) as r:
        lines = [(time.monotonic() - t0, line) for line in r.iter_lines() if line]
    data = [line[5:].strip() for _, line in lines if line.startswith("data:")]
    first_token = next(i for i, (_, line) in enumerate(lines) if '"one ' in line)
    beats = [at for at, line in lines if line.startswith(":")]
    assert lines[0][1].startswith("data:") and 2 <= len(beats) <= 4
    assert all(line.startswith("data:") for _, line in lines[first_token:])  # none after it (0.25 s gaps)
    assert data[-1] == "[DONE]" and seen[-1].outcome == "ok"
    assert seen[-1].response is not None and seen[-1].response["choices"][0]["message"]["content"] == "one two three"


def test_a_stream_silent_before_its_first_token_is_broken_off(
    gw: tuple[Served, list[Interaction]], fake_openai: FakeOpenAI
) -> None:
    server, seen = gw
    fake_openai.set("main-model", Behavior(text="late", first_token_delay_s=3))
    t0 = time.monotonic()
    with httpx.stream("POST", server.url + "/v1/chat/completions", json=body(), timeout=10) as r:
        lines = list(r.iter_lines())
    took = time.monotonic() - t0
    data = [line[5:].strip() for line in lines if line.startswith("data:")]
    assert ": keep-alive" in lines and "sent nothing for 1s" in json.loads(data[-1])["error"]["message"]
    assert 1.0 <= took < 2.5
    assert fake_openai.requests[0].wait_done(3).aborted
    assert seen[-1].outcome == "upstream_error"


def test_failure_after_a_heartbeat_is_an_error_event_without_retry(
    gw: tuple[Served, list[Interaction]], fake_openai: FakeOpenAI
) -> None:
    server, seen = gw
    fake_openai.set("main-model", Behavior(statuses=[503, 200], delay_s=0.5))
    with httpx.stream("POST", server.url + "/v1/chat/completions", json=body(), timeout=10) as r:
        assert r.status_code == 200
        lines = list(r.iter_lines())
    data = [line[5:].strip() for line in lines if line.startswith("data:")]
    assert ": keep-alive" in lines and "[DONE]" not in data
    assert json.loads(data[-1])["error"]["type"] == "upstream_error"
    assert len(fake_openai.requests) == 1 and seen[-1].extra["attempts"][0]["status"] == 503


def test_a_silent_stream_is_broken_off(gw: tuple[Served, list[Interaction]], fake_openai: FakeOpenAI) -> None:
    server, seen = gw
    fake_openai.set("main-model", Behavior(text="a b c", chunk_delay_s=3))
    t0 = time.monotonic()
    with httpx.stream("POST", server.url + "/v1/chat/completions", json=body(), timeout=10) as r:
        data = [line[5:].strip() for line in r.iter_lines() if line.startswith("data:")]
    took = time.monotonic() - t0
    assert "[DONE]" not in data and "sent nothing for 1s" in json.loads(data[-1])["error"]["message"]
    assert 1.0 <= took < 2.5
    assert fake_openai.requests[0].wait_done(3).aborted
    assert seen[-1].outcome == "upstream_error"


async def test_a_slow_consumer_holds_the_upstream_back(
    gw: tuple[Served, list[Interaction]], fake_openai: FakeOpenAI
) -> None:
    server, _ = gw
    size = 48 << 20
    fake_openai.set("main-model", Behavior(text="x" * size, chunks=size // 16384))
    received = 0
    async with httpx.AsyncClient(timeout=30) as client:
        async with client.stream("POST", server.url + "/v1/chat/completions", json=body()) as r:
            stream = r.aiter_raw()
            received += len(await stream.__anext__())
            await asyncio.sleep(1.5)  # the client reads nothing
            (rec,) = fake_openai.requests
            held = not rec.done.is_set()
            async for part in stream:
                received += len(part)
    assert held  # the upstream could not finish: nothing between it and the client buffers without bound
    assert received > size
    assert rec.wait_done(5).aborted is False
