"""A healthy fallback answers when the retry budget is spent; ejection skips a failing upstream where it can.

Issue 13's reproduction: upstream ``down`` always fails (``retries: 1``) and ``backup`` answers; route ``fb``
has ``down`` as its variant and ``backup`` as its fallback, and ``allbad`` has ``down`` alone (so ``down`` is
the last upstream of some route). Concurrent clients post to ``fb`` while the config file swaps ``fb``'s
variant and fallback every 0.3 s, a half-written file in between each time. Every answer must be a 200; the
fake's request log shows each request's attempts on ``down`` and how many retries of it were open at once.

Every test runs a real gateway (uvicorn in a thread) against a real fake upstream on 127.0.0.1.
"""

# The fixtures are imported by name, so every test parameter "redefines" them.
# ruff: noqa: F811

from __future__ import annotations

import asyncio
import threading
import time
from collections import defaultdict
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest

from tests.fakes.fixtures import fake_openai  # noqa: F401
from tests.fakes.openai_server import Behavior, FakeOpenAI, Recorded
from tests.gateway.interactions import tap
from tests.harness import Served, served, write_config

MESSAGES = [{"role": "user", "content": "hello there"}]
CONFIG = """
upstreams:
  down: {{base_url: "{url}", model: down-model, retries: {retries}, timeout_s: 5}}
  backup: {{base_url: "{url}", model: backup-model, timeout_s: 5}}
routes:
  allbad: {{variants: {{down: 1}}}}
  fb: {{variants: {{{first}: 1}}, fallbacks: [{second}]}}
"""
SWITCH_S = 0.3
HALF_S = 0.1  # how long each half-written file stays (the gateway polls the file every 0.1 s here)
RUN_S = 2.0


def config_text(url: str, first: str = "down", second: str = "backup", retries: int = 1) -> str:
    return CONFIG.format(url=url, first=first, second=second, retries=retries)


@contextmanager
def switching(path: Path, url: str) -> Iterator[None]:
    """Swap ``fb`` between down→backup and backup→down every 0.3 s, each time through a half-written file."""
    stop = threading.Event()

    def run() -> None:
        flip = False
        while not stop.wait(SWITCH_S - HALF_S):
            flip = not flip
            text = config_text(url, *(("backup", "down") if flip else ("down", "backup")))
            with path.open("w") as f:  # in place, not atomic: the reader may see the half
                f.write(text[: text.rindex("fallbacks")])  # cut inside fb's flow mapping: not valid YAML
            if stop.wait(HALF_S):
                break
            path.write_text(text)
        path.write_text(config_text(url))

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join(5)


async def hammer(gw: Served, clients: int, seconds: float) -> list[tuple[int, str]]:
    """``clients`` concurrent callers posting to ``fb`` for ``seconds``: (status, body) of every answer."""
    answers: list[tuple[int, str]] = []
    body = {"model": "fb", "messages": MESSAGES}
    limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)
    async with httpx.AsyncClient(timeout=20, limits=limits) as client:
        end = time.monotonic() + seconds

        async def caller() -> None:
            while time.monotonic() < end:
                resp = await client.post(gw.url + "/v1/chat/completions", json=body)
                answers.append((resp.status_code, resp.text))

        await asyncio.gather(*(caller() for _ in range(clients)))
    return answers


def by_request(records: list[Recorded], model: str) -> dict[str, list[Recorded]]:
    """The fake's records for ``model``, grouped by the gateway's correlation id, in arrival order."""
    groups: dict[str, list[Recorded]] = defaultdict(list)
    for rec in records:
        if isinstance(rec.body, dict) and rec.body.get("model") == model:
            groups[rec.headers["x-turnout-correlation-id"]].append(rec)
    return groups


def most_at_once(intervals: list[tuple[float, float]]) -> int:
    """The largest number of [start, end] intervals open at one instant."""
    events = sorted([(start, 1) for start, _ in intervals] + [(end, -1) for _, end in intervals])
    most = now = 0
    for _, step in events:  # at a tie the end (-1) sorts first: touching intervals do not overlap
        now += step
        most = max(most, now)
    return most


def attempts(gw: Served, upstream: str, outcome: str) -> float:
    return gw.metric("turnout_upstream_attempts_total", upstream=upstream, outcome=outcome)


