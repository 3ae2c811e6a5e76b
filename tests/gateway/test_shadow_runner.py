"""The shadow runner on its own, against a real fake upstream: linked, scored, scrubbed, bounded at shutdown."""

from __future__ import annotations

import asyncio
import gc
import time
import tracemalloc
import uuid
from collections.abc import AsyncIterator
from typing import Any

import pytest
from prometheus_client import CollectorRegistry

from collectors.metrics import Metrics
from collectors.record import Interaction
from collectors.sink import Sink
from gateway.auth import Keys
from gateway.config import Loaded, parse_config
from gateway.decide import Facts
from gateway.generation import Generation
from gateway.shadow import ShadowRunner, _settled
from tests.fakes.openai_server import Behavior, FakeOpenAI

SHADOW_KEY = "sk-shadow-echoed-canary-77aa"
CONFIG = """
shadow: {{max_in_flight: 2, timeout_s: 5, drain_s: 0.3}}
upstreams:
  prod: {{base_url: "{url}", model: prod-model}}
  cand: {{base_url: "{url}", model: cand-model, api_key_env: T_SHADOW_KEY}}
  hang: {{base_url: "{url}", model: hang-model}}
routes:
  bot: {{variants: {{prod: 1}}, shadows: [{{upstream: cand, sample: 1}}, {{upstream: hang, sample: 1}}]}}
"""


class RecordingSink(Sink):
    """The real sink (metrics), keeping every interaction it is handed when ``keep``."""

    def __init__(self, metrics: Metrics, keep: bool = True) -> None:
        super().__init__(metrics)
        self.keep = keep
        self.seen: list[Interaction] = []

    def finish(self, it: Interaction) -> None:
        if self.keep:
            self.seen.append(it)
        super().finish(it)


class Setup:
    def __init__(self, loaded: Loaded, runner: ShadowRunner, sink: RecordingSink, registry: CollectorRegistry) -> None:
        self.loaded, self.runner, self.sink, self.registry = loaded, runner, sink, registry
        secrets = tuple(s.encode() for s in loaded.secrets.values())
        self.gen = Generation(loaded, Keys([], None), {}, secrets, runner.clients(loaded.config, loaded.secrets))

    def facts(self, shadows: list[str], **body: Any) -> Facts:
        return Facts(
            request_id=uuid.uuid4().hex, ts=time.time(), t0=time.perf_counter(), route="bot", experiment="bot",
            variant="prod", body={"model": "bot", "messages": [{"role": "user", "content": "hi"}], **body},
            stream=bool(body.get("stream")), capture=True, shadows=shadows, correlation_id=uuid.uuid4().hex,
        )  # fmt: skip

    def count(self, shadow: str, outcome: str) -> float:
        labels = {"route": "bot", "shadow": shadow, "outcome": outcome}
        return self.registry.get_sample_value("turnout_shadow_requests_total", labels) or 0.0


async def started(loaded: Loaded, keep: bool = True) -> Setup:
    registry = CollectorRegistry()
    metrics = Metrics(registry)
    sink = RecordingSink(metrics, keep)
    runner = ShadowRunner(metrics, sink)
    await runner.open(loaded.config.server.http_client)
    return Setup(loaded, runner, sink, registry)


def primary_of(facts: Facts, text: str, outcome: str = "ok") -> Interaction:
    response = {"id": "p", "object": "chat.completion", "choices": [{"index": 0, "message": {"content": text}}]}
    return Interaction(
        request_id=facts.request_id, ts=facts.ts, route="bot", experiment="bot", variant="prod", role="primary",
        parent_id=None, upstream="prod", endpoint="chat.completions", request=facts.body, response=response,
        status=200, outcome=outcome, latency_ms=50.0, ttft_ms=None, usage={"prompt_tokens": 1, "completion_tokens": 2},
        error=None, stream=facts.stream, capture=True,
    )  # fmt: skip


