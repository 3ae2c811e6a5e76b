"""The data path against a real fake upstream: every endpoint, streaming, bad input, upstream failures (IN-1,
IN-2, SS-2, SS-3, SE-3)."""

from __future__ import annotations

import asyncio
import json
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import openai
import pytest

from tests.fakes.openai_server import Behavior, FakeOpenAI
from tests.harness import PROTOCOL, Served, free_port, served, write_config

CONFIG = """
server: {{max_body_mb: 0.01}}
upstreams:
  main: {{base_url: "{url}", model: up-model, api_key_env: T_UPSTREAM_KEY, timeout_s: {timeout}}}
  dead: {{base_url: "http://127.0.0.1:{dead}/v1", model: x}}
  dummy: {{provider: dummy, model: d}}
routes:
  bot: {{variants: {{main: 100}}}}
  gone: {{variants: {{dead: 100}}}}
  demo: {{variants: {{dummy: 100}}}}
"""
UPSTREAM_KEY = "sk-upstream-canary-7f3a"


@pytest.fixture
def gw(tmp_path: Path, fake_openai: FakeOpenAI, monkeypatch: pytest.MonkeyPatch) -> Iterator[Served]:
    monkeypatch.setenv("T_UPSTREAM_KEY", UPSTREAM_KEY)
    cfg = write_config(tmp_path, CONFIG.format(url=fake_openai.url, dead=free_port(), timeout=2))
    with served(cfg) as server:
        yield server


def sdk(gw: Served) -> openai.OpenAI:
    return openai.OpenAI(base_url=gw.url + "/v1", api_key="client-key", max_retries=0, timeout=10)


MESSAGES = [{"role": "user", "content": "hello there"}]


def test_chat_plain_with_the_official_sdk(gw: Served, fake_openai: FakeOpenAI) -> None:
    raw = sdk(gw).chat.completions.with_raw_response.create(model="bot", messages=MESSAGES, temperature=0.2)
    reply = raw.parse()
    assert reply.choices[0].message.content == "echo: hello there"
    assert raw.headers["x-turnout-route"] == "bot" and raw.headers["x-turnout-variant"] == "main"
    assert len(raw.headers["x-turnout-request-id"]) == 44
    (seen,) = fake_openai.requests
    assert seen.body["model"] == "up-model" and seen.body["temperature"] == 0.2
    assert seen.headers["authorization"] == f"Bearer {UPSTREAM_KEY}"
    # upstreams get a correlation id, never the request id (the feedback key)
    assert "x-turnout-request-id" not in seen.headers
    assert len(seen.headers["x-turnout-correlation-id"]) == 44
    assert seen.headers["x-turnout-correlation-id"] != raw.headers["x-turnout-request-id"]
    assert gw.metric("turnout_requests_total", route="bot", variant="main", role="primary", code="2xx") == 1


def test_chat_stream_with_the_official_sdk_withholds_usage_it_did_not_ask_for(
    gw: Served, fake_openai: FakeOpenAI
) -> None:
    chunks = list(sdk(gw).chat.completions.create(model="bot", messages=MESSAGES, stream=True))
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == "echo: hello there"
    assert all(c.usage is None for c in chunks)
    assert fake_openai.requests[0].body["stream_options"] == {"include_usage": True}
    with_usage = list(
        sdk(gw).chat.completions.create(
            model="bot", messages=MESSAGES, stream=True, stream_options={"include_usage": True}
        )
    )
    assert with_usage[-1].usage is not None and with_usage[-1].usage.completion_tokens == 3
    assert gw.metric("turnout_tokens_total", route="bot", variant="main", role="primary", kind="completion") == 6


