"""The SSE relay: upstream events go to the client as they arrive, while a tee rebuilds the answer.

``relay`` forwards whole events at once (heartbeats while the first token is awaited, an idle timeout:
``gateway.pacing``) and holds back the bytes that carry ``[DONE]``: the caller sends them with
``ClientSide.last`` once the interaction is finished. A stream that ends without ``[DONE]``, goes idle, is
cut or is not valid SSE is a failure (the caller ends it with an error event, never a fabricated ``[DONE]``).
``SSETee.feed(data)`` returns the bytes to send to the client now (only complete events, so the client
never sees half an event); meanwhile it reassembles the streamed answer into one ``chat.completion`` (or
``text_completion``), notes the first token and the usage. When Turnout asked the upstream for usage on
the client's behalf, the usage-only chunk is withheld from the client.

Usage::

    tee = SSETee(withhold_usage=True)
    failure, last = await relay(reply, client, tee, heartbeat_s=15, idle_s=120, timeout_s=60)
    answer = tee.assemble()
"""

from __future__ import annotations

import time
from typing import Any, Protocol

import aiohttp
import orjson

from gateway.client_side import ClientSide
from gateway.errors import UpstreamFailure
from gateway.pacing import HEARTBEAT, Pacer, StreamIdle
from gateway.upstream import Reply

MAX_EVENT_BYTES = 1 << 20  # one SSE event larger than this is a broken upstream


class StreamProtocolError(Exception):
    """The upstream's stream is not valid SSE (or an event is too large)."""


class SSETee:
    def __init__(self, *, withhold_usage: bool = False) -> None:
        self.withhold_usage = withhold_usage
        self.buffer = b""
        self.done = False
        self.first_token_at: float | None = None
        self.usage: dict[str, Any] | None = None
        self.error: Any = None
        self.meta: dict[str, Any] = {}
        self.choices: dict[int, dict[str, Any]] = {}

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
            if event and self._event(event):
                out.append(event + b"\n\n")
        return b"".join(out)

    def _event(self, event: bytes) -> bool:
        """Take one event in; returns whether the client should see it."""
        for line in event.split(b"\n"):
            if not line.startswith(b"data:"):
                continue
            payload = line[5:].strip()
            if payload == b"[DONE]":
                self.done = True
                return True
            try:
                chunk = orjson.loads(payload)
            except orjson.JSONDecodeError:
                raise StreamProtocolError("upstream sent an SSE event that is not JSON") from None
            if not isinstance(chunk, dict):
                raise StreamProtocolError("upstream sent an SSE event that is not a JSON object")
            return self._chunk(chunk)
        return True  # comments and keep-alives pass through

    def _chunk(self, chunk: dict[str, Any]) -> bool:
        if "error" in chunk:
            self.error = chunk["error"]
            return True
        for key in ("id", "object", "created", "model", "system_fingerprint"):
            if key in chunk and key not in self.meta:
                self.meta[key] = chunk[key]
        if chunk.get("usage"):
            self.usage = chunk["usage"]
        choices = chunk.get("choices") or []
        for choice in choices:
            self._choice(choice)
        return not (self.withhold_usage and not choices and chunk.get("usage"))

    def _choice(self, choice: dict[str, Any]) -> None:
        slot = self.choices.setdefault(choice.get("index", 0), {"content": [], "tools": {}, "role": None})
        if choice.get("finish_reason"):
            slot["finish_reason"] = choice["finish_reason"]
        delta = choice.get("delta")
        text = choice.get("text") if delta is None else delta.get("content")
        if text:
            slot["content"].append(text)
            self._token()
        if delta is None:
            return
        if delta.get("role"):
            slot["role"] = delta["role"]
        for call in delta.get("tool_calls") or []:
            self._token()
            tool = slot["tools"].setdefault(
                call.get("index", 0), {"id": None, "type": "function", "function": {"name": "", "arguments": ""}}
            )
            if call.get("id"):
                tool["id"] = call["id"]
            function = call.get("function") or {}
            tool["function"]["name"] += function.get("name") or ""
            tool["function"]["arguments"] += function.get("arguments") or ""

    def _token(self) -> None:
        if self.first_token_at is None:
            self.first_token_at = time.perf_counter()

    def assemble(self) -> dict[str, Any]:
        """The streamed answer as one non-streamed body (what the upstream would have returned)."""
        chat = self.meta.get("object", "chat.completion.chunk") == "chat.completion.chunk"
        choices = []
        for index in sorted(self.choices):
            slot = self.choices[index]
            text = "".join(slot["content"])
            if chat:
                message: dict[str, Any] = {"role": slot["role"] or "assistant", "content": text or None}
                if slot["tools"]:
                    message["tool_calls"] = [slot["tools"][i] for i in sorted(slot["tools"])]
                entry: dict[str, Any] = {"index": index, "message": message}
            else:
                entry = {"index": index, "text": text}
            entry["finish_reason"] = slot.get("finish_reason")
            choices.append(entry)
        body = {**self.meta, "object": "chat.completion" if chat else "text_completion", "choices": choices}
        if self.usage:
            body["usage"] = self.usage
        return body


