"""Pace an upstream SSE stream for the relay: heartbeats while the first token is awaited, an idle timeout.

Every read is awaited directly by the relay, under one timer per stream: while ``waiting()`` is true (no token
yet), a read that has waited ``heartbeat_s`` (or ``heartbeat_s`` since the last heartbeat) makes the timer send
``HEARTBEAT``, an SSE comment that keeps proxies and clients from giving up and that every SSE parser ignores,
through ``beat()`` from a side task; ``next()`` waits for a heartbeat in flight before it returns, so the
relay's next bytes always follow it. A read that has waited ``idle_s`` is cancelled (``StreamIdle``). So a
read costs no task and no ``asyncio.wait`` (those cost ~15 µs a read); a slow consumer never counts as idle
(no read is pending while the relay sends).

Usage::

    pacer = Pacer(reply.stream, heartbeat_s=15, idle_s=120, waiting=lambda: tee.first_token_at is None,
                  beat=client.heartbeat)
    try:
        while (data := await pacer.next()) is not None:
            ...  # upstream bytes
    finally:
        pacer.close()
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable, Coroutine
from typing import Any

HEARTBEAT = b": keep-alive\n\n"


class StreamIdle(Exception):
    """The upstream sent nothing for ``idle_s`` seconds."""


class Pacer:
    def __init__(
        self,
        stream: AsyncIterator[bytes],
        *,
        heartbeat_s: float,
        idle_s: float,
        waiting: Callable[[], bool] = lambda: True,
        beat: Callable[[], Coroutine[Any, Any, None]] | None = None,
    ) -> None:
        self.anext = stream.__aiter__().__anext__
        self.heartbeat_s = heartbeat_s if beat is not None else 0.0
        self.idle_s = idle_s
        self.waiting = waiting
        self.beat = beat
        self.loop = asyncio.get_running_loop()
        self.task = asyncio.current_task()  # the relay: cancelled when its read has waited idle_s
        self.reading_since: float | None = None
        self.beaten = 0.0  # when the last heartbeat went out
        self.beating: asyncio.Task[None] | None = None
        self.expired = False
        self.timer: asyncio.TimerHandle | None = self.loop.call_at(self._due(self.loop.time()), self._check)

    async def next(self) -> bytes | None:
        """The next upstream bytes, or None at the end of the stream."""
        self.reading_since = self.loop.time()
        try:
            data = await self.anext()
        except StopAsyncIteration:
            data = None
        except asyncio.CancelledError:
            if self.expired and self.task is not None and self.task.uncancel() == 0:
                raise StreamIdle from None
            raise
        finally:
            self.reading_since = None
        if self.beating is not None:  # a heartbeat went out while this read waited: it is sent first
            beating, self.beating = self.beating, None
            await beating
        return data

    def close(self) -> None:
        """Stop the timer and a heartbeat still waiting to be sent (it is a whole body part or nothing)."""
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None
        if self.beating is not None and not self.beating.done():
            self.beating.cancel()
        self.beating = None

    def _due(self, now: float) -> float:
        """When to look next: a pending read's idle limit or heartbeat, else as if a read began now."""
        since = self.reading_since if self.reading_since is not None else now
        due = since + self.idle_s
        if self.heartbeat_s and self.waiting():
            due = min(due, max(since, self.beaten) + self.heartbeat_s)
        return due

    def _check(self) -> None:
        """Cancel a read that has waited ``idle_s``; send a heartbeat if one is due; look again when needed."""
        now = self.loop.time()
        since = self.reading_since
        if since is not None and now - since >= self.idle_s and self.task is not None:
            self.expired = True
            self.timer = None
            self.task.cancel()
            return
        if (
            since is not None
            and self.beat is not None
            and self.heartbeat_s
            and self.waiting()
            and now - max(since, self.beaten) >= self.heartbeat_s
        ):
            self.beaten = now  # one in flight that the client does not take yet: the next is due a period later
            beating = self.beating  # a failed one stays, for next() to raise
            if beating is None or (beating.done() and beating.exception() is None):
                self.beating = self.loop.create_task(self.beat())
        self.timer = self.loop.call_at(max(self._due(now), now + 0.001), self._check)


class Beats:
    """Heartbeats while something else is awaited directly (the upstream's head): ``beat()`` from a side task every
    ``every_s`` (one in flight at most); ``stop()`` ends them and waits for the one in flight, so what the caller
    sends next follows it.

    Usage: ``beats = Beats(client.heartbeat, 15)``; ``try: reply = await call`` ``finally: await beats.stop()``."""

    def __init__(self, beat: Callable[[], Coroutine[Any, Any, None]], every_s: float) -> None:
        self.beat = beat
        self.every_s = every_s
        self.loop = asyncio.get_running_loop()
        self.beating: asyncio.Task[None] | None = None
        self.timer: asyncio.TimerHandle | None = self.loop.call_later(every_s, self._due)

    async def stop(self) -> None:
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None
        if self.beating is not None:
            beating, self.beating = self.beating, None
            await beating

    def _due(self) -> None:
        if self.beating is None or (self.beating.done() and self.beating.exception() is None):
            self.beating = self.loop.create_task(self.beat())
        self.timer = self.loop.call_later(self.every_s, self._due)
