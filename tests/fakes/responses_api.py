"""The fake OpenAI server's ``POST /v1/responses``: a response object, or the typed event stream
(``event: response.created`` ... ``response.completed``; no ``[DONE]``). ``Behavior.cut_after`` drops the
connection after that many ``response.output_text.delta`` events.

Usage: ``("POST", "/v1/responses", responses_endpoint(fake))`` in ``FakeOpenAI.routes``.
"""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any

from aiohttp import web

from tests.fakes.fake_server import Behavior, Recorded, cut, pieces, words

EVENT_TYPES = (
    "response.created",
    "response.in_progress",
    "response.output_item.added",
    "response.content_part.added",
    "response.output_text.delta",
    "response.output_text.done",
    "response.content_part.done",
    "response.output_item.done",
    "response.completed",
)


def _input_text(given: Any) -> str:
    if isinstance(given, str):
        return given
    if isinstance(given, list) and given and isinstance(given[-1], dict):
        content = given[-1].get("content")
        if isinstance(content, str):
            return content
        if isinstance(content, list):
            return "".join(p.get("text", "") for p in content if isinstance(p, dict))
    return ""


def response_body(rid: str, model: str, text: str, prompt: str, status: str = "completed") -> dict[str, Any]:
    message = {
        "type": "message",
        "id": f"msg_{rid}",
        "status": "completed",
        "role": "assistant",
        "content": [{"type": "output_text", "text": text, "annotations": []}],
    }
    usage = {
        "input_tokens": words(prompt),
        "input_tokens_details": {"cached_tokens": 0},
        "output_tokens": words(text),
        "output_tokens_details": {"reasoning_tokens": 0},
        "total_tokens": words(prompt) + words(text),
    }
    done = status == "completed"
    return {
        "id": rid,
        "object": "response",
        "created_at": int(time.time()),
        "status": status,
        "model": model,
        "output": [message] if done else [],
        "usage": usage if done else None,
        "error": None,
        "incomplete_details": None,
        "parallel_tool_calls": True,
        "tool_choice": "auto",
        "tools": [],
    }


async def answer(request: web.Request, rec: Recorded, b: Behavior, rid: str) -> web.StreamResponse:
    body = rec.body
    prompt = _input_text(body.get("input"))
    text = b.text if b.text is not None else "echo: " + prompt
    final = response_body(rid, body["model"], text, prompt)
    if not body.get("stream"):
        return web.json_response(final)
    resp = web.StreamResponse(headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache"})
    await resp.prepare(request)
    number = 0

    async def send(kind: str, **payload: Any) -> None:
        nonlocal number
        data = json.dumps({"type": kind, **payload, "sequence_number": number})
        number += 1
        await resp.write(f"event: {kind}\ndata: {data}\n\n".encode())

    pending = response_body(rid, body["model"], "", prompt, status="in_progress")
    message = final["output"][0]
    ids = {"item_id": message["id"], "output_index": 0, "content_index": 0}
    await send("response.created", response=pending)
    await send("response.in_progress", response=pending)
    await send("response.output_item.added", output_index=0, item={**message, "status": "in_progress", "content": []})
    await send("response.content_part.added", **ids, part={"type": "output_text", "text": "", "annotations": []})
    for i, piece in enumerate(pieces(text, b.chunks)):
        if b.cut_after is not None and i >= b.cut_after:
            cut(request)
            return resp
        if i and b.chunk_delay_s:
            await asyncio.sleep(b.chunk_delay_s)
        await send("response.output_text.delta", **ids, delta=piece, logprobs=[])
    await send("response.output_text.done", **ids, text=text, logprobs=[])
    await send("response.content_part.done", **ids, part=message["content"][0])
    await send("response.output_item.done", output_index=0, item=message)
    await send("response.completed", response=final)
    await resp.write_eof()
    return resp