class Tee(Protocol):
    """What ``relay`` needs of a tee: ``SSETee`` (chat, completions) or ``ResponsesTee`` (the Responses API)."""

    done: bool
    first_token_at: float | None
    error: Any

    def feed(self, data: bytes) -> bytes: ...


class StreamScrub:
    """Masks configured secret values in a byte stream cut anywhere: a tail that could begin a secret is held
    back until the next bytes show whether it does (the common tail, an SSE event's blank line, never can).

    Usage: ``scrub = StreamScrub(gen.secrets)``; ``out = scrub.feed(data)``; ``last = scrub.flush()``."""

    def __init__(self, secrets: tuple[bytes, ...]) -> None:
        self.secrets = tuple(s for s in secrets if s)
        self._bytes = frozenset(b for s in self.secrets for b in s)
        self._longest = max((len(s) for s in self.secrets), default=0)
        self._held = b""

    def feed(self, data: bytes) -> bytes:
        if not self.secrets:
            return data
        data = self._held + data
        for secret in self.secrets:
            if secret in data:
                data = data.replace(secret, b"[redacted]")
        hold = 0
        if data and data[-1] in self._bytes:
            for start in range(max(0, len(data) - self._longest + 1), len(data)):
                tail = data[start:]
                if any(s.startswith(tail) for s in self.secrets):
                    hold = len(tail)
                    break
        self._held = data[len(data) - hold :] if hold else b""
        return data[: len(data) - hold]

    def flush(self) -> bytes:
        held, self._held = self._held, b""
        return held


async def relay(
    reply: Reply,
    client: ClientSide,
    tee: Tee,
    *,
    heartbeat_s: float,
    idle_s: float,
    timeout_s: float,
    secrets: tuple[bytes, ...] = (),
) -> tuple[str | None, bytes]:
    """Relay ``reply``'s stream through ``tee`` to ``client`` (committed first); returns the failure, if any,
    and the last bytes, held back for ``client.last``. The upstream connection is released or closed."""
    assert reply.stream is not None
    await client.commit()
    pacer = Pacer(reply.stream, heartbeat_s=heartbeat_s, idle_s=idle_s, waiting=lambda: tee.first_token_at is None)
    failure: str | None = None
    out = b""
    scrub = StreamScrub(secrets)  # a configured key an upstream echoes, even split across reads
    try:
        while (data := await pacer.next()) is not None:
            if data is HEARTBEAT:
                await client.part(data)
                continue
            out = scrub.feed(tee.feed(data))
            if tee.done:
                out += scrub.flush()
                break
            if out:
                await client.part(out)
        else:
            failure = "upstream closed the stream before its end ([DONE] or a terminal event)"
    except StreamProtocolError as exc:
        failure = str(exc)
    except StreamIdle:
        failure = f"upstream sent nothing for {idle_s:g}s"
    except (aiohttp.ClientError, UpstreamFailure) as exc:
        failure = f"upstream broke off the stream ({type(exc).__name__})"
    except TimeoutError:
        failure = f"upstream timed out after {timeout_s:g}s"
    finally:
        pacer.close()
        (reply.release if tee.done else reply.close)()
    if tee.error is not None and failure is None:
        failure = "upstream sent an error event"
    return failure, out
