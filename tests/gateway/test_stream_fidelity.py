"""Streams arrive as the upstream sent them (SS-1) and SSE framing survives any split (SS-5)."""

# ruff: noqa: F811

from __future__ import annotations

import json
import random
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


def _reference(raw: bytes) -> dict[str, Any]:
    """The answer of a chat stream read the plain way: every event parsed with the json module."""
    text: dict[int, str] = {}
    reasons: dict[int, Any] = {}
    for event in raw.split(b"\n\n"):
        if not event.startswith(b"data:") or event[5:].strip() == b"[DONE]":
            continue
        for choice in json.loads(event[5:])["choices"]:
            text[choice["index"]] = text.get(choice["index"], "") + (choice["delta"].get("content") or "")
            reasons[choice["index"]] = choice.get("finish_reason") or reasons.get(choice["index"])
    return {i: (text[i], reasons[i]) for i in text}


@pytest.mark.parametrize("seed", range(40))
def test_kept_events_are_read_as_each_event_parsed_alone(seed: int) -> None:
    rng = random.Random(seed)
    pieces = ["tok ", " ", "", 'say "hi"', "back\\slash", "end\\", "\\", "é ✓ 🙂", "\n", "\u0000", '"', "\\u00e9", "\t"]
    spaced = rng.random() < 0.3  # json.dumps with spaces, as some servers send
    extra = rng.choice([{}, {"system_fingerprint": "fp"}, {"usage": None}, {"obfuscation": None}])

    def event(delta: dict[str, Any], index: int = 0, reason: str | None = None) -> bytes:
        chunk = {"id": "chatcmpl-p", "object": "chat.completion.chunk", "created": 1, "model": "m", **extra}
        if "obfuscation" in extra:
            chunk["obfuscation"] = "x" * rng.randrange(8)  # differs per chunk
        chunk["choices"] = [{"index": index, "delta": delta, "finish_reason": reason}]
        data = json.dumps(chunk) if spaced else json.dumps(chunk, separators=(",", ":"))
        return b"data: " + data.encode() + b"\n\n"

    raw = event({"role": "assistant", "content": "first"})
    for _ in range(rng.randrange(1, 30)):
        kind = rng.random()
        if kind < 0.8:
            raw += event({"content": rng.choice(pieces) + rng.choice(pieces)})
        elif kind < 0.9:
            raw += event({"content": rng.choice(pieces)}, index=1)
        else:
            raw += event({"content": rng.choice(pieces), "role": "assistant"})
    raw += event({}, reason="stop") + b"data: [DONE]\n\n"
    events = [e + b"\n\n" for e in raw.split(b"\n\n") if e]
    tee = SSETee(text=True)
    for e in events:  # one event a read: after the first token each is kept and read at [DONE]
        tee.feed(e)
    assert tee.done
    answer = tee.assemble()
    got = {c["index"]: (c["message"]["content"] or "", c["finish_reason"]) for c in answer["choices"]}
    assert got == _reference(raw)