@pytest.fixture
async def setup(fake_openai: FakeOpenAI) -> AsyncIterator[Setup]:
    fake_openai.set("hang-model", Behavior(hang=True))
    loaded = parse_config(CONFIG.format(url=fake_openai.url).encode(), "t.yaml", environ={"T_SHADOW_KEY": SHADOW_KEY})
    setup = await started(loaded)
    yield setup
    await setup.runner.close(0.3)


async def wait_until(condition: Any) -> None:
    for _ in range(500):
        if condition():
            return
        await asyncio.sleep(0.01)
    raise AssertionError("condition not met within 5 s")


async def test_a_shadow_becomes_a_linked_scored_interaction_once_the_primary_is_done(
    setup: Setup, fake_openai: FakeOpenAI
) -> None:
    facts = setup.facts(["cand"], stream=True, stream_options={"include_usage": True}, temperature=0)
    answered = setup.runner.mirror(setup.gen, "chat.completions", facts)
    assert answered is not None
    await wait_until(lambda: setup.count("cand", "ok") == 1)
    await asyncio.sleep(0.05)
    assert setup.sink.seen == []  # it waits for the primary's answer to compare with
    answered.set_result(primary_of(facts, "echo: hi"))
    await wait_until(lambda: len(setup.sink.seen) == 1)
    (shadow,) = setup.sink.seen
    assert shadow.role == "shadow" and shadow.parent_id == facts.request_id and shadow.request_id != facts.request_id
    assert shadow.variant == shadow.upstream == "cand" and shadow.outcome == "ok" and shadow.status == 200
    assert shadow.request == {"model": "bot", "messages": [{"role": "user", "content": "hi"}], "temperature": 0}
    assert not shadow.stream
    scores = shadow.extra["comparison"]
    assert scores["exact"] is True and scores["similarity"] == 1.0
    assert scores["completion_tokens_delta"] == 0 and scores["prompt_tokens_delta"] == 0
    labels = {"route": "bot", "shadow": "cand"}
    assert setup.registry.get_sample_value("turnout_shadow_agreement_sum", labels) == 1.0
    (received,) = fake_openai.requests
    assert received.headers["x-turnout-correlation-id"] == facts.correlation_id != facts.request_id


async def test_an_echoed_upstream_key_is_scrubbed_and_a_failed_primary_is_not_compared(
    setup: Setup, fake_openai: FakeOpenAI
) -> None:
    fake_openai.set("cand-model", Behavior(text=f"your key is {SHADOW_KEY}"))
    facts = setup.facts(["cand"])
    answered = setup.runner.mirror(setup.gen, "chat.completions", facts)
    assert answered is not None
    answered.set_result(primary_of(facts, "", outcome="upstream_error"))
    await wait_until(lambda: len(setup.sink.seen) == 1)
    (shadow,) = setup.sink.seen
    assert SHADOW_KEY not in str(shadow.response) and "[redacted]" in str(shadow.response)
    assert "comparison" not in shadow.extra


async def test_over_the_cap_and_after_close_shadows_are_dropped_and_close_is_bounded(setup: Setup) -> None:
    for _ in range(5):
        setup.runner.mirror(setup.gen, "chat.completions", setup.facts(["hang"]))
    await asyncio.sleep(0.1)
    assert setup.count("hang", "dropped") == 3 and setup.runner.in_flight["hang"] == 2
    t0 = time.monotonic()
    await setup.runner.close(0.3)
    assert 0.25 <= time.monotonic() - t0 < 1.5
    assert setup.count("hang", "dropped") == 5 and not setup.runner.tasks  # the two cut at the bound
    assert setup.runner.mirror(setup.gen, "chat.completions", setup.facts(["hang"])) is not None
    assert setup.count("hang", "dropped") == 6


async def test_skipped_shadows_are_counted_and_nothing_is_started(setup: Setup) -> None:
    facts = setup.facts([])
    facts.skipped_shadows = ["cand", "hang"]
    assert setup.runner.mirror(setup.gen, "chat.completions", facts) is None
    assert setup.count("cand", "skipped") == setup.count("hang", "skipped") == 1
    assert not setup.runner.tasks


