"""The server side of a client connection: uvicorn's httptools protocol with what Turnout adds to it.

- A cap on the request head (llhttp has none): past ``MAX_HEADER_BYTES`` it answers 431 and closes the
  connection before buffering more.
- A deadline for the request head (slowloris): ``server.head_timeout_s``, from ``HEAD_TIMEOUT_ENV``.
- The departure hook: each request's scope carries ``scope["extensions"][DEPARTURES]``, the connection's list of
  callables run once when the connection is lost. The gateway adds one while a call is in flight, to cancel it
  when its client leaves (``proxy.Endpoint``), instead of a task per request awaiting ``receive()`` for the
  ``http.disconnect`` (a task, its wake-ups and its ``receive`` calls: ~7 µs a request).

Usage: ``uvicorn.run(app, http="gateway.server_protocol:BoundedHttpToolsProtocol")``.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Callable
from typing import Any

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from gateway.errors import HeadersTooLarge, error_response

MAX_HEADER_BYTES = 64 * 1024
HEAD_TIMEOUT_ENV = "TURNOUT_HEAD_TIMEOUT_S"  # server.head_timeout_s, handed to every worker by turnout serve
DEPARTURES = "turnout.departures"


class BoundedHttpToolsProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol, refusing request heads over ``MAX_HEADER_BYTES`` with a 431, closing heads
    that do not arrive in time, and running the departure hooks when the connection is lost."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._head_timeout_s = float(os.environ.get(HEAD_TIMEOUT_ENV) or 10)
        self._head_timer: asyncio.TimerHandle | None = None
        self._head_deadline: float | None = None  # while a request head is awaited: when it must be complete
        self._in_head = True
        self._head_bytes = 0
        self._tail = b""  # the last bytes seen, so a head end split between two reads is found
        self._refused = False
        self._departures: list[Callable[[], None]] = []

    def connection_made(self, transport: Any) -> None:
        super().connection_made(transport)
        self._arm()

    def connection_lost(self, exc: Exception | None) -> None:
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None
        super().connection_lost(exc)
        for departed in self._departures[:]:
            departed()

    def _arm(self) -> None:
        """Slowloris: a request head (from its first byte, or from the connection's start) has a deadline. One
        timer per connection, moved on when it fires before the deadline of the head awaited then, instead of a
        timer armed and cancelled for every request (~3.5 µs under uvloop)."""
        if self._head_deadline is None:
            self._head_deadline = self.loop.time() + self._head_timeout_s
            if self._head_timer is None:
                self._head_timer = self.loop.call_at(self._head_deadline, self._head_expired)

    def _head_expired(self) -> None:
        self._head_timer = None
        deadline = self._head_deadline
        if deadline is None:
            return  # no head awaited now: the next one arms the timer again
        if self.loop.time() < deadline:  # armed for an earlier head, which arrived in time
            self._head_timer = self.loop.call_at(deadline, self._head_expired)
        elif self._in_head and not self.transport.is_closing():
            self.transport.close()

    def data_received(self, data: bytes) -> None:
        if self._refused:
            return
        if self._in_head:
            self._arm()
            seen = self._tail + data
            end = seen.find(b"\r\n\r\n")
            self._head_bytes += len(data) if end < 0 else max(0, end - len(self._tail))
            self._tail = seen[-3:]
            if self._head_bytes > MAX_HEADER_BYTES:
                self._refuse_head()
                return
        super().data_received(data)

    def on_headers_complete(self) -> None:
        self._head_deadline = None
        self._in_head = False
        # uvicorn types an extension as a dict; ASGI lets it hold any value
        self.scope["extensions"] = {DEPARTURES: self._departures}  # type: ignore[dict-item]
        super().on_headers_complete()

    def on_message_complete(self) -> None:
        super().on_message_complete()
        self._in_head, self._head_bytes, self._tail = True, 0, b""

    def _refuse_head(self) -> None:
        refused = HeadersTooLarge(f"the request line and headers are larger than {MAX_HEADER_BYTES} bytes")
        response = error_response(refused, [(b"connection", b"close")])
        fields = b"".join(name + b": " + value + b"\r\n" for name, value in response.raw_headers)
        self._refused = True
        self.transport.write(b"HTTP/1.1 431 Request Header Fields Too Large\r\n" + fields + b"\r\n" + response.body)
        self.transport.close()
