"""Interactions and journal lines for the collectors tests.

Usage: ``it = interaction("r1", text="hi")``; ``line = encode(interaction_payload(it), Redactor())``.
"""

from __future__ import annotations

import time
from typing import Any

from collectors.record import Interaction


def interaction(
    request_id: str,
    *,
    text: str = "hello",
    answer: str = "hi there",
    route: str = "bot",
    variant: str = "v1",
    role: str = "primary",
    parent_id: str | None = None,
    ts: float | None = None,
    response_id: str | None = None,
    outcome: str = "ok",
    status: int = 200,
    request: dict[str, Any] | None = None,
    extra: dict[str, Any] | None = None,
    caller: str | None = None,
) -> Interaction:
    rid = response_id or f"chatcmpl-{request_id}"
    return Interaction(
        request_id=request_id,
        ts=time.time() if ts is None else ts,
        route=route,
        experiment=route,
        variant=variant,
        role=role,
        parent_id=parent_id,
        upstream=variant,
        endpoint="chat.completions",
        request=request or {"model": route, "messages": [{"role": "user", "content": text}]},
        response={
            "id": rid,
            "object": "chat.completion",
            "choices": [{"index": 0, "message": {"role": "assistant", "content": answer}, "finish_reason": "stop"}],
        },
        status=status,
        outcome=outcome,
        latency_ms=12.5,
        ttft_ms=None,
        usage={"prompt_tokens": 3, "completion_tokens": 2, "total_tokens": 5},
        error=None if outcome == "ok" else "upstream answered 500",
        stream=False,
        capture=True,
        response_id=rid,
        extra=extra or {},
        caller=caller,
    )
