"""A fake OpenAI-compatible server (chat, completions, embeddings, responses, models) for the test suite.

Usage::

    fake = FakeOpenAI()                                   # listening on 127.0.0.1, own thread
    fake.set("m", Behavior(statuses=[503, 200], retry_after=1))
    OpenAI(base_url=fake.url, api_key="k").chat.completions.create(model="m", messages=[...])
    fake.wait_for(2)[1].body["messages"]
    fake.close()

Answers are deterministic: text "echo: <last user message>", usage in words, `model` echoed.
Streams send `chat.completion.chunk` events, one per piece of the answer (the first also carries the
role), then a chunk with `finish_reason`, the usage chunk if `stream_options.include_usage`, and
``data: [DONE]``. `Behavior.cut_after` counts the pieces sent before the connection is dropped.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import struct
import time
from typing import Any

from aiohttp import web

from tests.fakes import responses_api
from tests.fakes.fake_server import (
    Behavior,
    FakeServer,
    Handler,
    Recorded,
    cut,
    json_response,
    pieces,
    retry_headers,
    words,
)

__all__ = ["Behavior", "FakeOpenAI", "Recorded"]

_ERROR_TYPES = {
    400: ("invalid_request_error", "invalid_request"),
    401: ("authentication_error", "invalid_api_key"),
    403: ("permission_error", "permission_denied"),
    404: ("invalid_request_error", "model_not_found"),
    408: ("timeout_error", "timeout"),
    429: ("rate_limit_error", "rate_limit_exceeded"),
}
_EMBEDDING_DIM = 8
_TOOL_ARGUMENT_PIECE = 8  # characters of tool-call arguments per streamed chunk by default


class FakeOpenAI(FakeServer):
    """Fake OpenAI API at ``url`` (``http://127.0.0.1:PORT/v1``)."""

    url_suffix = "/v1"

    def routes(self) -> list[tuple[str, str, Handler]]:
        return [
            ("POST", "/v1/chat/completions", self._chat),
            ("POST", "/v1/completions", self._completions),
            ("POST", "/v1/embeddings", self._embeddings),
            ("POST", "/v1/responses", self._responses),
            ("GET", "/v1/models", self._models),
        ]

    # -- endpoints ---------------------------------------------------------------------------------

    async def _chat(self, request: web.Request, rec: Recorded, b: Behavior, status: int) -> web.StreamResponse:
        if (early := _early_answer(rec, b, status)) is not None:
            return early
        body = rec.body
        model = body["model"]
        rid = b.response_id or f"chatcmpl-fake-{self.next_id()}"
        created = int(time.time())
        text = b.text if b.text is not None else "echo: " + _last_user_text(body.get("messages") or [])
        usage = _usage(
            _message_words(body.get("messages") or []),
            words(b.tool_call["arguments"] if b.tool_call else text),
        )
        if not body.get("stream"):
            message: dict[str, Any] = {"role": "assistant", "content": text, "refusal": None}
            finish = "stop"
            if b.tool_call is not None:
                message["content"] = None
                message["tool_calls"] = [_tool_call(rid, b.tool_call)]
                finish = "tool_calls"
            return json_response(
                {
                    "id": rid,
                    "object": "chat.completion",
                    "created": created,
                    "model": model,
                    "system_fingerprint": b.fingerprint,
                    "choices": [{"index": 0, "message": message, "logprobs": None, "finish_reason": finish}],
                    "usage": usage,
                }
            )

        include_usage = bool((body.get("stream_options") or {}).get("include_usage"))

        def chunk(delta: dict[str, Any], finish: str | None = None) -> dict[str, Any]:
            out: dict[str, Any] = {
                "id": rid,
                "object": "chat.completion.chunk",
                "created": created,
                "model": model,
                "system_fingerprint": b.fingerprint,
                "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}],
            }
            if include_usage:
                out["usage"] = None
            return out

        if b.tool_call is not None:
            call = _tool_call(rid, b.tool_call)
            args = b.tool_call["arguments"]
            step = _TOOL_ARGUMENT_PIECE if b.chunks is None else max(1, -(-len(args) // max(1, b.chunks)))
            head = {**call, "index": 0, "function": {"name": call["function"]["name"], "arguments": ""}}
            events = [chunk({"role": "assistant", "content": None, "tool_calls": [head]})]
            events += [
                chunk({"tool_calls": [{"index": 0, "function": {"arguments": args[i : i + step]}}]})
                for i in range(0, len(args), step)
            ]
            finish = "tool_calls"
        else:
            parts = pieces(text, b.chunks) or [""]
            if b.first_token_delay_s:
                parts.insert(0, "")
            events = [chunk({"role": "assistant", "content": parts[0]})]
            events += [chunk({"content": p}) for p in parts[1:]]
            finish = "stop"
        tail = [chunk({}, finish)]
        if include_usage:
            tail.append({**chunk({}), "choices": [], "usage": usage})
        return await _stream_sse(request, b, events, tail)

    async def _completions(self, request: web.Request, rec: Recorded, b: Behavior, status: int) -> web.StreamResponse:
        if (early := _early_answer(rec, b, status)) is not None:
            return early
        body = rec.body
        model = body["model"]
        rid = b.response_id or f"cmpl-fake-{self.next_id()}"
        created = int(time.time())
        prompt = body.get("prompt", "")
        prompt_text = prompt if isinstance(prompt, str) else " ".join(str(p) for p in prompt or ())
        text = b.text if b.text is not None else "echo: " + prompt_text
        usage = _usage(words(prompt_text), words(text))

        def completion(piece: str, finish: str | None) -> dict[str, Any]:
            return {
                "id": rid,
                "object": "text_completion",
                "created": created,
                "model": model,
                "choices": [{"index": 0, "text": piece, "logprobs": None, "finish_reason": finish}],
            }

        if not body.get("stream"):
            return json_response({**completion(text, "stop"), "usage": usage})
        events = [completion(p, None) for p in pieces(text, b.chunks)]
        tail = [completion("", "stop")]
        if (body.get("stream_options") or {}).get("include_usage"):
            tail.append({**completion("", None), "choices": [], "usage": usage})
        return await _stream_sse(request, b, events, tail)

    async def _responses(self, request: web.Request, rec: Recorded, b: Behavior, status: int) -> web.StreamResponse:
        if (early := _early_answer(rec, b, status)) is not None:
            return early
        return await responses_api.answer(request, rec, b, b.response_id or f"resp_fake{self.next_id()}")

    async def _embeddings(self, request: web.Request, rec: Recorded, b: Behavior, status: int) -> web.StreamResponse:
        if (early := _early_answer(rec, b, status)) is not None:
            return early
        body = rec.body
        raw = body.get("input", "")
        inputs = [raw] if isinstance(raw, str) or (raw and isinstance(raw[0], int)) else list(raw)
        as_base64 = body.get("encoding_format") == "base64"
        data = []
        for i, item in enumerate(inputs):
            vector = embedding_of(item if isinstance(item, str) else json.dumps(item))
            encoded: Any = (
                base64.b64encode(struct.pack(f"<{_EMBEDDING_DIM}f", *vector)).decode() if as_base64 else vector
            )
            data.append({"object": "embedding", "index": i, "embedding": encoded})
        n = sum(words(item) if isinstance(item, str) else len(item) for item in inputs)
        return json_response(
            {
                "object": "list",
                "data": data,
                "model": body["model"],
                "usage": {"prompt_tokens": n, "total_tokens": n},
            }
        )

    async def _models(self, request: web.Request, rec: Recorded, b: Behavior, status: int) -> web.StreamResponse:
        if status != 200:
            return _error(rec, b, status)
        with self._cond:
            names = sorted(self._behaviors) or ["fake-model"]
        return json_response(
            {
                "object": "list",
                "data": [{"id": n, "object": "model", "created": 0, "owned_by": "fake"} for n in names],
            }
        )


def embedding_of(text: str) -> list[float]:
    """The deterministic 8-dimensional vector the fake returns for `text` (exact in float32)."""
    digest = hashlib.sha256(text.encode()).digest()
    return [(digest[i] - 128) / 128 for i in range(_EMBEDDING_DIM)]


# -- shared answer pieces ----------------------------------------------------------------------------


def _early_answer(rec: Recorded, b: Behavior, status: int) -> web.Response | None:
    """An error, a malformed body or a bad request, if this request gets one instead of an answer."""
    if status != 200:
        return _error(rec, b, status)
    if not isinstance(rec.body, dict) or not isinstance(rec.body.get("model"), str):
        return _error(rec, b, 400, "request body must be a JSON object with a string 'model'")
    if b.malformed == "html":
        return web.Response(
            status=200, text="<html><body><h1>502 Bad Gateway</h1></body></html>", content_type="text/html"
        )
    if b.malformed == "truncated-json":
        whole = json.dumps({"id": "chatcmpl-fake-broken", "object": "chat.completion", "choices": [{"index": 0}]})
        return web.Response(status=200, text=whole[: len(whole) // 2], content_type="application/json")
    if b.malformed == "bad-sse":
        garbage = 'data: {not json\n\nthis is not an event\n\ndata: {"choices": [{"delta": 42}\n\n'
        return web.Response(status=200, text=garbage, content_type="text/event-stream")
    if b.malformed is not None:
        raise ValueError(f"unknown Behavior.malformed {b.malformed!r}")
    return None


def _error(rec: Recorded, b: Behavior, status: int, message: str | None = None) -> web.Response:
    err_type, code = _ERROR_TYPES.get(status, ("server_error", "server_error"))
    if message is None:
        if status == 401:
            message = f"Incorrect API key provided: {rec.headers.get('authorization', '<none>')}"
        else:
            message = f"fake upstream error {status}"
    body = {"error": {"message": message, "type": err_type, "param": None, "code": code}}
    return json_response(body, status=status, headers=retry_headers(b, status))


async def _stream_sse(
    request: web.Request, b: Behavior, events: list[dict[str, Any]], tail: list[dict[str, Any]]
) -> web.StreamResponse:
    """Send `events` (cut after `b.cut_after` of them if set), then `tail` and ``[DONE]``."""
    resp = web.StreamResponse(headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache"})
    await resp.prepare(request)
    for i, event in enumerate(events):
        if b.cut_after is not None and i >= b.cut_after:
            break
        if i and b.chunk_delay_s:
            await asyncio.sleep(b.chunk_delay_s)
        if i == 1 and b.first_token_delay_s:
            await asyncio.sleep(b.first_token_delay_s)
        await resp.write(f"data: {json.dumps(event)}\n\n".encode())
    if b.cut_after is not None:
        cut(request)
        return resp
    for event in tail:
        await resp.write(f"data: {json.dumps(event)}\n\n".encode())
    await resp.write(b"data: [DONE]\n\n")
    await resp.write_eof()
    return resp


def _tool_call(rid: str, call: dict[str, str]) -> dict[str, Any]:
    return {
        "id": f"call_{rid.rsplit('-', 1)[-1]}",
        "type": "function",
        "function": {"name": call["name"], "arguments": call["arguments"]},
    }


def _text_of(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return " ".join(p.get("text", "") for p in content if isinstance(p, dict))
    return ""


def _last_user_text(messages: list[dict[str, Any]]) -> str:
    for message in reversed(messages):
        if message.get("role") == "user":
            return _text_of(message.get("content"))
    return ""


def _message_words(messages: list[dict[str, Any]]) -> int:
    return sum(words(_text_of(m.get("content"))) for m in messages)


def _usage(prompt: int, completion: int) -> dict[str, int]:
    return {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion}
