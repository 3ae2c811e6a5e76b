"""Pace an upstream SSE stream for the relay: heartbeats while the first token is awaited, an idle timeout.

While ``waiting()`` is true (no token yet), a silence of ``heartbeat_s`` yields ``HEARTBEAT``, an SSE comment
that keeps proxies and clients from giving up and that every SSE parser ignores. Any silence longer than
``idle_s`` raises ``StreamIdle``. Reads are never cancelled by a heartbeat (an async generator would not
survive it), so the heartbeat phase keeps one pending read; ``close()`` cancels it.

Usage::

    pacer = Pacer(reply.stream, heartbeat_s=15, idle_s=120, waiting=lambda: tee.first_token_at is None)
    try:
        while (data := await pacer.next()) is not None:
            ...  # data is HEARTBEAT (send it as is) or upstream bytes
    finally:
        pacer.close()
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

HEARTBEAT = b": keep-alive\n\n"


class StreamIdle(Exception):
    """The upstream sent nothing for ``idle_s`` seconds."""


async def _next(it: AsyncIterator[bytes]) -> bytes | None:
    try:
        return await it.__anext__()
    except StopAsyncIteration:
        return None


class Pacer:
    def __init__(
        self,
        stream: AsyncIterator[bytes],
        *,
        heartbeat_s: float,
        idle_s: float,
        waiting: Callable[[], bool] = lambda: True,
    ) -> None:
        self.it = stream.__aiter__()
        self.heartbeat_s = heartbeat_s
        self.idle_s = idle_s
        self.waiting = waiting
        self.pending: asyncio.Future[Any] | None = None
        self.heard = time.monotonic()
        # idle watchdog for the steady phase: one timer per stream, re-armed lazily, instead of an
        # asyncio.timeout around every read (that cost ~5 µs an event in the profile)
        self.loop = asyncio.get_running_loop()
        self.task: asyncio.Task[Any] | None = None
        self.watchdog: asyncio.TimerHandle | None = None
        self.reading_since: float | None = None
        self.expired = False

    async def next(self) -> bytes | None:
        """The next upstream bytes, ``HEARTBEAT``, or None at the end of the stream."""
        if self.pending is None and not (self.heartbeat_s and self.waiting()):
            if self.watchdog is None:
                self.task = asyncio.current_task()
                self._arm(self.loop.time() + self.idle_s)
            self.reading_since = self.loop.time()
            try:
                data = await _next(self.it)
            except asyncio.CancelledError:
                if self.expired and self.task is not None and self.task.uncancel() == 0:
                    raise StreamIdle from None
                raise
            finally:
                self.reading_since = None
            self.heard = time.monotonic()
            return data
        if self.pending is None:
            self.pending = asyncio.ensure_future(_next(self.it))
        idle_left = self.heard + self.idle_s - time.monotonic()
        wait = min(self.heartbeat_s, idle_left) if self.heartbeat_s and self.waiting() else idle_left
        done, _ = await asyncio.wait((self.pending,), timeout=max(0.0, wait))
        if not done:
            if time.monotonic() - self.heard >= self.idle_s:
                raise StreamIdle
            return HEARTBEAT
        pending, self.pending = self.pending, None
        self.heard = time.monotonic()
        return pending.result()  # type: ignore[no-any-return]

    def close(self) -> None:
        if self.pending is not None and not self.pending.done():
            self.pending.cancel()
        self.pending = None
        if self.watchdog is not None:
            self.watchdog.cancel()

    def _arm(self, when: float) -> None:
        self.watchdog = self.loop.call_at(when, self._check)

    def _check(self) -> None:
        """Cancel the read if it has waited ``idle_s``; otherwise look again when it could have."""
        since = self.reading_since
        now = self.loop.time()
        if since is not None and now - since >= self.idle_s and self.task is not None:
            self.expired = True
            self.task.cancel()
            return
        self._arm((since if since is not None else now) + self.idle_s)
