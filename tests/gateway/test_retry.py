"""Retries and fallbacks inside one deadline, ejection, malformed answers (UP-1 to UP-5, SS-7).

Every test runs a real gateway (uvicorn in a thread) against real fake upstreams on 127.0.0.1.
"""

# The fixtures are imported by name, so every test parameter "redefines" them.
# ruff: noqa: F811

from __future__ import annotations

import asyncio
import itertools
import json
import random
import time
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from pathlib import Path

import httpx
import pytest
from prometheus_client import CollectorRegistry, Gauge

from gateway.config import parse_config
from gateway.ejection import Ejector
from gateway.resilience import RetryBudget
from gateway.retry import backoff, retry_after_s
from tests.fakes.fixtures import fake_openai  # noqa: F401
from tests.fakes.openai_server import Behavior, FakeOpenAI
from tests.gateway.interactions import tap
from tests.harness import Served, free_port, served, write_config

MESSAGES = [{"role": "user", "content": "hello there"}]
BASE = """
upstreams:
  main: {{base_url: "{url}", model: main-model, timeout_s: 2}}
  backup: {{base_url: "{url}", model: backup-model, timeout_s: 2}}
  dead: {{base_url: "http://127.0.0.1:{dead}/v1", model: x, retries: 2}}
  slow: {{base_url: "{url}", model: slow-model, timeout_s: 0.5}}
routes:
  bot: {{variants: {{main: 100}}}}
  safe: {{variants: {{main: 100}}, fallbacks: [backup]}}
  gone: {{variants: {{dead: 100}}}}
  rescued: {{variants: {{dead: 100}}, fallbacks: [backup]}}
  patient: {{variants: {{slow: 100}}, fallbacks: [backup], timeout_s: 3}}
  hung: {{variants: {{slow: 100}}}}
"""

Start = Callable[..., AbstractContextManager[Served]]


@pytest.fixture
def start(tmp_path: Path, fake_openai: FakeOpenAI) -> Iterator[Start]:
    """``with start() as gw`` serves BASE (or ``start(text)``, formatted with url and dead)."""

    def open_(text: str = BASE) -> AbstractContextManager[Served]:
        return served(write_config(tmp_path, text.format(url=fake_openai.url, dead=free_port())))

    yield open_


def chat(gw: Served, route: str, *, timeout: float = 10, **extra: object) -> httpx.Response:
    body = {"model": route, "messages": MESSAGES, **extra}
    return httpx.post(gw.url + "/v1/chat/completions", json=body, timeout=timeout)


def attempts(gw: Served, upstream: str, outcome: str) -> float:
    return gw.metric("turnout_upstream_attempts_total", upstream=upstream, outcome=outcome)


def test_503_503_200_is_answered_after_jittered_retries(start: Start, fake_openai: FakeOpenAI) -> None:
    gaps: list[float] = []
    with start() as gw:
        seen = tap(gw)
        for _ in range(5):
            before = len(fake_openai.requests)
            fake_openai.set("main-model", Behavior(statuses=[503, 503, 200]))
            resp = chat(gw, "bot")
            assert resp.status_code == 200 and resp.json()["choices"][0]["message"]["content"] == "echo: hello there"
            recs = fake_openai.requests[before:]
            assert len(recs) == 3
            gaps += [b.received_at - a.received_at for a, b in itertools.pairwise(recs)]
        assert attempts(gw, "main", "server_error") == 10 and attempts(gw, "main", "ok") == 5
        last = seen[-1]
        assert [a["outcome"] for a in last.extra["attempts"]] == ["server_error", "server_error", "ok"]
        assert [a["status"] for a in last.extra["attempts"]] == [503, 503, 200]
        assert last.status == 200 and last.outcome == "ok" and last.upstream == "main"
    # full jitter: waits spread over [0, 0.1) then [0, 0.2); never two alike, never past the cap
    print(f"UP-1 retry gaps (s): {sorted(round(g, 3) for g in gaps)}")
    assert max(gaps) < 0.2 + 0.15
    assert len({round(g, 3) for g in gaps}) >= 8


