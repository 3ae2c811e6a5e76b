"""The client's side of one proxied call: what has been sent, and the one way the call ends.

Once a byte went out (the SSE head, a heartbeat) the call is ``committed``: no further upstream attempt, and
an error can only be a terminal SSE event. ``last(body)`` sends the call's final bytes and is the only way
to send them; it first ``finish``es the call (hands its interaction to the sink) and waits until the
interaction is journaled, so the journal append always happens before the client can see the answer
complete. ``finish`` is idempotent: a call that never sends its last bytes (the client left) is finished by
its owner.

Usage::

    client = ClientSide(send, headers, finish=call_finish, attempts=attempts)
    await client.heartbeat()                       # commits the SSE head first
    await client.part(events)                      # stream bytes, more to come
    await client.last(b"data: [DONE]\n\n")         # finish, then the last bytes
    await client.whole(200, body, JSON_HEADERS)    # finish, then a whole non-streamed answer
    await client.error(exc)                        # finish, then an error answer or event
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

from gateway.errors import GatewayError, error_event, error_response
from gateway.pacing import HEARTBEAT
from gateway.retry import Attempts

SSE_HEADERS = [(b"content-type", b"text/event-stream"), (b"cache-control", b"no-cache"), (b"x-accel-buffering", b"no")]


class ClientSide:
    def __init__(
        self,
        send: Any,
        headers: list[tuple[bytes, bytes]],
        *,
        finish: Callable[[], Awaitable[None] | None],
        attempts: Attempts,
    ) -> None:
        self.send = send
        self.headers = headers  # the x-turnout-* headers every answer carries
        self.attempts = attempts  # told when the call commits: no further attempt
        self.finished = False
        self._finish: Callable[[], Awaitable[None] | None] | None = finish

    @property
    def committed(self) -> bool:
        """A byte went to the client: no more retries, and errors are events."""
        return self.attempts.committed

    def finish(self) -> Awaitable[None] | None:
        """Hand the call's interaction on, once (the reference to the finisher is dropped: no cycle stays);
        returns what to wait for until it is journaled, if anything."""
        finish, self._finish = self._finish, None
        if finish is None:
            return None
        self.finished = True
        return finish()

    async def commit(self) -> None:
        """Send the stream's head (once); from here on no retry, and errors are events."""
        if not self.attempts.committed:
            self.attempts.committed = True
            await self.send({"type": "http.response.start", "status": 200, "headers": [*SSE_HEADERS, *self.headers]})

    async def heartbeat(self) -> None:
        await self.commit()
        await self.send({"type": "http.response.body", "body": HEARTBEAT, "more_body": True})

    def part(self, body: bytes) -> Awaitable[None]:
        """Stream bytes, more to come (the send itself is awaited: no coroutine of its own per event)."""
        return self.send({"type": "http.response.body", "body": body, "more_body": True})  # type: ignore[no-any-return]

    async def last(self, body: bytes, *, status: int = 200, headers: list[tuple[bytes, bytes]] | None = None) -> None:
        """Finish the call, then send its last bytes (with the head, ``status`` and ``headers``, if none went
        out yet: a whole answer)."""
        journaled = self.finish()
        if journaled is not None:
            await asyncio.shield(journaled)  # cancelling this wait must not cancel the write
        if not self.attempts.committed:
            await self.send({"type": "http.response.start", "status": status, "headers": headers or []})
        await self.send({"type": "http.response.body", "body": body, "more_body": False})

    async def whole(self, status: int, body: bytes, headers: list[tuple[bytes, bytes]]) -> None:
        """A whole (non-streamed) answer with the x-turnout-* headers."""
        length = (b"content-length", str(len(body)).encode())
        await self.last(body, status=status, headers=[*headers, *self.headers, length])

    async def error(self, exc: GatewayError) -> None:
        """``exc`` as the answer, or as the terminal event of a stream already committed."""
        if self.committed:
            await self.last(error_event(exc))
            return
        response = error_response(exc, self.headers)
        await self.last(bytes(response.body), status=response.status_code, headers=response.raw_headers)