async def test_memory_stays_flat_over_thousands_of_shadows() -> None:
    config = CONFIG.format(url="http://127.0.0.1:9/v1").replace(
        'base_url: "http://127.0.0.1:9/v1", model: cand', "provider: dummy, model: cand"
    )
    loaded = parse_config(config.encode(), "t.yaml", environ={"T_SHADOW_KEY": SHADOW_KEY})
    setup = await started(loaded, keep=False)

    async def round_of(n: int) -> None:
        for i in range(n):
            facts = setup.facts(["cand"])
            answered = setup.runner.mirror(setup.gen, "chat.completions", facts)
            assert answered is not None
            answered.set_result(primary_of(facts, "Hello from cand. You said: hi"))
            if i % 5 == 4:
                await asyncio.sleep(0)  # let some finish: both ok and dropped (cap 2) paths run
        await wait_until(lambda: not setup.runner.tasks)

    tracemalloc.start()
    try:
        await round_of(300)
        gc.collect()
        first = tracemalloc.get_traced_memory()[0]
        for _ in range(5):
            await round_of(300)
        gc.collect()
        last = tracemalloc.get_traced_memory()[0]
    finally:
        tracemalloc.stop()
        await setup.runner.close(0.3)
    assert setup.count("cand", "ok") > 0 and setup.count("cand", "dropped") > 0
    assert sum(setup.count("cand", o) for o in ("ok", "error", "timeout", "dropped")) == 1800
    assert last < first * 1.25 + 256 * 1024, (first, last)


async def test_a_shadow_waits_for_its_primary_at_most_its_bound_and_leaves_nothing_behind() -> None:
    loop = asyncio.get_running_loop()
    never: asyncio.Future[Interaction] = loop.create_future()
    started = time.monotonic()
    await _settled(never, 0.05)  # a primary that never answers: the shadow goes on without it
    assert 0.04 < time.monotonic() - started < 1.0 and not never.done()

    later: asyncio.Future[Interaction] = loop.create_future()
    loop.call_later(0.02, later.set_result, None)  # type: ignore[arg-type]
    started = time.monotonic()
    await _settled(later, 30.0)  # the primary answers: woken then, not at the bound
    assert later.done() and time.monotonic() - started < 1.0


@pytest.mark.parametrize("http_client", ["httptools", "aiohttp"])
async def test_a_hanging_shadow_is_cut_at_shadow_timeout_s_and_counted_once(
    fake_openai: FakeOpenAI, http_client: str
) -> None:
    """The httptools client ends a call by its own timer (no ``asyncio.timeout`` around it), the others by the
    runner's: either way the shadow is cut at ``shadow.timeout_s``, not at its upstream's own 60 s."""
    fake_openai.set("hang-model", Behavior(hang=True))
    config = CONFIG.format(url=fake_openai.url).replace("timeout_s: 5", "timeout_s: 0.3")
    config = f"server: {{http_client: {http_client}}}\n{config}"
    loaded = parse_config(config.encode(), "t.yaml", environ={"T_SHADOW_KEY": SHADOW_KEY})
    setup = await started(loaded)
    try:
        facts = setup.facts(["hang"])
        t0 = time.monotonic()
        answered = setup.runner.mirror(setup.gen, "chat.completions", facts)
        assert answered is not None
        answered.set_result(primary_of(facts, "fine"))
        await wait_until(lambda: len(setup.sink.seen) == 1)
        elapsed = time.monotonic() - t0
        (shadow,) = setup.sink.seen
        assert shadow.outcome == "timeout" and shadow.status == 504, shadow
        assert shadow.error == "shadow timed out after 0.3s"
        assert 300.0 <= shadow.latency_ms and 0.3 <= elapsed < 1.5, (shadow.latency_ms, elapsed)
        assert setup.count("hang", "timeout") == 1
        assert sum(setup.count("hang", o) for o in ("ok", "error", "dropped")) == 0
        await wait_until(lambda: any(r.aborted for r in fake_openai.requests))  # the upstream saw it cut
    finally:
        await setup.runner.close(0.3)