def test_429_retry_after_is_honoured_when_it_fits_the_deadline(start: Start, fake_openai: FakeOpenAI) -> None:
    with start() as gw:
        fake_openai.set("main-model", Behavior(statuses=[429, 200], retry_after=0.6))
        resp = chat(gw, "bot")
        first, second = fake_openai.requests
        assert resp.status_code == 200
        waited = second.received_at - first.received_at
        assert 0.6 <= waited < 0.6 + 1.0
        # 30 s does not fit in the 2 s deadline: the 429 goes back to the client at once, Retry-After kept
        fake_openai.set("main-model", Behavior(statuses=[429, 200], retry_after=30))
        t0 = time.monotonic()
        limited = chat(gw, "bot")
        assert limited.status_code == 429 and limited.headers["retry-after"] == "30"
        assert time.monotonic() - t0 < 1.0
        assert len(fake_openai.requests) == 3
    print(f"UP-1 wait honouring Retry-After 0.6: {waited:.3f}s")


@pytest.mark.parametrize("status", [400, 401, 404, 422])
def test_client_errors_pass_through_without_retry(start: Start, fake_openai: FakeOpenAI, status: int) -> None:
    with start() as gw:
        fake_openai.set("main-model", Behavior(statuses=[status]))
        fake_openai.set("backup-model", Behavior())
        resp = chat(gw, "safe")
        assert resp.status_code == status
        assert len(fake_openai.requests) == 1  # neither a retry nor the fallback
        assert attempts(gw, "main", "client_error") == 1


def test_always_failing_upstream_errs_within_the_deadline_after_the_configured_attempts(
    start: Start, fake_openai: FakeOpenAI
) -> None:
    config = BASE + "  flaky: {{variants: {{main: 100}}, timeout_s: 1}}\n"
    with start(config) as gw:
        baseline = 0.0  # the slowest of a few plain requests: what a request costs here, now
        for _ in range(3):
            t0 = time.perf_counter()
            assert chat(gw, "bot").status_code == 200
            baseline = max(baseline, time.perf_counter() - t0)
        fake_openai.set("main-model", Behavior(statuses=[503] * 50))
        resp = chat(gw, "bot")
        assert resp.status_code == 502 and "after 3 attempts" in resp.json()["error"]["message"]
        assert len(fake_openai.requests) == 3 + 3  # retries: 2 → 3 attempts, no SDK retry beneath
        # Retry-After 0.4 against a 1 s deadline: attempts at 0, 0.4, 0.8; the next would pass the deadline
        fake_openai.set("main-model", Behavior(statuses=[503] * 50, retry_after=0.4))
        t0 = time.perf_counter()
        resp = chat(gw, "flaky")
        elapsed = time.perf_counter() - t0
        assert resp.status_code == 502 and len(fake_openai.requests) == 6 + 3
        assert elapsed < 1.0 + 0.05 + 2 * baseline
        # hanging: one attempt (a timeout is not retried on the same upstream), 504 at the deadline
        fake_openai.set("slow-model", Behavior(hang=True))
        t0 = time.perf_counter()
        resp = chat(gw, "hung")
        hung = time.perf_counter() - t0
        assert resp.status_code == 504 and len(fake_openai.requests) == 9 + 1
        assert 0.5 <= hung < 0.5 + 0.05 + 2 * baseline
    print(f"UP-2 baseline {baseline * 1000:.1f}ms, 503+Retry-After vs 1s deadline {elapsed:.3f}s, hang {hung:.3f}s")


def test_refused_connection_falls_back_else_502(start: Start, fake_openai: FakeOpenAI) -> None:
    with start() as gw:
        seen = tap(gw)
        resp = chat(gw, "rescued")
        assert resp.status_code == 200 and resp.headers["x-turnout-variant"] == "dead"
        assert [r.body["model"] for r in fake_openai.requests] == ["backup-model"]
        assert attempts(gw, "dead", "connect_error") == 3 and attempts(gw, "backup", "ok") == 1
        assert seen[-1].upstream == "backup" and seen[-1].variant == "dead"
        t0 = time.monotonic()
        resp = chat(gw, "gone")
        assert resp.status_code == 502 and "'dead'" in resp.json()["error"]["message"]
        assert time.monotonic() - t0 < 2.0


