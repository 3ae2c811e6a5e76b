"""SSE framing shared by the stream tees (``stream.SSETee``, ``responses_stream.ResponsesTee``).

``Framer.complete(data)`` returns the complete events that ``data`` finishes, as one block of bytes ending in
a blank line (bytes cut anywhere, ``\\r\\n`` line ends made ``\\n``), keeping the incomplete tail for the next
read; an event growing past ``MAX_EVENT_BYTES`` is a broken upstream. ``events(block)`` splits a block into
its events, ``payload(event)`` is the value of an event's first ``data:`` line (None for a comment or
keep-alive) and ``loads(payload)`` parses it as the JSON object it must be.

Usage::

    framer = Framer()
    block = framer.complete(data)          # b"" until an event is complete
    for event in events(block):            # each without its blank line
        value = payload(event)
"""

from __future__ import annotations

from typing import Any

import orjson

MAX_EVENT_BYTES = 1 << 20  # one SSE event larger than this is a broken upstream


class StreamProtocolError(Exception):
    """The upstream's stream is not valid SSE (or an event is too large)."""


class Framer:
    def __init__(self) -> None:
        self.buffer = b""

    def complete(self, data: bytes) -> bytes:
        buffer = self.buffer + data if self.buffer else data
        if b"\r" in buffer:
            buffer = buffer.replace(b"\r\n", b"\n")
        end = buffer.rfind(b"\n\n") + 2
        if end < 2:
            if len(buffer) > MAX_EVENT_BYTES:
                raise StreamProtocolError("upstream sent an SSE event larger than 1 MiB")
            self.buffer = buffer
            return b""
        if end == len(buffer):  # the common case: a read ends with an event
            self.buffer = b""
            return buffer
        self.buffer = buffer[end:]
        return buffer[:end]


def events(block: bytes) -> list[bytes]:
    """The events of a block from ``Framer.complete``, without their blank lines (empty ones dropped)."""
    return [event for event in block.split(b"\n\n") if event]


def payload(event: bytes) -> bytes | None:
    """The value of the event's first ``data:`` line, without surrounding whitespace."""
    if event.startswith(b"data:") and b"\n" not in event:  # the common case: one data line
        return event[5:].strip()
    for line in event.split(b"\n"):
        if line.startswith(b"data:"):
            return line[5:].strip()
    return None


def loads(value: bytes) -> dict[str, Any]:
    """``value`` as the JSON object an event's data must be; ``StreamProtocolError`` otherwise."""
    try:
        parsed = orjson.loads(value)
    except orjson.JSONDecodeError:
        raise StreamProtocolError("upstream sent an SSE event that is not JSON") from None
    if not isinstance(parsed, dict):
        raise StreamProtocolError("upstream sent an SSE event that is not a JSON object")
    return parsed


def read_chunks(events_: bytes) -> list[dict[str, Any]]:
    """The JSON objects of whole events (each ending in a blank line), in order; ``StreamProtocolError`` if one
    is not. When every event is one ``data:`` line (as upstreams send them) they are parsed at once, as one
    JSON array: a data line holds no line break, so ``\\n\\ndata:`` can only be the seam between two events."""
    count = events_.count(b"\n\n")
    if events_.startswith(b"data:") and events_.count(b"\n") == 2 * count and events_.count(b"\n\ndata:") == count - 1:
        try:
            chunks = orjson.loads(b"[" + events_[5:-2].replace(b"\n\ndata:", b",") + b"]")
        except orjson.JSONDecodeError:
            chunks = None
        if chunks is not None and len(chunks) == count and all(type(chunk) is dict for chunk in chunks):
            return chunks  # type: ignore[no-any-return]
    return [loads(value) for event in events(events_) if (value := payload(event)) is not None]


def parsed(value: bytes) -> dict[str, Any] | None:
    """``value`` parsed, if it is a JSON object."""
    try:
        return loads(value)
    except StreamProtocolError:
        return None
