"""Self-tests of the fake model servers, through the official openai SDK, httpx and litellm."""

# The fixtures are imported by name, so every test parameter "redefines" them.
# ruff: noqa: F811

from __future__ import annotations

import asyncio
import base64
import json
import struct
import threading
import time
from typing import Any

import aiohttp
import httpx
import openai
import pytest
from openai import OpenAI

from tests.fakes.anthropic_server import FakeAnthropic
from tests.fakes.fixtures import fake_anthropic, fake_openai  # noqa: F401
from tests.fakes.openai_server import Behavior, FakeOpenAI, embedding_of

USER = [{"role": "system", "content": "be brief"}, {"role": "user", "content": "hello big world"}]


def client(fake: FakeOpenAI, timeout: float = 5.0, api_key: str = "sk-client") -> OpenAI:
    return OpenAI(base_url=fake.url, api_key=api_key, max_retries=0, timeout=timeout)


def sse_events(raw: str) -> list[str]:
    return [line.removeprefix("data: ") for line in raw.split("\n\n") if line.startswith("data: ")]


def test_plain_chat_is_echoed_with_usage_and_recorded(fake_openai: FakeOpenAI) -> None:
    answer = client(fake_openai).chat.completions.create(model="ft-a", messages=USER, temperature=0)

    assert answer.choices[0].message.content == "echo: hello big world"
    assert answer.choices[0].finish_reason == "stop"
    assert answer.model == "ft-a"
    assert answer.id.startswith("chatcmpl-fake-")
    assert answer.usage is not None
    assert (answer.usage.prompt_tokens, answer.usage.completion_tokens) == (5, 4)
    [rec] = fake_openai.requests
    assert rec.path == "/v1/chat/completions"
    assert rec.headers["authorization"] == "Bearer sk-client"
    assert rec.body["messages"] == USER and rec.body["temperature"] == 0
    assert rec.wait_done().aborted is False


def test_stream_with_usage_follows_openai_chunk_sequence(fake_openai: FakeOpenAI) -> None:
    fake_openai.set("ft-a", Behavior(response_id="chatcmpl-fixed"))
    stream = client(fake_openai).chat.completions.create(
        model="ft-a", messages=USER, stream=True, stream_options={"include_usage": True}
    )
    chunks = list(stream)

    assert chunks[0].choices[0].delta.role == "assistant"
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == "echo: hello big world"
    assert len(chunks) == 4 + 2  # one per word, the finish chunk, the usage chunk
    assert chunks[-2].choices[0].finish_reason == "stop"
    assert chunks[-1].choices == [] and chunks[-1].usage is not None
    assert chunks[-1].usage.total_tokens == 9
    assert {c.id for c in chunks} == {"chatcmpl-fixed"}

    raw = httpx.post(f"{fake_openai.url}/chat/completions", json={"model": "x", "messages": USER, "stream": True})
    assert raw.headers["content-type"].startswith("text/event-stream")
    events = sse_events(raw.text)
    assert events[-1] == "[DONE]"
    assert "usage" not in json.loads(events[-2])  # no include_usage: no usage chunk, no usage key


def test_stream_chunks_are_sent_as_they_are_produced(fake_openai: FakeOpenAI) -> None:
    fake_openai.default = Behavior(text="abcdef", chunks=3, chunk_delay_s=0.1)
    arrivals: list[float] = []
    pieces: list[str] = []
    for chunk in client(fake_openai).chat.completions.create(model="m", messages=USER, stream=True):
        arrivals.append(time.monotonic())
        pieces.append(chunk.choices[0].delta.content or "")

    assert pieces[:3] == ["ab", "cd", "ef"]
    assert arrivals[2] - arrivals[0] >= 0.15


