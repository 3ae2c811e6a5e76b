"""A fake Anthropic Messages API (``POST /v1/messages``) for tests of the litellm seam.

Usage::

    fake = FakeAnthropic()
    await litellm.acompletion(model="anthropic/claude-x", api_base=fake.url, api_key="k", messages=[...])
    fake.close()

``url`` has no path: litellm appends ``/v1/messages`` to ``api_base``. Answers "echo: <last user
message>" plain or streamed with Anthropic's event sequence (message_start, content_block_start, ping,
content_block_delta..., content_block_stop, message_delta, message_stop). Honours `Behavior.statuses`,
`retry_after`, `delay_s`, `hang`, `text`, `chunks`, `chunk_delay_s`, `cut_after` and `response_id`.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

from aiohttp import web

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

__all__ = ["Behavior", "FakeAnthropic", "Recorded"]

_ERROR_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    413: "request_too_large",
    429: "rate_limit_error",
    529: "overloaded_error",
}


class FakeAnthropic(FakeServer):
    """Fake Anthropic API at ``url`` (``http://127.0.0.1:PORT``)."""

    def routes(self) -> list[tuple[str, str, Handler]]:
        return [("POST", "/v1/messages", self._messages)]

    async def _messages(self, request: web.Request, rec: Recorded, b: Behavior, status: int) -> web.StreamResponse:
        body = rec.body
        if status == 200 and not (isinstance(body, dict) and isinstance(body.get("model"), str)):
            status = 400
        if status != 200:
            return _error(rec, b, status)
        model = body["model"]
        rid = b.response_id or f"msg_fake_{self.next_id()}"
        messages = body.get("messages") or []
        text = b.text if b.text is not None else "echo: " + _last_user_text(messages)
        input_tokens = words(_text_of(body.get("system"))) + sum(words(_text_of(m.get("content"))) for m in messages)
        message: dict[str, Any] = {
            "id": rid,
            "type": "message",
            "role": "assistant",
            "model": model,
            "content": [{"type": "text", "text": text}],
            "stop_reason": "end_turn",
            "stop_sequence": None,
            "usage": {"input_tokens": input_tokens, "output_tokens": words(text)},
        }
        if not body.get("stream"):
            return json_response(message)

        start = {
            **message,
            "content": [],
            "stop_reason": None,
            "usage": {"input_tokens": input_tokens, "output_tokens": 1},
        }
        resp = web.StreamResponse(headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache"})
        await resp.prepare(request)
        await _event(resp, {"type": "message_start", "message": start})
        await _event(resp, {"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}})
        await _event(resp, {"type": "ping"})
        for i, piece in enumerate(pieces(text, b.chunks)):
            if b.cut_after is not None and i >= b.cut_after:
                break
            if i and b.chunk_delay_s:
                await asyncio.sleep(b.chunk_delay_s)
            delta = {
                "type": "content_block_delta",
                "index": 0,
                "delta": {"type": "text_delta", "text": piece},
            }
            await _event(resp, delta)
        if b.cut_after is not None:
            cut(request)
            return resp
        await _event(resp, {"type": "content_block_stop", "index": 0})
        await _event(
            resp,
            {
                "type": "message_delta",
                "delta": {"stop_reason": "end_turn", "stop_sequence": None},
                "usage": {"output_tokens": words(text)},
            },
        )
        await _event(resp, {"type": "message_stop"})
        await resp.write_eof()
        return resp


async def _event(resp: web.StreamResponse, data: dict[str, Any]) -> None:
    await resp.write(f"event: {data['type']}\ndata: {json.dumps(data)}\n\n".encode())


def _error(rec: Recorded, b: Behavior, status: int) -> web.Response:
    if status == 401:
        message = f"invalid x-api-key: {rec.headers.get('x-api-key', '<none>')}"
    elif status == 400 and not isinstance(rec.body, dict):
        message = "request body must be a JSON object with a string 'model'"
    else:
        message = f"fake upstream error {status}"
    body = {"type": "error", "error": {"type": _ERROR_TYPES.get(status, "api_error"), "message": message}}
    return json_response(body, status=status, headers=retry_headers(b, status))


def _text_of(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return " ".join(p.get("text", "") for p in content if isinstance(p, dict) and p.get("type") == "text")
    return ""


def _last_user_text(messages: list[dict[str, Any]]) -> str:
    for message in reversed(messages):
        if message.get("role") == "user":
            return _text_of(message.get("content"))
    return ""
