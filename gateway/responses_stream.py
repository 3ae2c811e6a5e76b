"""The Responses API's typed SSE stream (``event: response.output_text.delta`` ...), relayed as it arrives.

``ResponsesTee`` has ``SSETee``'s interface for ``stream.relay``: ``feed(data)`` returns whole events to forward
now, ``done`` once a terminal event (``response.completed``, ``response.incomplete``, ``response.failed`` or
``error``) was read; ``assemble()`` is the final ``response`` object, or, for a stream cut short, one rebuilt
from the output text deltas seen so far (``status: incomplete``), so the partial answer is stored.

Usage: ``tee = ResponsesTee()``; ``failure, last = await relay(reply, client, tee, ...)``; ``tee.assemble()``.
"""

from __future__ import annotations

import time
from typing import Any

import orjson

from gateway.stream import MAX_EVENT_BYTES, StreamProtocolError

TERMINAL = ("response.completed", "response.incomplete", "response.failed")


class ResponsesTee:
    def __init__(self) -> None:
        self.buffer = b""
        self.done = False
        self.first_token_at: float | None = None
        self.usage: dict[str, Any] | None = None
        self.error: Any = None
        self.meta: dict[str, Any] = {}
        self.final: dict[str, Any] | None = None
        self.texts: dict[tuple[int, int], list[str]] = {}

    def feed(self, data: bytes) -> bytes:
        buffer = self.buffer + data
        if b"\r" in buffer:
            buffer = buffer.replace(b"\r\n", b"\n")
        end = buffer.rfind(b"\n\n")
        if end < 0:
            if len(buffer) > MAX_EVENT_BYTES:
                raise StreamProtocolError("upstream sent an SSE event larger than 1 MiB")
            self.buffer = buffer
            return b""
        complete, self.buffer = buffer[: end + 2], buffer[end + 2 :]
        out = []
        for event in complete.split(b"\n\n"):
            if event and not self.done:
                self._event(event)
                out.append(event + b"\n\n")
        return b"".join(out)

    def _event(self, event: bytes) -> None:
        for line in event.split(b"\n"):
            if not line.startswith(b"data:"):
                continue
            try:
                payload = orjson.loads(line[5:].strip())
            except orjson.JSONDecodeError:
                raise StreamProtocolError("upstream sent an SSE event that is not JSON") from None
            if not isinstance(payload, dict):
                raise StreamProtocolError("upstream sent an SSE event that is not a JSON object")
            self._payload(payload)

    def _payload(self, payload: dict[str, Any]) -> None:
        kind = payload.get("type")
        response = payload.get("response")
        if isinstance(response, dict) and "id" in response and "id" not in self.meta:
            self.meta.update(id=response["id"], model=response.get("model"), created_at=response.get("created_at"))
        if kind == "response.output_text.delta" and isinstance(payload.get("delta"), str):
            if self.first_token_at is None:
                self.first_token_at = time.perf_counter()
            slot = (int(payload.get("output_index") or 0), int(payload.get("content_index") or 0))
            self.texts.setdefault(slot, []).append(payload["delta"])
        elif kind in TERMINAL and isinstance(response, dict):
            self.final = response
            self.usage = response.get("usage") if isinstance(response.get("usage"), dict) else None
            self.done = True
        elif kind == "error" or ("error" in payload and kind is None):
            self.error = payload.get("error") or payload
            self.done = True

    def assemble(self) -> dict[str, Any]:
        if self.final is not None:
            return self.final
        output = [
            {"type": "message", "role": "assistant", "content": [{"type": "output_text", "text": "".join(parts)}]}
            for _, parts in sorted(self.texts.items())
        ]
        return {**self.meta, "object": "response", "status": "incomplete", "output": output}