async def test_async_sdk_completions_embeddings_models(gw: Served) -> None:
    client = openai.AsyncOpenAI(base_url=gw.url + "/v1", api_key="k", max_retries=0, timeout=10)
    done = await client.completions.create(model="bot", prompt="say hi")
    assert done.choices[0].text
    streamed = [c async for c in await client.completions.create(model="bot", prompt="say hi", stream=True)]
    assert "".join(c.choices[0].text for c in streamed if c.choices)
    emb = await client.embeddings.create(model="bot", input=["a", "b"])
    assert len(emb.data) == 2 and len(emb.data[0].embedding) == 8
    models = await client.models.list()
    assert sorted(m.id for m in models.data) == ["bot", "demo", "gone"]
    demo = await client.chat.completions.create(model="demo", messages=MESSAGES)
    assert "hello there" in (demo.choices[0].message.content or "")
    await client.close()


def test_first_chunk_arrives_before_the_upstream_finishes(gw: Served, fake_openai: FakeOpenAI) -> None:
    fake_openai.set("up-model", Behavior(chunks=5, chunk_delay_s=0.3))
    start = time.monotonic()
    body = {"model": "bot", "messages": MESSAGES, "stream": True}
    with httpx.stream("POST", gw.url + "/v1/chat/completions", json=body, timeout=10) as resp:
        arrivals = []
        for line in resp.iter_lines():
            if line.startswith("data:"):
                arrivals.append(time.monotonic() - start)
    assert len(arrivals) >= 6
    total = arrivals[-1]
    assert total >= 1.2
    assert arrivals[0] < total - 0.9  # the first event did not wait for the rest


BAD_BODIES = [
    (b"{not json", "not valid JSON"),
    (b"", "empty"),
    (b"[1, 2]", "must be a JSON object"),
    (b'"a string"', "must be a JSON object"),
    (b'{"model": "bot", "messages": []} trailing', "not valid JSON"),
    (b'{"messages": [{"role": "user", "content": "x"}]}', "'model' is required"),
    (b'{"model": 5, "messages": []}', "'model' must be a string, got int"),
    (b'{"model": "", "messages": []}', "'model' is empty: name a route"),
    (b'{"model": null, "messages": []}', "'model' is required"),
    (b'{"model": "bot", "messages": null}', "'messages' is required"),
    (b'{"model": "bot"}', "'messages' is required"),
    (b'{"model": "bot", "messages": "hi"}', "non-empty array"),
    (b'{"model": "bot", "messages": [1]}', "must be an object"),
    (b'{"model": "bot", "messages": [{"role": "user"}], "stream": "yes"}', "'stream' must be a boolean"),
    (
        b'{"model": "bot", "messages": [{"role": "user"}], "stream": true, "stream_options": "0"}',
        "'stream_options' must be an object",
    ),
]


@pytest.mark.parametrize(("body", "message"), BAD_BODIES)
def test_bad_bodies_get_400_and_never_reach_the_upstream(
    gw: Served, fake_openai: FakeOpenAI, body: bytes, message: str
) -> None:
    resp = httpx.post(gw.url + "/v1/chat/completions", content=body, headers={"content-type": "application/json"})
    assert resp.status_code == 400
    error = resp.json()["error"]
    assert message in error["message"] and error["type"] == "invalid_request_error"
    assert fake_openai.requests == []


def test_missing_prompt_and_input_and_unknown_route(gw: Served, fake_openai: FakeOpenAI) -> None:
    assert httpx.post(gw.url + "/v1/completions", json={"model": "bot"}).status_code == 400
    assert httpx.post(gw.url + "/v1/embeddings", json={"model": "bot"}).status_code == 400
    resp = httpx.post(gw.url + "/v1/chat/completions", json={"model": "nope", "messages": MESSAGES})
    assert resp.status_code == 404 and resp.json()["error"]["code"] == "model_not_found"
    assert fake_openai.requests == []


def test_form_content_type_with_a_json_object_is_accepted(gw: Served) -> None:
    body = json.dumps({"model": "bot", "messages": MESSAGES})
    resp = httpx.post(
        gw.url + "/v1/chat/completions", content=body, headers={"content-type": "application/x-www-form-urlencoded"}
    )
    assert resp.status_code == 200


