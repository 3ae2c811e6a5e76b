"""Streams arrive as the upstream sent them (SS-1) and SSE framing survives any split (SS-5)."""

# ruff: noqa: F811

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx
import openai
import pytest

from gateway.sse import StreamProtocolError
from gateway.stream import SSETee
from tests.fakes.fixtures import fake_openai  # noqa: F401
from tests.fakes.openai_server import Behavior, FakeOpenAI
from tests.harness import served, write_config

CONFIG = """
upstreams:
  main: {{base_url: "{url}", model: up-model}}
routes:
  bot: {{variants: {{main: 100}}}}
"""
MESSAGES = [{"role": "user", "content": "tell me about the weather in Lisbon today"}]
TOOL = {"name": "get_weather", "arguments": '{"city": "Lisbon", "unit": "celsius", "days": 3}'}


def chunks(client: openai.OpenAI, model: str, **extra: Any) -> list[dict[str, Any]]:
    stream = client.chat.completions.create(model=model, messages=MESSAGES, stream=True, **extra)  # type: ignore[call-overload]
    return [{**c.model_dump(), "created": 0} for c in stream]


@pytest.mark.parametrize(
    "behavior", [Behavior(response_id="chatcmpl-x"), Behavior(response_id="chatcmpl-t", tool_call=TOOL)]
)
def test_the_sdk_sees_the_same_chunks_as_a_direct_call(
    tmp_path: Path, fake_openai: FakeOpenAI, behavior: Behavior
) -> None:
    fake_openai.set("up-model", behavior)
    direct = openai.OpenAI(base_url=fake_openai.url, api_key="k", max_retries=0, timeout=10)
    with served(write_config(tmp_path, CONFIG.format(url=fake_openai.url))) as gw:
        proxied = openai.OpenAI(base_url=gw.url + "/v1", api_key="k", max_retries=0, timeout=10)
        for extra in ({}, {"stream_options": {"include_usage": True}}):
            expected = chunks(direct, "up-model", **extra)
            assert chunks(proxied, "bot", **extra) == expected
            assert len(expected) > 3


def test_sse_framing_split_at_every_byte_boundary_parses_the_same(fake_openai: FakeOpenAI) -> None:
    fake_openai.set("m", Behavior(response_id="chatcmpl-s", tool_call=TOOL, chunks=5))
    body = {"model": "m", "messages": MESSAGES, "stream": True, "stream_options": {"include_usage": True}}
    raw = httpx.post(fake_openai.url + "/chat/completions", json=body, timeout=10).content
    raw += b": a comment\r\n\r\n"  # CRLF framing and a comment, as some servers send
    whole = SSETee(withhold_usage=True)
    expected_out = whole.feed(raw)
    expected = whole.assemble()
    assert whole.done and expected["choices"][0]["message"]["tool_calls"][0]["function"] == TOOL

    def replay(pieces: list[bytes]) -> tuple[bytes, dict[str, Any]]:
        tee = SSETee(withhold_usage=True)
        out = b"".join(tee.feed(piece) for piece in pieces)
        return out, tee.assemble()

    for cut in range(1, len(raw)):
        assert replay([raw[:cut], raw[cut:]]) == (expected_out, expected), cut
    assert replay([raw[i : i + 1] for i in range(len(raw))]) == (expected_out, expected)


def test_a_tee_not_keeping_the_text_relays_the_same_bytes_usage_and_first_token(fake_openai: FakeOpenAI) -> None:
    fake_openai.set("m", Behavior(response_id="chatcmpl-u", chunks=6))
    body = {"model": "m", "messages": MESSAGES, "stream": True, "stream_options": {"include_usage": True}}
    raw = httpx.post(fake_openai.url + "/chat/completions", json=body, timeout=10).content
    whole = SSETee(withhold_usage=True)
    expected_out = whole.feed(raw)
    assert b'"usage":{' not in expected_out.replace(b" ", b"") and whole.usage and whole.done
    for pieces in ([raw], [raw[i : i + 7] for i in range(0, len(raw), 7)]):
        lean = SSETee(withhold_usage=True, text=False)
        assert b"".join(lean.feed(piece) for piece in pieces) == expected_out
        assert (lean.done, lean.usage, lean.meta["id"], lean.error) == (True, whole.usage, "chatcmpl-u", None)
        assert lean.first_token_at is not None and not lean.later  # nothing kept to parse later


def test_events_after_the_first_token_are_checked_when_the_text_is_read(fake_openai: FakeOpenAI) -> None:
    fake_openai.set("m", Behavior(response_id="chatcmpl-e", chunks=4))
    body = {"model": "m", "messages": MESSAGES, "stream": True}
    events = httpx.post(fake_openai.url + "/chat/completions", json=body, timeout=10).content.split(b"\n\n")
    head, tail, done = b"\n\n".join(events[:2]) + b"\n\n", b"\n\n".join(events[2:4]) + b"\n\n", b"data: [DONE]\n\n"
    for text in (True, False):
        tee = SSETee(text=text)  # an error event, after the first token, is noticed as it passes
        tee.feed(head)
        assert tee.first_token_at is not None
        assert tee.feed(tail) == tail  # a block with nothing notable goes out as it came
        tee.feed(b'data: {"error": {"message": "overloaded"}}\n\n')
        assert tee.error == {"message": "overloaded"}
    for bad, message in ((b"data: [1, 2]\n\n", "not a JSON object"), (b'data: {"choices": nope}\n\n', "not JSON")):
        tee = SSETee(text=True)  # read at [DONE]: the stream fails instead of ending
        tee.feed(head)
        tee.feed(tail + bad)
        with pytest.raises(StreamProtocolError, match=message):
            tee.feed(done)
        whole = SSETee(text=True)
        whole.feed(head + tail)
        assert tee.assemble()["choices"] == whole.assemble()["choices"]  # what parsed is the partial answer
        first = SSETee(text=True)
        first.feed(head)
        assert len(first.assemble()["choices"][0]["message"]["content"]) < len(
            whole.assemble()["choices"][0]["message"]["content"]
        )  # the kept events' text is in it
        lean = SSETee(text=False)  # nothing reads the text: relayed as it came, like any pass-through
        lean.feed(head)
        assert lean.feed(tail + bad + done) == tail + bad + done and lean.done
