"""What an upstream answered to one eval case, in the shape assertions read, and the callable that gets it.

The runner never imports the gateway: it is handed a ``Call`` (``gateway/evals.py`` builds one on the
upstream seam, with the upstream's retries and timeouts) that sends one chat request to a named upstream and
returns a ``Reply``; ``answer_of`` turns that into an ``Answer``.

Usage: ``answer = answer_of(await call("prod-v3", case.body()))``; ``answer.text``, ``answer.tool_calls``.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import orjson


@dataclass(frozen=True)
class Reply:
    """One upstream call's outcome: the HTTP status and body, or the transport error that stopped it."""

    status: int | None
    body: bytes
    latency_ms: float
    error: str | None = None  # timeout, unreachable, ...: no status


Call = Callable[[str, dict[str, Any]], Awaitable[Reply]]  # (upstream name, chat request body) -> Reply


@dataclass(frozen=True)
class ToolCall:
    name: str
    arguments: str  # the raw JSON text the model produced


@dataclass(frozen=True)
class Answer:
    text: str
    tool_calls: tuple[ToolCall, ...] = ()
    usage: dict[str, int] = field(default_factory=dict)
    latency_ms: float = 0.0
    finish_reason: str | None = None
    error: str | None = None  # the call failed: every assertion fails with this reason


def answer_of(reply: Reply) -> Answer:
    """Parse a chat completion; a failed call, an error status or an unreadable body is an ``error`` answer."""
    if reply.error is not None:
        return Answer("", latency_ms=reply.latency_ms, error=reply.error)
    try:
        data = orjson.loads(reply.body)
    except orjson.JSONDecodeError:
        data = None
    if reply.status != 200:
        message = data.get("error", {}).get("message") if isinstance(data, dict) else None
        detail = f": {str(message)[:300]}" if message else ""
        return Answer("", latency_ms=reply.latency_ms, error=f"upstream answered {reply.status}{detail}")
    choices = data.get("choices") if isinstance(data, dict) else None
    if not isinstance(choices, list) or not choices or not isinstance(choices[0], dict):
        return Answer("", latency_ms=reply.latency_ms, error="upstream answer is not a chat completion")
    message = choices[0].get("message") or {}
    content = message.get("content")
    if isinstance(content, list):  # content parts
        content = "".join(p.get("text", "") for p in content if isinstance(p, dict))
    calls = tuple(
        ToolCall(str((c.get("function") or {}).get("name", "")), str((c.get("function") or {}).get("arguments", "")))
        for c in message.get("tool_calls") or []
        if isinstance(c, dict)
    )
    usage = data.get("usage") if isinstance(data.get("usage"), dict) else {}
    return Answer(
        text=content if isinstance(content, str) else "",
        tool_calls=calls,
        usage={k: v for k, v in usage.items() if isinstance(v, int)},
        latency_ms=reply.latency_ms,
        finish_reason=choices[0].get("finish_reason"),
    )