def test_status_sequence_then_success_with_retry_after(fake_openai: FakeOpenAI) -> None:
    fake_openai.set("flaky", Behavior(statuses=[503, 429, 200, 500], retry_after=2))
    body = {"model": "flaky", "messages": USER}
    answers = [httpx.post(f"{fake_openai.url}/chat/completions", json=body) for _ in range(5)]

    assert [a.status_code for a in answers] == [503, 429, 200, 500, 200]
    assert answers[0].headers["retry-after"] == "2"
    assert answers[1].json()["error"]["type"] == "rate_limit_error"
    assert "retry-after" not in answers[3].headers
    # other models are not affected by the sequence
    assert httpx.post(f"{fake_openai.url}/chat/completions", json={**body, "model": "x"}).status_code == 200


def test_401_echoes_the_authorization_it_received(fake_openai: FakeOpenAI) -> None:
    fake_openai.default = Behavior(statuses=[401])
    with pytest.raises(openai.AuthenticationError) as err:
        client(fake_openai, api_key="sk-upstream-secret").chat.completions.create(model="m", messages=USER)
    assert "sk-upstream-secret" in str(err.value)


def test_cut_after_breaks_the_stream_and_plain_gets_no_response(fake_openai: FakeOpenAI) -> None:
    fake_openai.set("cut", Behavior(text="one two three four", cut_after=2))
    received: list[str] = []
    with pytest.raises(openai.APIConnectionError):
        for chunk in client(fake_openai).chat.completions.create(model="cut", messages=USER, stream=True):
            received.append(chunk.choices[0].delta.content or "")
    assert received == ["one ", "two "]

    with httpx.stream("POST", f"{fake_openai.url}/chat/completions", json={"model": "cut", "stream": True}) as r:
        assert r.status_code == 200
        with pytest.raises(httpx.RemoteProtocolError):
            r.read()

    with pytest.raises(httpx.RemoteProtocolError):
        httpx.post(f"{fake_openai.url}/chat/completions", json={"model": "cut", "messages": USER})


def test_hang_until_client_timeout_marks_the_request_aborted(fake_openai: FakeOpenAI) -> None:
    fake_openai.default = Behavior(hang=True)
    with pytest.raises(openai.APITimeoutError):
        client(fake_openai, timeout=0.2).chat.completions.create(model="m", messages=USER)
    [rec] = fake_openai.wait_for(1)
    assert rec.wait_done().aborted is True


def test_client_leaving_mid_stream_marks_the_request_aborted(fake_openai: FakeOpenAI) -> None:
    fake_openai.default = Behavior(chunks=4, chunk_delay_s=0.5)
    with httpx.stream("POST", f"{fake_openai.url}/chat/completions", json={"model": "m", "stream": True}) as r:
        next(r.iter_bytes())
    rec = fake_openai.requests[0].wait_done()
    assert rec.aborted is True
    assert rec.finished_at is not None and rec.finished_at - rec.received_at < 1.0  # a full answer takes 1.5 s


async def test_serves_hundreds_of_concurrent_streams(fake_openai: FakeOpenAI) -> None:
    fake_openai.default = Behavior(text="a b c", chunk_delay_s=0.05)

    async def one(session: aiohttp.ClientSession) -> str:
        async with session.post(f"{fake_openai.url}/chat/completions", json={"model": "m", "stream": True}) as r:
            return await r.text()

    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as session:
        answers = await asyncio.gather(*(one(session) for _ in range(200)))
    assert all(a.endswith("data: [DONE]\n\n") for a in answers)
    assert len(fake_openai.requests) == 200


def test_delay_holds_back_the_headers(fake_openai: FakeOpenAI) -> None:
    fake_openai.default = Behavior(delay_s=0.3)
    start = time.monotonic()
    client(fake_openai).chat.completions.create(model="m", messages=USER)
    assert time.monotonic() - start >= 0.3


@pytest.mark.parametrize(
    ("kind", "content_type"),
    [("html", "text/html"), ("truncated-json", "application/json"), ("bad-sse", "text/event-stream")],
)
def test_malformed_answers(fake_openai: FakeOpenAI, kind: str, content_type: str) -> None:
    fake_openai.default = Behavior(malformed=kind)
    answer = httpx.post(f"{fake_openai.url}/chat/completions", json={"model": "m", "messages": USER})

    assert answer.status_code == 200
    assert answer.headers["content-type"].startswith(content_type)
    with pytest.raises(ValueError):
        json.loads(answer.text) if kind != "bad-sse" else [json.loads(e) for e in sse_events(answer.text)]


