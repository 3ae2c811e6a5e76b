"""Request body limits for every endpoint: the OpenAI endpoints take ``server.max_body_mb`` (images, long inputs,
embedding batches: 32 MB), every other path far less (``server.body_limits_kb``): feedback 64 KB, the admin API
and review pages 256 KB, anything else 64 KB. Past its limit, declared (``content-length``) or counted while
reading, a body gets a 413 in OpenAI's error shape and nothing more of it is read; the connection is closed.

``read_body`` reads one body under a limit: ``proxy.Endpoint`` calls it for the OpenAI endpoints,
``admission.BoundedBodies`` for every other route (with ``BodyLimitsKb.for_path``), each within its deadline
(``server.body_timeout_s``) kept by the process's ``BodyDeadlines``.

Usage: ``limit, key = server.body_limits_kb.for_path(path)``, then
``with deadlines.watch(timeout_s): raw = await read_body(receive, limit, declared, slot, key)`` (``TimeoutError``
past the deadline).
"""

from __future__ import annotations

import asyncio
from types import TracebackType
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


class BodyDeadlines:
    """The body deadlines of one process's requests, kept by one timer instead of one per request.

    ``asyncio.timeout`` around each body read armed and cancelled a loop timer per request (~4-7 µs under uvloop),
    although nearly every body is already there when it is read. Here a read costs a dict entry, and one timer,
    armed for the earliest deadline, cancels the reads past theirs when it fires (then re-arms for the next).
    """

    def __init__(self) -> None:
        self.reading: dict[BodyWatch, None] = {}
        self._timer: asyncio.TimerHandle | None = None
        self._loop: asyncio.AbstractEventLoop | None = None  # the timer's

    def watch(self, timeout_s: float) -> BodyWatch:
        """``with deadlines.watch(s):`` around a read: cancelled past ``s`` seconds, as ``TimeoutError``."""
        return BodyWatch(self, timeout_s)

    def _arm(self, loop: asyncio.AbstractEventLoop, deadline: float) -> None:
        """The timer fires by ``deadline`` (earlier than it would: a reload shortened the timeout)."""
        timer = self._timer
        if timer is None or deadline < timer.when() or loop is not self._loop:
            if timer is not None:
                timer.cancel()
            self._timer, self._loop = loop.call_at(deadline, self._expire, loop), loop

    def _expire(self, loop: asyncio.AbstractEventLoop) -> None:
        self._timer = None
        now = loop.time()
        for watch in [w for w in self.reading if w.deadline <= now]:
            watch.expire()
        if self.reading:
            self._arm(loop, min(w.deadline for w in self.reading))


class BodyWatch:
    """One body read under its deadline (``BodyDeadlines.watch``)."""

    __slots__ = ("cancelling", "deadline", "deadlines", "expired", "task", "timeout_s")

    def __init__(self, deadlines: BodyDeadlines, timeout_s: float) -> None:
        self.deadlines = deadlines
        self.timeout_s = timeout_s
        self.expired = False

    def __enter__(self) -> BodyWatch:
        task = asyncio.current_task()
        assert task is not None, "a body is read inside a task"
        loop = task.get_loop()
        self.task, self.deadline, self.cancelling = task, loop.time() + self.timeout_s, task.cancelling()
        self.deadlines.reading[self] = None
        self.deadlines._arm(loop, self.deadline)
        return self

    def expire(self) -> None:
        del self.deadlines.reading[self]
        self.expired = True
        self.task.cancel()

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, traceback: TracebackType | None
    ) -> None:
        if not self.expired:
            del self.deadlines.reading[self]
        elif kind is asyncio.CancelledError and self.task.uncancel() <= self.cancelling:
            raise TimeoutError from exc  # our cancel alone (the server's own would go on): the deadline passed