def test_hang_before_headers_falls_back_within_the_route_deadline(start: Start, fake_openai: FakeOpenAI) -> None:
    with start() as gw:
        fake_openai.set("slow-model", Behavior(hang=True))
        t0 = time.monotonic()
        resp = chat(gw, "patient")
        took = time.monotonic() - t0
        assert resp.status_code == 200 and resp.json()["model"] == "backup-model"
        assert 0.5 <= took < 2.0
        slow, backup = fake_openai.requests
        assert slow.wait_done().aborted  # the hanging call was abandoned, not left open
        assert backup.body["model"] == "backup-model"
        resp = chat(gw, "hung")
        assert resp.status_code == 504
    print(f"UP-3 hang → fallback answered after {took:.3f}s")


def test_stream_is_retried_before_the_first_byte_and_never_spliced(start: Start, fake_openai: FakeOpenAI) -> None:
    with start() as gw:
        fake_openai.set("main-model", Behavior(statuses=[503, 200], response_id="chatcmpl-second"))
        with httpx.stream("POST", gw.url + "/v1/chat/completions", json=stream_body("safe"), timeout=10) as resp:
            assert resp.status_code == 200
            events = data_events(resp)
        assert events[-1] == "[DONE]" and events.count("[DONE]") == 1
        assert {json.loads(e)["id"] for e in events[:-1]} == {"chatcmpl-second"}
        assert [r.body["model"] for r in fake_openai.requests] == ["main-model", "main-model"]
        # cut after the first chunk went out: no retry, no fallback, an error event and no [DONE]
        fake_openai.set("main-model", Behavior(chunks=6, chunk_delay_s=0.05, cut_after=2))
        with httpx.stream("POST", gw.url + "/v1/chat/completions", json=stream_body("safe"), timeout=10) as resp:
            events = data_events(resp)
        assert "[DONE]" not in events and json.loads(events[-1])["error"]["code"] == "stream_broken"
        assert [r.body["model"] for r in fake_openai.requests][2:] == ["main-model"]


def test_malformed_answers_are_502_or_a_terminal_error_event(start: Start, fake_openai: FakeOpenAI) -> None:
    with start() as gw:
        fake_openai.set("main-model", Behavior(malformed="html"))
        resp = chat(gw, "bot")
        assert resp.status_code == 502 and resp.json()["error"]["type"] == "upstream_error"
        for behavior in (Behavior(malformed="bad-sse"), Behavior(text="x" * (2 << 20), chunks=1)):
            fake_openai.set("main-model", behavior)
            with httpx.stream("POST", gw.url + "/v1/chat/completions", json=stream_body("bot"), timeout=10) as resp:
                events = data_events(resp)
            assert "[DONE]" not in events and "error" in json.loads(events[-1])


def test_ejection_cools_a_failing_upstream_but_never_the_last_healthy(start: Start, fake_openai: FakeOpenAI) -> None:
    config = """
upstreams:
  dead: {{base_url: "http://127.0.0.1:{dead}/v1", model: x, retries: 0}}
  backup: {{base_url: "{url}", model: backup-model}}
  alone: {{base_url: "http://127.0.0.1:{dead}/v1", model: y, retries: 0}}
routes:
  rescued: {{variants: {{dead: 100}}, fallbacks: [backup]}}
  solo: {{variants: {{alone: 100}}}}
"""
    with start(config) as gw:
        seen = tap(gw)
        for _ in range(5):
            assert chat(gw, "rescued").status_code == 200
        assert gw.metric("turnout_upstream_ejected", upstream="dead") == 1
        assert chat(gw, "rescued").status_code == 200
        assert [a["upstream"] for a in seen[-1].extra["attempts"]] == ["backup"]  # dead is skipped now
        assert attempts(gw, "dead", "connect_error") == 5
        for _ in range(8):
            assert chat(gw, "solo").status_code == 502
        assert gw.metric("turnout_upstream_ejected", upstream="alone") == 0  # the only upstream of its route
        assert attempts(gw, "alone", "connect_error") == 8