def test_tool_call_plain_and_streamed(fake_openai: FakeOpenAI) -> None:
    args = json.dumps({"city": "Paris", "unit": "celsius"})
    fake_openai.default = Behavior(tool_call={"name": "get_weather", "arguments": args})
    sdk = client(fake_openai)

    plain = sdk.chat.completions.create(model="m", messages=USER)
    assert plain.choices[0].finish_reason == "tool_calls"
    [call] = plain.choices[0].message.tool_calls or []
    assert call.type == "function" and call.function.name == "get_weather"
    assert json.loads(call.function.arguments) == {"city": "Paris", "unit": "celsius"}

    chunks = list(sdk.chat.completions.create(model="m", messages=USER, stream=True))
    deltas = [d for c in chunks for d in (c.choices[0].delta.tool_calls or [])]
    assert deltas[0].id and deltas[0].type == "function" and deltas[0].function.name == "get_weather"
    assert {d.index for d in deltas} == {0} and len(deltas) > 2
    assert "".join(d.function.arguments or "" for d in deltas) == args
    assert chunks[-1].choices[0].finish_reason == "tool_calls"


def test_text_completions_plain_and_streamed(fake_openai: FakeOpenAI) -> None:
    sdk = client(fake_openai)
    plain = sdk.completions.create(model="base", prompt="say this")
    assert plain.choices[0].text == "echo: say this" and plain.object == "text_completion"
    assert plain.usage is not None and plain.usage.prompt_tokens == 2

    chunks = list(sdk.completions.create(model="base", prompt="say this", stream=True))
    assert "".join(c.choices[0].text for c in chunks) == "echo: say this"
    assert chunks[-1].choices[0].finish_reason == "stop"


def test_embeddings_are_deterministic_in_float_and_base64(fake_openai: FakeOpenAI) -> None:
    sdk = client(fake_openai)
    via_sdk = sdk.embeddings.create(model="emb", input=["alpha", "beta"])  # the SDK asks for base64
    assert [d.embedding for d in via_sdk.data] == [embedding_of("alpha"), embedding_of("beta")]
    assert len(via_sdk.data[0].embedding) == 8

    single = httpx.post(f"{fake_openai.url}/embeddings", json={"model": "emb", "input": "alpha"}).json()
    assert single["data"][0]["embedding"] == embedding_of("alpha") and single["model"] == "emb"
    b64 = httpx.post(
        f"{fake_openai.url}/embeddings", json={"model": "emb", "input": "beta", "encoding_format": "base64"}
    ).json()
    assert list(struct.unpack("<8f", base64.b64decode(b64["data"][0]["embedding"]))) == embedding_of("beta")
    assert fake_openai.requests[0].body["input"] == ["alpha", "beta"]


def test_models_lists_configured_models(fake_openai: FakeOpenAI) -> None:
    fake_openai.set("ft-b", Behavior())
    fake_openai.set("ft-a", Behavior())
    assert [m.id for m in client(fake_openai).models.list()] == ["ft-a", "ft-b"]
    assert fake_openai.requests[0].body == b""


def test_non_json_body_is_recorded_raw_and_rejected(fake_openai: FakeOpenAI) -> None:
    answer = httpx.post(f"{fake_openai.url}/chat/completions", content=b"\xffnot json")
    assert answer.status_code == 400 and answer.json()["error"]["type"] == "invalid_request_error"
    assert fake_openai.requests[0].body == b"\xffnot json"


def test_wait_for_times_out(fake_openai: FakeOpenAI) -> None:
    with pytest.raises(TimeoutError):
        fake_openai.wait_for(1, timeout=0.05)