@pytest.mark.parametrize("status", [503, 429])
@pytest.mark.parametrize("clients", [4, 16, 64])
async def test_a_healthy_fallback_answers_when_the_retry_budget_is_spent(
    tmp_path: Path, fake_openai: FakeOpenAI, clients: int, status: int
) -> None:
    # 503 is the case (it also counts towards ejection); a 429 never ejects, so the budget is hit all along
    fake_openai.set("down-model", Behavior(statuses=[status] * 100_000, delay_s=0.02))
    path = write_config(tmp_path, config_text(fake_openai.url))
    with served(path) as gw:
        seen = tap(gw)
        with switching(path, fake_openai.url):
            answers = await hammer(gw, clients, RUN_S)
        records = fake_openai.requests
        refused = attempts(gw, "down", "budget_exhausted")
        reloads = {r: gw.metric("turnout_config_reloads_total", result=r) for r in ("success", "failure")}
        rescued = attempts(gw, "backup", "ok")
    bad = [answer for answer in answers if answer[0] != 200]
    down = by_request(records, "down-model")
    retries = [(rec.received_at, rec.finished_at or rec.received_at) for group in down.values() for rec in group[1:]]
    cap = max(3, int(0.2 * clients))  # in flight never exceeds the clients here
    print(
        f"\nclients={clients} status={status}: {len(answers)} requests, {len(bad)} non-200 {bad[:1]}, "
        f"{len(down)} reached down, {len(retries)} retries of it (at most {most_at_once(retries)} at once, "
        f"cap {cap}), {refused:.0f} refused by the budget, backup answered {rescued:.0f}, reloads {reloads}"
    )
    assert len(answers) >= clients and bad == []
    assert max(len(group) for group in down.values()) <= 1 + 1  # down has retries: 1
    assert most_at_once(retries) <= cap
    assert reloads["failure"] >= 1 and reloads["success"] >= 2  # the half-written files were seen and refused
    if status == 429 and clients >= 16:  # 16 callers against a cap of 3: the budget must have said no
        assert refused > 0
    # each refusal is listed in its stored row, between down's failure and the fallback's own answer
    failed = "server_error" if status == 503 else "rate_limited"
    cut = [[(a["upstream"], a["outcome"]) for a in it.extra["attempts"]] for it in seen if it.route == "fb"]
    cut = [row for row in cut if ("down", "budget_exhausted") in row]
    assert len(cut) == refused
    assert all(row == [("down", failed), ("down", "budget_exhausted"), ("backup", "ok")] for row in cut)


async def test_a_route_without_fallback_still_gets_a_fast_502_when_the_budget_is_spent(
    tmp_path: Path, fake_openai: FakeOpenAI
) -> None:
    fake_openai.set("down-model", Behavior(statuses=[503] * 10_000, delay_s=0.3))
    with served(write_config(tmp_path, config_text(fake_openai.url, retries=3))) as gw:
        async with httpx.AsyncClient(timeout=20) as client:

            async def post() -> tuple[httpx.Response, float]:
                t0 = time.monotonic()
                resp = await client.post(
                    gw.url + "/v1/chat/completions", json={"model": "allbad", "messages": MESSAGES}
                )
                return resp, time.monotonic() - t0

            replies = await asyncio.gather(*(post() for _ in range(20)))
        refused = attempts(gw, "down", "budget_exhausted")
    down = by_request(fake_openai.requests, "down-model")
    assert {resp.status_code for resp, _ in replies} == {502}
    tries = [(len(down[resp.headers["x-turnout-correlation-id"]]), took) for resp, took in replies]
    cut = [took for n, took in tries if n == 1]
    full = [took for n, took in tries if n == 4]
    # 20 in flight → 4 concurrent retries; the others stop after their first attempt instead of 4 attempts
    assert len(cut) >= 12 and refused >= len(cut) and full
    # the baseline is the same run's requests that got all their retries (at least 4 x 0.3 s upstream time)
    assert max(cut) < min(full)  # no back-off, no waiting for a slot: the 502 follows the first failure
    print(
        f"\nno fallback: {len(cut)} of 20 cut by the budget, slowest {max(cut):.3f}s; all 4 attempts {min(full):.3f}s"
    )


def test_a_failing_upstream_is_skipped_where_a_fallback_is_healthy_and_still_tried_where_it_is_alone(
    tmp_path: Path, fake_openai: FakeOpenAI
) -> None:
    fake_openai.set("down-model", Behavior(statuses=[503] * 1000))
    with served(write_config(tmp_path, config_text(fake_openai.url, retries=0))) as gw:
        seen = tap(gw)

        def chat(route: str) -> tuple[int, list[tuple[str, str]]]:
            body = {"model": route, "messages": MESSAGES}
            status = httpx.post(gw.url + "/v1/chat/completions", json=body, timeout=10).status_code
            return status, [(a["upstream"], a["outcome"]) for a in seen[-1].extra["attempts"]]

        for _ in range(5):
            assert chat("fb") == (200, [("down", "server_error"), ("backup", "ok")])
        # ejected although it is allbad's only upstream: fb has a healthy fallback to go to
        assert gw.metric("turnout_upstream_ejected", upstream="down") == 1
        assert chat("fb") == (200, [("backup", "ok")])
        assert chat("allbad") == (502, [("down", "server_error")])  # its last upstream: still tried
        assert chat("fb") == (200, [("backup", "ok")])
        fake_openai.set("down-model", Behavior())  # it recovers: allbad's success ends the ejection at once
        assert chat("allbad") == (200, [("down", "ok")])
        assert gw.metric("turnout_upstream_ejected", upstream="down") == 0
        assert chat("fb") == (200, [("down", "ok")])
