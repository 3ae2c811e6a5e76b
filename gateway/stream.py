"""The SSE relay: upstream events go to the client as they arrive, while a tee rebuilds the answer.

``relay`` forwards whole events at once (heartbeats while the first token is awaited, an idle timeout:
``gateway.pacing``) and holds back the bytes that carry ``[DONE]``: the caller sends them with
``ClientSide.last`` once the interaction is finished. A stream that ends without ``[DONE]``, goes idle, is
cut or is not valid SSE is a failure (the caller ends it with an error event, never a fabricated ``[DONE]``).
``SSETee.feed(data)`` returns the bytes to send to the client now (only complete events, so the client
never sees half an event); meanwhile it notes the first token and the usage and, when something wants the
text (capture, a shadow), keeps the events to reassemble the streamed answer into one ``chat.completion`` (or
``text_completion``) once, at the end: no JSON parse per event once the first token is through. When
Turnout asked the upstream for usage on the client's behalf, the usage-only chunk is withheld from the client.

Usage::

    tee = SSETee(withhold_usage=True, text=True)
    failure, last = await relay(reply, client, tee, heartbeat_s=15, idle_s=120, timeout_s=60)
    answer = tee.assemble()
"""

from __future__ import annotations

import re
import time
from collections.abc import Iterable
from typing import Any, Protocol

from gateway.client_side import ClientSide
from gateway.errors import UpstreamFailure
from gateway.pacing import Pacer, StreamIdle
from gateway.sse import Framer, StreamProtocolError, events, loads, parsed, payload, read_chunks
from gateway.upstream import Reply

# what must be read as it passes (besides [DONE]): an error, a usage object (withheld, or the metrics'); a false
# match (these bytes inside a string) only costs a parse. It starts with a literal: a fast scan
_NOTABLE = re.compile(rb'"(?:error"\s*:|usage"\s*:\s*\{)')
_META = ("id", "object", "created", "model", "system_fingerprint")


