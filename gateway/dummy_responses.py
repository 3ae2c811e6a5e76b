"""The dummy provider's Responses API answers (``POST /v1/responses``), plain and as the typed event stream,
shaped like OpenAI's (checked against its published schemas in the tests).

Usage: ``answer = response_object(rid, model, text, body)``; ``async for event in response_events(...)``.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from typing import Any

import orjson

from gateway.reply import SSE, Reply


def said(body: dict[str, Any]) -> Any:
    """What the caller said last: the ``input`` string, or the last input item's text."""
    given = body.get("input")
    if isinstance(given, list) and given and isinstance(given[-1], dict):
        content = given[-1].get("content")
        if isinstance(content, list):
            return "".join(p.get("text", "") for p in content if isinstance(p, dict) and isinstance(p.get("text"), str))
        return content
    return given


def response_object(rid: str, model: str, text: str, body: dict[str, Any], status: str = "completed") -> dict[str, Any]:
    words = len(text.split(" ")) if text else 0
    message = {
        "type": "message",
        "id": "msg_" + rid,
        "status": status,
        "role": "assistant",
        "content": [{"type": "output_text", "text": text, "annotations": [], "logprobs": []}],
    }
    usage = {
        "input_tokens": 8,
        "input_tokens_details": {"cached_tokens": 0, "cache_write_tokens": 0},
        "output_tokens": words,
        "output_tokens_details": {"reasoning_tokens": 0},
        "total_tokens": 8 + words,
    }
    answer: dict[str, Any] = {
        "id": "resp_" + rid,
        "object": "response",
        "created_at": int(time.time()),
        "status": status,
        "model": model,
        "output": [message] if status == "completed" else [],
        "error": None,
        "incomplete_details": None,
        "instructions": body.get("instructions") if isinstance(body.get("instructions"), str) else None,
        "metadata": body.get("metadata") if isinstance(body.get("metadata"), dict) else {},
        "parallel_tool_calls": True,
        "temperature": 1.0,
        "top_p": 1.0,
        "tool_choice": "auto",
        "tools": [],
        "previous_response_id": body.get("previous_response_id"),
    }
    if status == "completed":  # an unfinished response has no usage key at all
        answer["usage"] = usage
    return answer


def responses_reply(rid: str, model: str, text: str, body: dict[str, Any], stream: bool) -> Reply:
    if stream:
        return Reply(200, SSE, stream=_events(rid, model, text, body))
    return Reply(200, "application/json", orjson.dumps(response_object(rid, model, text, body)))


def _sse(kind: str, payload: dict[str, Any]) -> bytes:
    return b"event: " + kind.encode() + b"\ndata: " + orjson.dumps({"type": kind, **payload}) + b"\n\n"


async def _events(rid: str, model: str, text: str, body: dict[str, Any]) -> AsyncIterator[bytes]:
    final = response_object(rid, model, text, body)
    message = final["output"][0]
    item = {**message, "status": "in_progress", "content": []}
    part = {"type": "output_text", "text": "", "annotations": [], "logprobs": []}
    ids = {"item_id": message["id"], "output_index": 0}
    pending = response_object(rid, model, "", body, status="in_progress")
    steps: list[tuple[str, dict[str, Any]]] = [
        ("response.created", {"response": pending}),
        ("response.in_progress", {"response": pending}),
        ("response.output_item.added", {"output_index": 0, "item": item}),
        ("response.content_part.added", {**ids, "content_index": 0, "part": part}),
    ]
    words = text.split(" ")
    for i, word in enumerate(words):
        delta = word if i == 0 else " " + word
        steps.append(("response.output_text.delta", {**ids, "content_index": 0, "delta": delta, "logprobs": []}))
    steps += [
        ("response.output_text.done", {**ids, "content_index": 0, "text": text, "logprobs": []}),
        ("response.content_part.done", {**ids, "content_index": 0, "part": message["content"][0]}),
        ("response.output_item.done", {"output_index": 0, "item": message}),
        ("response.completed", {"response": final}),
    ]
    for number, (kind, payload) in enumerate(steps):
        yield _sse(kind, {**payload, "sequence_number": number})
        await asyncio.sleep(0)