def test_oversized_bodies_get_413_declared_or_chunked(gw: Served, fake_openai: FakeOpenAI) -> None:
    big = json.dumps({"model": "bot", "messages": [{"role": "user", "content": "x" * 20000}]}).encode()
    resp = httpx.post(gw.url + "/v1/chat/completions", content=big)
    assert resp.status_code == 413 and resp.json()["error"]["code"] == "request_too_large"

    def chunks() -> Iterator[bytes]:
        for i in range(0, len(big), 1000):
            yield big[i : i + 1000]

    resp = httpx.post(gw.url + "/v1/chat/completions", content=chunks())
    assert resp.status_code == 413
    assert fake_openai.requests == []


def test_declared_oversize_is_refused_without_reading_the_body(gw: Served) -> None:
    port = int(gw.url.rsplit(":", 1)[1])
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        sock.sendall(
            b"POST /v1/chat/completions HTTP/1.1\r\nhost: x\r\ncontent-length: 900000000\r\n"
            b"content-type: application/json\r\n\r\n{"
        )
        answer = sock.recv(4096)
    assert answer.startswith(b"HTTP/1.1 413")


def test_upstream_refused_is_502_naming_the_upstream(gw: Served) -> None:
    resp = httpx.post(gw.url + "/v1/chat/completions", json={"model": "gone", "messages": MESSAGES})
    assert resp.status_code == 502
    assert "'dead'" in resp.json()["error"]["message"]
    assert gw.metric("turnout_requests_total", route="gone", variant="dead", role="primary", code="5xx") == 1


def test_upstream_timeout_is_504(gw: Served, fake_openai: FakeOpenAI) -> None:
    fake_openai.set("up-model", Behavior(hang=True))
    start = time.monotonic()
    resp = httpx.post(gw.url + "/v1/chat/completions", json={"model": "bot", "messages": MESSAGES}, timeout=10)
    assert resp.status_code == 504 and "timed out after 2s" in resp.json()["error"]["message"]
    assert time.monotonic() - start < 4


def test_upstream_5xx_is_502_and_4xx_passes_through_scrubbed(gw: Served, fake_openai: FakeOpenAI) -> None:
    fake_openai.set("up-model", Behavior(statuses=[503, 429, 401, 400], retry_after=7))
    url = gw.url + "/v1/chat/completions"
    body = {"model": "bot", "messages": MESSAGES}
    first = httpx.post(url, json=body)
    assert first.status_code == 502 and "answered 503" in first.json()["error"]["message"]
    limited = httpx.post(url, json=body)
    assert limited.status_code == 429 and limited.headers["retry-after"] == "7"
    denied = httpx.post(url, json=body)
    assert denied.status_code == 401
    assert UPSTREAM_KEY not in denied.text and "[redacted]" in denied.text  # the fake echoed our key
    assert httpx.post(url, json=body).status_code == 400


def test_malformed_upstream_answers_become_502(gw: Served, fake_openai: FakeOpenAI) -> None:
    url = gw.url + "/v1/chat/completions"
    for kind in ("html", "truncated-json"):
        fake_openai.set("up-model", Behavior(malformed=kind))
        resp = httpx.post(url, json={"model": "bot", "messages": MESSAGES})
        assert resp.status_code == 502, kind
    fake_openai.set("up-model", Behavior(malformed="bad-sse"))
    with httpx.stream("POST", url, json={"model": "bot", "messages": MESSAGES, "stream": True}) as resp:
        text = resp.read().decode()
    assert '"error"' in text and "[DONE]" not in text