async def test_usable_from_an_async_test_loop(fake_openai: FakeOpenAI) -> None:
    async with httpx.AsyncClient(base_url=fake_openai.url) as http:
        answer = await http.post("/chat/completions", json={"model": "m", "messages": USER})
    assert answer.json()["choices"][0]["message"]["content"] == "echo: hello big world"


def test_close_ends_a_hanging_request_and_frees_the_port() -> None:
    fake = FakeOpenAI()
    fake.default = Behavior(hang=True)
    closer = threading.Timer(0.2, fake.close)
    closer.start()
    with pytest.raises(httpx.TransportError):
        httpx.post(f"{fake.url}/chat/completions", json={"model": "m"}, timeout=5)
    closer.join()
    assert fake.requests[0].wait_done().aborted is False
    with pytest.raises(httpx.ConnectError):
        httpx.get(f"{fake.url}/models")


# -- Anthropic ------------------------------------------------------------------------------------


def anthropic_events(raw: str) -> list[dict[str, Any]]:
    return [json.loads(line.removeprefix("data: ")) for line in raw.splitlines() if line.startswith("data: ")]


def test_anthropic_stream_follows_the_messages_event_sequence(fake_anthropic: FakeAnthropic) -> None:
    body = {"model": "claude-x", "max_tokens": 10, "stream": True, "messages": USER[1:]}
    raw = httpx.post(f"{fake_anthropic.url}/v1/messages", json=body, headers={"x-api-key": "k"}).text
    events = anthropic_events(raw)

    assert [e["type"] for e in events] == [
        "message_start",
        "content_block_start",
        "ping",
        *["content_block_delta"] * 4,
        "content_block_stop",
        "message_delta",
        "message_stop",
    ]
    assert "".join(e["delta"]["text"] for e in events if e["type"] == "content_block_delta") == (
        "echo: hello big world"
    )
    assert events[-2]["delta"]["stop_reason"] == "end_turn" and events[-2]["usage"]["output_tokens"] == 4
    assert "event: message_start\ndata: " in raw


def test_anthropic_statuses_and_delay(fake_anthropic: FakeAnthropic) -> None:
    fake_anthropic.set("claude-x", Behavior(statuses=[529, 401], retry_after=1, delay_s=0.1))
    url = f"{fake_anthropic.url}/v1/messages"
    body = {"model": "claude-x", "max_tokens": 10, "messages": USER[1:]}
    start = time.monotonic()
    overloaded = httpx.post(url, json=body)
    assert time.monotonic() - start >= 0.1
    assert overloaded.status_code == 529 and overloaded.json()["error"]["type"] == "overloaded_error"
    unauthorized = httpx.post(url, json=body, headers={"x-api-key": "sk-ant-secret"})
    assert unauthorized.status_code == 401 and "sk-ant-secret" in unauthorized.text
    assert httpx.post(url, json=body).json()["content"] == [{"type": "text", "text": "echo: hello big world"}]


@pytest.fixture
def litellm_module(monkeypatch: pytest.MonkeyPatch) -> Any:
    monkeypatch.setenv("LITELLM_LOCAL_MODEL_COST_MAP", "True")  # no cost-map download at import
    import litellm

    return litellm


async def test_litellm_talks_to_the_anthropic_fake(fake_anthropic: FakeAnthropic, litellm_module: Any) -> None:
    kwargs: dict[str, Any] = {
        "model": "anthropic/claude-x",
        "api_base": fake_anthropic.url,
        "api_key": "sk-ant-test",
        "messages": USER,
        "num_retries": 0,
    }
    plain = await litellm_module.acompletion(**kwargs)
    assert plain.choices[0].message.content == "echo: hello big world"

    stream = await litellm_module.acompletion(**kwargs, stream=True)
    text = "".join([chunk.choices[0].delta.content or "" async for chunk in stream])
    assert text == "echo: hello big world"

    [first, second] = fake_anthropic.wait_for(2)
    assert first.path == "/v1/messages" and first.headers["x-api-key"] == "sk-ant-test"
    assert first.body["system"] and second.body["stream"] is True
