"""Request body limits for every endpoint: the OpenAI endpoints take ``server.max_body_mb`` (images, long inputs,
embedding batches: 32 MB), every other path far less (``server.body_limits_kb``): feedback 64 KB, the admin API
and review pages 256 KB, anything else 64 KB. Past its limit, declared (``content-length``) or counted while
reading, a body gets a 413 in OpenAI's error shape and nothing more of it is read; the connection is closed.

``read_body`` reads one body under a limit: ``proxy.Endpoint`` calls it for the OpenAI endpoints,
``admission.BoundedBodies`` for every other route (with ``BodyLimitsKb.for_path``).

Usage: ``limit, key = server.body_limits_kb.for_path(path)``, then
``raw = await read_body(receive, limit, declared, slot, key)``.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from gateway.errors import PayloadTooLarge
from gateway.limits import LARGE_BODY_BYTES, BodySlot


class BodyLimitsKb(BaseModel):
    """The largest request body, in KB, of each endpoint that never needs `server.max_body_mb` (past it: 413)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    feedback: float = Field(64, gt=0)  # POST /v1/feedback: a label, a score, one corrected answer
    admin: float = Field(256, gt=0)  # /admin/*: review decisions (an edited answer), forms, reload
    other: float = Field(64, gt=0)  # any other path (health, metrics, models, openapi: they take no body)

    def for_path(self, path: str) -> tuple[int, str]:
        """The limit in bytes for ``path``, and the config key that sets it."""
        name = "feedback" if path == "/v1/feedback" else "admin" if path.startswith("/admin/") else "other"
        return int(getattr(self, name) * 1024), f"server.body_limits_kb.{name}"


class ClientGone(Exception):
    """The client disconnected before its request body was complete."""


async def read_body(
    receive: Any, limit: int, declared: bytes | None, slot: BodySlot, key: str = "server.max_body_mb"
) -> bytes:
    """The whole request body; 413 as soon as it passes ``limit`` (declared or counted; ``key`` names the setting);
    a body over ``LARGE_BODY_BYTES`` (declared or counted) takes ``slot`` first (503 when the process holds enough)."""
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise PayloadTooLarge(f"request body is larger than the {limit} byte limit ({key})")
    if declared is not None and declared.isdigit() and int(declared) > LARGE_BODY_BYTES:
        slot.take()
    chunks = []
    size = 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise ClientGone
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            raise PayloadTooLarge(f"request body is larger than the {limit} byte limit ({key})")
        if size > LARGE_BODY_BYTES:
            slot.take()
        chunks.append(chunk)
        if not message.get("more_body", False):
            return b"".join(chunks)