class SSETee:
    """Each block of events is parsed as it passes only until the first token (the answer's metadata, the time
    to first token) and when it may hold an error, the usage or ``[DONE]``; any other block goes out as it
    came. With ``text`` (capture or a shadow wants the answer) those blocks are kept and read once, at
    ``[DONE]`` (or by ``assemble`` for a stream cut short); without it they are never parsed."""

    def __init__(self, *, withhold_usage: bool = False, text: bool = True) -> None:
        self.withhold_usage = withhold_usage
        self.text = text
        self.framer = Framer()
        self.done = False
        self.first_token_at: float | None = None
        self.usage: dict[str, Any] | None = None
        self.error: Any = None
        self.meta: dict[str, Any] = {}
        self.choices: dict[int, dict[str, Any]] = {}
        self.later: list[bytes | dict[str, Any]] = []  # after the first token, in order: raw blocks, parsed chunks

    def feed(self, data: bytes) -> bytes:
        if (  # the common read after the first token: whole events, LF-framed, that need no reading now
            self.first_token_at is not None
            and not self.framer.buffer
            and data.endswith(b"\n\n")
            and b"\r" not in data
            and b"[DONE]" not in data
            and _NOTABLE.search(data) is None
        ):
            if self.text:
                self.later.append(data)
            return data
        block = self.framer.complete(data)
        if not block:
            return b""
        if self.first_token_at is not None and b"[DONE]" not in block and _NOTABLE.search(block) is None:
            if self.text:
                self.later.append(block)
            return block
        out = [event + b"\n\n" for event in events(block) if self._event(event)]
        if self.done and self.text:
            self._read_later(strict=True)
        return b"".join(out)

    def _event(self, event: bytes) -> bool:
        """Take one event in; returns whether the client should see it."""
        value = payload(event)
        if value is None:
            return True  # comments and keep-alives pass through
        if value == b"[DONE]":
            self.done = True
            return True
        if self.first_token_at is None:
            chunk = loads(value)
            if "error" not in chunk:
                self._answer(chunk, _META)
            return self._notable(chunk)
        if _NOTABLE.search(value) is None:
            if self.text:
                self.later.append(event + b"\n\n")
            return True
        chunk = loads(value)
        if self.text:
            self.later.append(chunk)  # its choices are read in order, with the rest
        return self._notable(chunk)

    def _notable(self, chunk: dict[str, Any]) -> bool:
        """A chunk's error and usage; returns whether the client should see it."""
        if "error" in chunk:
            self.error = chunk["error"]
            return True
        if chunk.get("usage"):
            self.usage = chunk["usage"]
        return not (self.withhold_usage and not chunk.get("choices") and chunk.get("usage"))

    def _read_later(self, *, strict: bool) -> None:
        """Read what was kept since the first token (a stream cut short: the events that parse)."""
        later, self.later = self.later, []
        missing = [key for key in _META if key not in self.meta]
        blocks: list[bytes] = []
        for i, kept in enumerate([*later, {}]):  # consecutive blocks are read at once; {} ends the last run
            if isinstance(kept, bytes):
                blocks.append(kept)
                continue
            chunks = [kept] if kept else []
            broken: StreamProtocolError | None = None
            if blocks:
                try:
                    chunks[:0] = read_chunks(b"".join(blocks))
                except StreamProtocolError as exc:
                    broken = exc if strict else None
                    values = [value for event in events(b"".join(blocks)) if (value := payload(event)) is not None]
                    chunks[:0] = [chunk for value in values if (chunk := parsed(value)) is not None]
                blocks = []
            for chunk in chunks:
                if "error" not in chunk:
                    self._answer(chunk, missing)
            if broken is not None:
                self.later = later[i + 1 :]  # what follows still counts for a partial answer
                raise broken

    def _answer(self, chunk: dict[str, Any], keys: Iterable[str]) -> None:
        for key in keys:
            if key in chunk and key not in self.meta:
                self.meta[key] = chunk[key]
        for choice in chunk.get("choices") or ():
            self._choice(choice)

    def _choice(self, choice: dict[str, Any]) -> None:
        index = choice.get("index", 0)
        slot = self.choices.get(index)
        if slot is None:
            slot = self.choices[index] = {"content": [], "tools": {}, "role": None}
        if choice.get("finish_reason"):
            slot["finish_reason"] = choice["finish_reason"]
        delta = choice.get("delta")
        text = choice.get("text") if delta is None else delta.get("content")
        if text:
            slot["content"].append(text)
            if self.first_token_at is None:
                self.first_token_at = time.perf_counter()
        if delta is None:
            return
        if delta.get("role"):
            slot["role"] = delta["role"]
        for call in delta.get("tool_calls") or ():
            if self.first_token_at is None:
                self.first_token_at = time.perf_counter()
            tool = slot["tools"].setdefault(
                call.get("index", 0), {"id": None, "type": "function", "function": {"name": "", "arguments": ""}}
            )
            if call.get("id"):
                tool["id"] = call["id"]
            function = call.get("function") or {}
            tool["function"]["name"] += function.get("name") or ""
            tool["function"]["arguments"] += function.get("arguments") or ""

    def assemble(self) -> dict[str, Any]:
        """The streamed answer as one non-streamed body (what the upstream would have returned)."""
        self._read_later(strict=False)
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
    pacer = Pacer(
        reply.stream,
        heartbeat_s=heartbeat_s,
        idle_s=idle_s,
        waiting=lambda: tee.first_token_at is None,
        beat=client.heartbeat,
    )
    failure: str | None = None
    out = b""
    scrub = StreamScrub(secrets) if secrets else None  # a configured key an upstream echoes, even split across reads
    try:
        while (data := await pacer.next()) is not None:
            out = tee.feed(data)
            if scrub is not None:
                out = scrub.feed(out)
            if tee.done:
                if scrub is not None:
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
    except UpstreamFailure as exc:
        failure = f"upstream broke off the stream ({type(exc).__name__})"
    except TimeoutError:
        failure = f"upstream timed out after {timeout_s:g}s"
    finally:
        pacer.close()
        (reply.release if tee.done else reply.close)()
    if tee.error is not None and failure is None:
        failure = "upstream sent an error event"
    return failure, out