async def test_ejection_cool_down_doubles_with_jitter_and_shrinks_with_successes() -> None:
    now = [0.0]
    gauge = Gauge("ejected", "test", ["upstream"], registry=CollectorRegistry())
    ejector = Ejector(gauge, random.Random(7), threshold=2, base_s=10, clock=lambda: now[0])
    loaded = parse_config(
        b"upstreams: {a: {provider: dummy}, b: {provider: dummy}}\nroutes: {r: {variants: {a: 1}, fallbacks: [b]}}\n",
        "t.yaml",
    )
    cools = []
    for _ in range(4):
        ejector.failure("a", loaded.config)
        ejector.failure("a", loaded.config)
        assert ejector.ejected("a") and ejector.order(["a", "b"]) == ["b"]
        cools.append(ejector.health["a"].until - now[0])
        now[0] += cools[-1]
        assert not ejector.ejected("a")
    for i, cool in enumerate(cools):
        assert 10 * 2**i * 0.75 <= cool <= 10 * 2**i * 1.25
    # b cannot be ejected while a is: it is then the last healthy upstream of route r
    ejector.failure("a", loaded.config)
    ejector.failure("a", loaded.config)
    for _ in range(5):
        ejector.failure("b", loaded.config)
    assert ejector.ejected("a") and not ejector.ejected("b")
    assert ejector.order(["b", "a", "b"]) == ["b"]
    ejector.success("a")
    ejector.success("a")
    assert ejector.health["a"].ejections == 3
    ejector.close()


async def test_retry_budget_caps_concurrent_retries(start: Start, fake_openai: FakeOpenAI) -> None:
    budget = RetryBudget(lambda: 40)
    assert [budget.acquire() for _ in range(9)] == [True] * 8 + [False]
    small = RetryBudget(lambda: 2)
    assert [small.acquire() for _ in range(4)] == [True] * 3 + [False]
    with start() as gw:
        fake_openai.set("main-model", Behavior(statuses=[503] * 1000, delay_s=0.3))
        async with httpx.AsyncClient(timeout=20) as client:
            body = {"model": "bot", "messages": MESSAGES}
            replies = await asyncio.gather(
                *(client.post(gw.url + "/v1/chat/completions", json=body) for _ in range(20))
            )
        assert {r.status_code for r in replies} == {502}
        total = len(fake_openai.requests)
        exhausted = attempts(gw, "main", "budget_exhausted")
    # 20 in flight → 4 concurrent retries at most; the others give up instead of tripling the load
    assert total <= 20 + 2 * 4 and exhausted >= 12
    print(f"retry budget: {total} upstream calls for 20 failing requests, {exhausted:.0f} retries refused")


def test_backoff_and_retry_after_parsing() -> None:
    rng = random.Random(1)
    waits = [backoff(3, rng.random) for _ in range(200)]
    assert 0 <= min(waits) < 0.1 and max(waits) < 0.8 and max(waits) > 0.6
    assert max(backoff(30, rng.random) for _ in range(50)) <= 2.0
    assert retry_after_s("1.5") == 1.5 and retry_after_s(" 3 ") == 3.0 and retry_after_s("-4") == 0.0
    assert retry_after_s("Wed, 21 Oct 2015 07:28:00 GMT", now=1445412470.0) == pytest.approx(10.0)
    assert retry_after_s("soon") is None and retry_after_s(None) is None and retry_after_s("nan") is None


def stream_body(route: str) -> dict[str, object]:
    return {"model": route, "messages": MESSAGES, "stream": True}


def data_events(resp: httpx.Response) -> list[str]:
    return [line[5:].strip() for line in resp.iter_lines() if line.startswith("data:")]