def test_upstream_cut_mid_stream_is_an_error_event_without_done(gw: Served, fake_openai: FakeOpenAI) -> None:
    fake_openai.set("up-model", Behavior(chunks=6, chunk_delay_s=0.05, cut_after=2))
    body = {"model": "bot", "messages": MESSAGES, "stream": True}
    with httpx.stream("POST", gw.url + "/v1/chat/completions", json=body, timeout=10) as resp:
        events = [line for line in resp.iter_lines() if line.startswith("data:")]
    assert "[DONE]" not in "".join(events)
    last = json.loads(events[-1][5:])
    assert last["error"]["code"] == "stream_broken"
    assert '"finish_reason":"stop"' not in "".join(events).replace(" ", "")
    with pytest.raises(openai.APIError):
        list(sdk(gw).chat.completions.create(model="bot", messages=MESSAGES, stream=True))


@pytest.mark.parametrize("phase", ["plain", "before-first-token", "mid-stream"])
@pytest.mark.parametrize("http", [PROTOCOL, "httptools"])  # Turnout's departure hook; a watcher task elsewhere
async def test_client_disconnect_aborts_the_upstream_call(
    tmp_path: Path, fake_openai: FakeOpenAI, monkeypatch: pytest.MonkeyPatch, phase: str, http: str
) -> None:
    monkeypatch.setenv("T_UPSTREAM_KEY", UPSTREAM_KEY)
    cfg = write_config(tmp_path, CONFIG.format(url=fake_openai.url, dead=free_port(), timeout=2))
    with served(cfg, http=http) as gw:
        await _disconnect_aborts(gw, fake_openai, phase)


async def _disconnect_aborts(gw: Served, fake_openai: FakeOpenAI, phase: str) -> None:
    if phase == "mid-stream":
        fake_openai.set("up-model", Behavior(chunks=50, chunk_delay_s=0.2))
        body = {"model": "bot", "messages": MESSAGES, "stream": True}
        async with httpx.AsyncClient(timeout=10) as client:
            async with client.stream("POST", gw.url + "/v1/chat/completions", json=body) as resp:
                async for line in resp.aiter_lines():
                    if line.startswith("data:"):
                        break  # closing the stream early drops the connection
        closed_at = time.monotonic()
        (seen,) = await asyncio.to_thread(fake_openai.wait_for, 1)
    else:  # no response head yet: only a raw socket can go away now (an HTTP client waits for the head)
        fake_openai.set("up-model", Behavior(delay_s=5))
        payload = json.dumps({"model": "bot", "messages": MESSAGES, "stream": phase != "plain"}).encode()
        host, port = gw.url.removeprefix("http://").split(":")
        _, writer = await asyncio.open_connection(host, int(port))
        writer.write(
            b"POST /v1/chat/completions HTTP/1.1\r\nhost: gw\r\ncontent-type: application/json\r\n"
            b"content-length: %d\r\n\r\n%s" % (len(payload), payload)
        )
        await writer.drain()
        (seen,) = await asyncio.to_thread(fake_openai.wait_for, 1)  # the upstream call is under way
        writer.close()
        await writer.wait_closed()
        closed_at = time.monotonic()
    await asyncio.to_thread(seen.wait_done, 3.0)
    assert seen.aborted
    assert time.monotonic() - closed_at < 1.0  # the upstream's 5 s answer and any timeout are far later


def test_client_cannot_redirect_the_call_with_body_fields(gw: Served, fake_openai: FakeOpenAI) -> None:
    other = FakeOpenAI()
    try:
        body = {
            "model": "bot",
            "messages": MESSAGES,
            "api_base": other.url,
            "base_url": other.url,
            "api_key": "sk-evil",
            "extra_headers": {"authorization": "Bearer sk-evil"},
        }
        assert httpx.post(gw.url + "/v1/chat/completions", json=body).status_code == 200
        assert other.requests == []
        assert fake_openai.requests[0].headers["authorization"] == f"Bearer {UPSTREAM_KEY}"
        prefixed = httpx.post(gw.url + "/v1/chat/completions", json={**body, "model": f"openai/{other.url}"})
        assert prefixed.status_code == 404
    finally:
        other.close()
