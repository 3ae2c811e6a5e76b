"""What every upstream kind answers: a ``Reply`` with a whole body or an async iterator of raw SSE bytes.

Usage: ``Reply(200, JSON, orjson.dumps(answer))``; ``Reply(200, SSE, stream=events())`` where each item is
``sse_event(chunk)`` bytes.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any

import orjson

JSON = "application/json"
SSE = "text/event-stream"
# each endpoint's path under an OpenAI-compatible upstream's base URL (the pass-through clients)
PATHS = {
    "chat.completions": "/chat/completions",
    "completions": "/completions",
    "embeddings": "/embeddings",
    "responses": "/responses",
}
SAME_TIMEOUT_S = 0.01  # a first attempt's time left is its upstream's timeout less what routing took: the same


@dataclass
class Reply:
    status: int
    content_type: str
    body: bytes = b""
    stream: AsyncIterator[bytes] | None = None
    retry_after: str | None = None
    release: Callable[[], None] = field(default=lambda: None)  # the answer was read to its end
    close: Callable[[], None] = field(default=lambda: None)  # abort: the connection is not reused


def sse_event(obj: Any) -> bytes:
    """One ``data:`` event of a server-sent stream."""
    return b"data: " + orjson.dumps(obj) + b"\n\n"
