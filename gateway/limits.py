"""Bounds on what a client can make the gateway hold: JSON shape, header bytes (the body size and the body
deadline are enforced in ``body_limits.read_body``, ``proxy.Endpoint`` and ``body_limits.BoundedBodies``).

``check_shape`` walks a parsed body without recursion and refuses (400) nesting deeper than ``MAX_DEPTH``,
more than ``MAX_ITEMS`` keys and array items in all, and strings longer than ``MAX_STRING``; orjson already
refuses numbers beyond the float range and invalid UTF-8. The request head's cap and deadline are in
``gateway/server_protocol.py``.

Usage: ``check_shape(orjson.loads(raw), raw)``.
"""

from __future__ import annotations

from typing import Any

from gateway.errors import BadRequest, Overloaded

MAX_DEPTH = 64
MAX_ITEMS = 100_000
MAX_STRING = 16 * 1024 * 1024  # characters; a base64 image can be large
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
