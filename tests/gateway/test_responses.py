"""POST /v1/responses with the official SDK (sync and async, plain and streamed) through the pass-through
provider to a fake upstream that records what it gets, and through the dummy: every typed event relayed in
order, captured like chat, a cut mid-stream ending in an error event with the partial output stored, shadows
mirrored and compared, stateful requests not mirrored."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import openai
import pytest

from tests.fakes.fake_server import Behavior
from tests.fakes.openai_server import FakeOpenAI
from tests.fakes.responses_api import EVENT_TYPES
from tests.gateway.interactions import tap
from tests.harness import ROOT, Served, served, write_config
from tests.openai_schema import assert_valid

CONFIG = """
server: {{state_dir: "{state}", heartbeat_s: 0}}
store: sqlite:///{db}
upstreams:
  main: {{base_url: "{url}", model: up-model}}
  dummy: {{provider: dummy, model: d}}
  cand: {{provider: dummy, model: c}}
routes:
  bot: {{variants: {{main: 100}}}}
  demo: {{variants: {{dummy: 100}}, shadows: [{{upstream: cand, sample: 1.0}}]}}
"""


@pytest.fixture(scope="module")
def upstream() -> Iterator[FakeOpenAI]:
    with FakeOpenAI() as fake:
        yield fake


@pytest.fixture(scope="module")
def gw(tmp_path_factory: pytest.TempPathFactory, upstream: FakeOpenAI) -> Iterator[Served]:
    d = tmp_path_factory.mktemp("responses")
    with served(write_config(d, CONFIG.format(state=d / "s", db=d / "t.db", url=upstream.url))) as server:
        yield server


@pytest.fixture
def fake(upstream: FakeOpenAI) -> Iterator[FakeOpenAI]:
    upstream.default = Behavior()
    yield upstream
    upstream.default = Behavior()


def sdk(gw: Served) -> openai.OpenAI:
    return openai.OpenAI(base_url=gw.url + "/v1", api_key="k", max_retries=0, timeout=10)


def expected_types(deltas: int) -> list[str]:
    head, tail = list(EVENT_TYPES[:4]), list(EVENT_TYPES[5:])
    return [*head, *["response.output_text.delta"] * deltas, *tail]


def test_plain_response_passes_through_and_is_captured(gw: Served, fake: FakeOpenAI) -> None:
    seen = tap(gw)
    raw = sdk(gw).responses.with_raw_response.create(model="bot", input="hello there", instructions="be brief")
    reply = raw.parse()
    assert reply.output_text == "echo: hello there"
    sent = fake.requests[-1]
    assert sent.path == "/v1/responses" and sent.body["model"] == "up-model"
    assert sent.body["instructions"] == "be brief" and "stream_options" not in sent.body
    assert sent.headers["x-turnout-correlation-id"] == raw.headers["x-turnout-correlation-id"]
    it = seen[-1]
    assert it.endpoint == "responses" and it.response_id == reply.id and it.request["input"] == "hello there"
    assert it.usage is not None and it.usage["output_tokens"] == 3
    assert gw.metric("turnout_tokens_total", route="bot", variant="main", role="primary", kind="completion") >= 0


def test_stream_relays_every_event_type_in_order(gw: Served, fake: FakeOpenAI) -> None:
    seen = tap(gw)
    events = list(sdk(gw).responses.create(model="bot", input="one two three", stream=True))
    assert [e.type for e in events] == expected_types(4)  # "echo: one two three": four pieces
    assert "".join(e.delta for e in events if e.type == "response.output_text.delta") == "echo: one two three"
    assert fake.requests[-1].body["stream"] is True
    it = seen[-1]
    assert it.outcome == "ok" and it.stream and it.ttft_ms is not None
    assert it.response is not None and it.response["id"] == events[-1].response.id  # type: ignore[union-attr]


async def test_async_sdk_plain_and_streamed(gw: Served, fake: FakeOpenAI) -> None:
    client = openai.AsyncOpenAI(base_url=gw.url + "/v1", api_key="k", max_retries=0, timeout=10)
    reply = await client.responses.create(model="bot", input=[{"role": "user", "content": "hi async"}])
    assert reply.output_text == "echo: hi async"
    types = [e.type async for e in await client.responses.create(model="bot", input="x y", stream=True)]
    assert types == expected_types(3)
    await client.close()


def test_a_cut_mid_stream_becomes_an_error_event_and_the_partial_output_is_stored(gw: Served, fake: FakeOpenAI) -> None:
    seen = tap(gw)
    fake.default = Behavior(cut_after=2)
    got: list[str] = []
    with pytest.raises(openai.APIError) as info:
        for event in sdk(gw).responses.create(model="bot", input="a b c d e f", stream=True):
            got.append(event.type)
    assert got == expected_types(2)[:6]  # the four opening events and two deltas arrived as they came
    assert "broke off" in str(info.value.message) or "stream" in str(info.value.message)
    it = seen[-1]
    assert it.outcome == "upstream_error" and it.response is not None
    assert it.response["status"] == "incomplete"
    assert it.response["output"][0]["content"][0]["text"] == "echo: a "  # the two pieces that went out


def test_dummy_answers_fit_openai_schemas_and_shadows_are_compared(gw: Served) -> None:
    plain = httpx.post(gw.url + "/v1/responses", json={"model": "demo", "input": "hi"}).json()
    assert_valid("Response", plain)
    streamed = httpx.post(gw.url + "/v1/responses", json={"model": "demo", "input": "hi", "stream": True})
    data = [line[6:] for line in streamed.text.splitlines() if line.startswith("data: ")]
    events = [json.loads(d) for d in data]
    for event in events:
        assert_valid("ResponseStreamEvent", event)
    assert [e["type"] for e in events] == expected_types(len(plain["output"][0]["content"][0]["text"].split(" ")))
    deadline = time.monotonic() + 10
    while gw.metric("turnout_shadow_requests_total", route="demo", shadow="cand", outcome="ok") < 2:
        assert time.monotonic() < deadline, "the shadows never answered"
        time.sleep(0.05)
    assert gw.metric("turnout_shadow_agreement_count", route="demo", shadow="cand") >= 2
    before = gw.metric("turnout_shadow_requests_total", route="demo", shadow="cand", outcome="skipped")
    stateful = {"model": "demo", "input": "and then?", "previous_response_id": plain["id"]}
    assert httpx.post(gw.url + "/v1/responses", json=stateful).status_code == 200
    after = gw.metric("turnout_shadow_requests_total", route="demo", shadow="cand", outcome="skipped")
    assert after == before + 1


def test_feedback_by_the_response_id_is_accepted(gw: Served, fake: FakeOpenAI) -> None:
    reply = sdk(gw).responses.create(model="bot", input="rate me")
    resp = httpx.post(gw.url + "/v1/feedback", json={"response_id": reply.id, "label": "good", "score": 1.0})
    assert resp.status_code == 202


def test_a_request_for_an_unknown_route_is_404(gw: Served, tmp_path: Path) -> None:
    with pytest.raises(openai.NotFoundError):
        sdk(gw).responses.create(model="nope", input="x")


def test_openai_chat_export_turns_input_and_output_items_into_messages(tmp_path: Path) -> None:
    cfg = write_config(tmp_path, CONFIG.format(state=tmp_path / "s", db=tmp_path / "t.db", url="http://127.0.0.1:9/v1"))
    items = [
        {"role": "user", "content": [{"type": "input_text", "text": "weather in Paris?"}]},
        {"type": "function_call", "call_id": "c1", "name": "weather", "arguments": '{"city": "Paris"}'},
        {"type": "function_call_output", "call_id": "c1", "output": "sunny"},
        {"type": "message", "role": "user", "content": "so?"},
    ]
    with served(cfg) as gw:
        body = {"model": "demo", "input": items, "instructions": "be brief"}
        answer = httpx.post(gw.url + "/v1/responses", json=body).json()
    env = {"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"}
    command = [sys.executable, "-m", "gateway", "export", "-c", str(cfg), "--format", "openai-chat"]
    result = subprocess.run(command, capture_output=True, text=True, timeout=60, env=env)
    assert result.returncode == 0, result.stderr
    (line,) = [json.loads(x) for x in result.stdout.splitlines()]
    assert line["messages"] == [
        {"role": "system", "content": "be brief"},
        {"role": "user", "content": "weather in Paris?"},
        {
            "role": "assistant",
            "tool_calls": [
                {"id": "c1", "type": "function", "function": {"name": "weather", "arguments": '{"city": "Paris"}'}}
            ],
        },
        {"role": "tool", "tool_call_id": "c1", "content": "sunny"},
        {"role": "user", "content": "so?"},
        {"role": "assistant", "content": answer["output"][0]["content"][0]["text"]},
    ]
