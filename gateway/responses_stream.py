"""The Responses API's typed SSE stream (``event: response.output_text.delta`` ...), relayed as it arrives.

``ResponsesTee`` has ``SSETee``'s interface for ``stream.relay``: ``feed(data)`` returns whole events to forward
now, ``done`` once a terminal event (``response.completed``, ``response.incomplete``, ``response.failed`` or
``error``) was read; ``assemble()`` is the final ``response`` object, or, for a stream cut short, one rebuilt
from the output text deltas seen so far (``status: incomplete``), so the partial answer is stored.

Usage: ``tee = ResponsesTee()``; ``failure, last = await relay(reply, client, tee, ...)``; ``tee.assemble()``.
"""

from __future__ import annotations

import re
import time
from typing import Any

from gateway.sse import Framer, StreamProtocolError, events, loads, payload

TERMINAL = ("response.completed", "response.incomplete", "response.failed")
# an event that may end the stream (a terminal type, or an error): read as it passes
_NOTABLE = re.compile(rb"response\.(?:completed|incomplete|failed)|error")


class ResponsesTee:
    """After the first output text, only a block of events that may end the stream is parsed as it passes; with
    ``text`` (capture or a shadow wants the answer) the others are kept raw, read only if the stream ends
    without its final ``response`` (``assemble``)."""

    def __init__(self, *, text: bool = True) -> None:
        self.text = text
        self.framer = Framer()
        self.done = False
        self.first_token_at: float | None = None
        self.usage: dict[str, Any] | None = None
        self.error: Any = None
        self.meta: dict[str, Any] = {}
        self.final: dict[str, Any] | None = None
        self.texts: dict[tuple[int, int], list[str]] = {}
        self.later: list[bytes] = []  # blocks of events after the first output text, not read yet

    def feed(self, data: bytes) -> bytes:
        block = self.framer.complete(data)
        if not block or self.done:
            return b""
        if self.first_token_at is not None and _NOTABLE.search(block) is None:
            if self.text:
                self.later.append(block)
            return block
        out = []
        for event in events(block):
            if not self.done:
                self._event(event)
                out.append(event + b"\n\n")
        return b"".join(out)

    def _event(self, event: bytes) -> None:
        value = payload(event)
        if value is None:
            return
        if self.first_token_at is not None and _NOTABLE.search(event) is None:
            if self.text:
                self.later.append(event)
            return
        self._payload(loads(value))

    def _payload(self, payload: dict[str, Any]) -> None:
        kind = payload.get("type")
        response = payload.get("response")
        if isinstance(response, dict) and "id" in response and "id" not in self.meta:
            self.meta.update(id=response["id"], model=response.get("model"), created_at=response.get("created_at"))
        if kind == "response.output_text.delta" and isinstance(payload.get("delta"), str):
            if self.first_token_at is None:
                self.first_token_at = time.perf_counter()
            self._delta(payload)
        elif kind in TERMINAL and isinstance(response, dict):
            self.final = response
            self.usage = response.get("usage") if isinstance(response.get("usage"), dict) else None
            self.done = True
        elif kind == "error" or ("error" in payload and kind is None):
            self.error = payload.get("error") or payload
            self.done = True

    def _delta(self, payload: dict[str, Any]) -> None:
        if self.later:  # one read as it passed, after some kept raw: those come first
            self._read_later()
        slot = (int(payload.get("output_index") or 0), int(payload.get("content_index") or 0))
        self.texts.setdefault(slot, []).append(payload["delta"])

    def _read_later(self) -> None:
        later, self.later = self.later, []
        for event in events(b"\n\n".join(later)):
            value = payload(event)
            try:
                parsed = loads(value) if value is not None else {}
            except StreamProtocolError:
                continue  # a partial answer: what parses
            if parsed.get("type") == "response.output_text.delta" and isinstance(parsed.get("delta"), str):
                self._delta(parsed)

    def assemble(self) -> dict[str, Any]:
        if self.final is not None:
            return self.final
        self._read_later()
        output = [
            {"type": "message", "role": "assistant", "content": [{"type": "output_text", "text": "".join(parts)}]}
            for _, parts in sorted(self.texts.items())
        ]
        return {**self.meta, "object": "response", "status": "incomplete", "output": output}
