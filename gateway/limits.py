"""Bounds on what a client can make the gateway hold: JSON shape, header bytes (the body size and the body
deadline are enforced in ``body_limits.read_body``, ``proxy.Endpoint`` and ``body_limits.BoundedBodies``).

``check_shape`` walks a parsed body without recursion and refuses (400) nesting deeper than ``MAX_DEPTH``,
more than ``MAX_ITEMS`` keys and array items in all, and strings longer than ``MAX_STRING``; orjson already
refuses numbers beyond the float range and invalid UTF-8. ``BoundedHttpToolsProtocol`` is uvicorn's
httptools protocol with a cap on the request head (llhttp has none): past ``MAX_HEADER_BYTES`` it answers
431 and closes the connection before buffering more.

Usage: ``check_shape(orjson.loads(raw), raw)``; ``uvicorn.run(..., http="gateway.limits:BoundedHttpToolsProtocol")``.
"""

from __future__ import annotations

import asyncio
import os
from typing import Any

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from gateway.errors import BadRequest, HeadersTooLarge, Overloaded, error_response

MAX_DEPTH = 64
MAX_ITEMS = 100_000
MAX_STRING = 16 * 1024 * 1024  # characters; a base64 image can be large
MAX_HEADER_BYTES = 64 * 1024
HEAD_TIMEOUT_ENV = "TURNOUT_HEAD_TIMEOUT_S"  # server.head_timeout_s, handed to every worker by turnout serve
LARGE_BODY_BYTES = 1024 * 1024  # a body past this (declared or counted) takes a LargeBodies slot
FEEDBACK_PER_MINUTE = 120  # feedback posts per caller per minute and process (the admin key: unlimited)


def check_brackets(raw: bytes) -> None:
    """Refuse (400) before parsing a body with far more containers than ``check_shape`` allows items: each
    "{" or "[" outside a string is an item of its parent, so past ``4 * MAX_ITEMS`` brackets the parse could only
    end in that 400, after building millions of objects (30 MB of "{}" peaked at 1.2 GB)."""
    if len(raw) > 4 * MAX_ITEMS and raw.count(b"{") + raw.count(b"[") > 4 * MAX_ITEMS:
        raise BadRequest(f"the request body has more than {MAX_ITEMS} keys and array items")


def check_shape(body: Any, raw: bytes) -> None:
    """Raise ``BadRequest`` if ``body`` (parsed from ``raw``) is nested, wide or long past the limits."""
    if len(raw) <= 2 * MAX_ITEMS and raw.count(b"[") + raw.count(b"{") <= MAX_DEPTH:
        # within every limit, no walk needed: an item takes at least 2 bytes ("1," or '"":0' for a key), a
        # character at least one, and each level of nesting a bracket (brackets in strings only overcount)
        return
    stack: list[tuple[Any, int]] = [(body, 1)]
    items = 0
    while stack:
        value, depth = stack.pop()
        if isinstance(value, dict):
            children: Any = value.values()
            items += len(value)
            for key in value:
                if len(key) > MAX_STRING:
                    raise BadRequest(f"a key of the request body is longer than {MAX_STRING} characters")
        elif isinstance(value, list):
            children = value
            items += len(value)
        elif isinstance(value, str):
            if len(value) > MAX_STRING:
                raise BadRequest(f"a string in the request body is longer than {MAX_STRING} characters")
            continue
        else:
            continue
        if depth > MAX_DEPTH:
            raise BadRequest(f"the request body is nested deeper than {MAX_DEPTH} levels")
        if items > MAX_ITEMS:
            raise BadRequest(f"the request body has more than {MAX_ITEMS} keys and array items")
        stack.extend((child, depth + 1) for child in children if isinstance(child, dict | list | str))


class BoundedHttpToolsProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol, refusing request heads over ``MAX_HEADER_BYTES`` with a 431."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._head_timeout_s = float(os.environ.get(HEAD_TIMEOUT_ENV) or 10)
        self._head_timer: asyncio.TimerHandle | None = None
        self._head_deadline: float | None = None  # while a request head is awaited: when it must be complete
        self._in_head = True
        self._head_bytes = 0
        self._tail = b""  # the last bytes seen, so a head end split between two reads is found
        self._refused = False

    def connection_made(self, transport: Any) -> None:
        super().connection_made(transport)
        self._arm()

    def connection_lost(self, exc: Exception | None) -> None:
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None
        super().connection_lost(exc)

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


class CallerRate:
    """At most ``per_minute`` events per caller in each minute (a fixed window), e.g. feedback posts: memory
    is bounded by the callers seen in one minute. ``take`` returns the seconds to wait, 0 when allowed.

    Usage: ``rate = CallerRate(60)``; ``wait = rate.take(caller_hash, time.monotonic())``.
    """

    def __init__(self, per_minute: int) -> None:
        self.per_minute = per_minute
        self._window = 0.0
        self._counts: dict[str, int] = {}

    def take(self, caller: str, now: float) -> float:
        if now - self._window >= 60.0:
            self._window, self._counts = now, {}
        count = self._counts.get(caller, 0)
        if count >= self.per_minute:
            return 60.0 - (now - self._window)
        self._counts[caller] = count + 1
        return 0.0


class LargeBodies:
    """At most ``limit`` request bodies over ``LARGE_BODY_BYTES`` read and parsed at once in this process
    (``server.max_large_bodies``): each holds its bytes and then its parse (a 30 MB body, ~150 MB), so past the
    limit a request gets a fast 503 with Retry-After instead of memory the pod does not have.

    Usage: ``with bodies.slot(limit) as slot: raw = await read_body(..., slot); parse_body(raw)``; the reader
    calls ``slot.take()`` once the body is large, the slot is given back when the block ends.
    """

    def __init__(self) -> None:
        self.held = 0

    def slot(self, limit: int) -> BodySlot:
        return BodySlot(self, limit)


class BodySlot:
    def __init__(self, bodies: LargeBodies, limit: int) -> None:
        self._bodies = bodies
        self._limit = limit
        self._taken = False

    def take(self) -> None:
        """Hold one of the process's large-body slots (once); ``Overloaded`` (503) when none is free."""
        if self._taken:
            return
        if self._bodies.held >= self._limit:
            raise Overloaded(
                f"{self._limit} request bodies over {LARGE_BODY_BYTES // (1024 * 1024)} MB are already being read "
                "(server.max_large_bodies); retry shortly"
            )
        self._bodies.held += 1
        self._taken = True

    def __enter__(self) -> BodySlot:
        return self

    def __exit__(self, *exc: object) -> None:
        if self._taken:
            self._bodies.held -= 1
            self._taken = False
