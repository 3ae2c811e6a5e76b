"""The one seam to model endpoints: OpenAI pass-through, litellm translation, and a built-in dummy.

Every kind answers ``call(endpoint, body, stream=..., request_id=...)`` with a ``Reply``: a status, a content
type and either a whole body or an async iterator of raw SSE bytes. Transport failures raise
``UpstreamFailure`` / ``UpstreamTimeout`` naming the upstream, never its key. This module is the only
importer of litellm, imported lazily so start-up stays fast when no litellm upstream is configured.

Usage: ``client = make_client("prod-v3", conf, api_key, session)``; ``reply = await client.call(...)``.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import os
import time
from collections.abc import AsyncIterator, Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

import aiohttp
import orjson

from gateway.config import Upstream
from gateway.errors import UpstreamFailure, UpstreamTimeout, UpstreamUnreachable

log = logging.getLogger(__name__)
PATHS = {"chat.completions": "/chat/completions", "completions": "/completions", "embeddings": "/embeddings"}
JSON = "application/json"
SSE = "text/event-stream"


@dataclass
class Reply:
    status: int
    content_type: str
    body: bytes = b""
    stream: AsyncIterator[bytes] | None = None
    retry_after: str | None = None
    release: Callable[[], None] = field(default=lambda: None)  # the answer was read to its end
    close: Callable[[], None] = field(default=lambda: None)  # abort: the connection is not reused


class Client(Protocol):
    name: str

    async def call(
        self, endpoint: str, body: dict[str, Any], *, stream: bool, request_id: str, timeout_s: float | None = None
    ) -> Reply: ...


class OpenAIClient:
    """Pass-through to any OpenAI-compatible server: only ``model`` is rewritten, bytes flow back as sent."""

    def __init__(
        self,
        name: str,
        conf: Upstream,
        api_key: str | None,
        session: aiohttp.ClientSession,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        self.name = name
        self.model = conf.model
        self.base = (conf.base_url or "").rstrip("/")
        self.timeout_s = conf.timeout_s
        self.connect_timeout_s = conf.connect_timeout_s
        self.session = session
        self.headers = {"content-type": JSON, **(headers or {})}
        if api_key:
            self.headers["authorization"] = f"Bearer {api_key}"

    async def call(
        self, endpoint: str, body: dict[str, Any], *, stream: bool, request_id: str, timeout_s: float | None = None
    ) -> Reply:
        payload = orjson.dumps({**body, "model": self.model})
        headers = {**self.headers, "x-turnout-request-id": request_id}
        total = self.timeout_s if timeout_s is None else timeout_s
        timeout = aiohttp.ClientTimeout(total=total, sock_connect=min(total, self.connect_timeout_s))
        try:
            resp = await self.session.post(self.base + PATHS[endpoint], data=payload, headers=headers, timeout=timeout)
        except aiohttp.ConnectionTimeoutError:
            raise UpstreamUnreachable(f"upstream {self.name!r} did not accept a connection in time") from None
        except TimeoutError:
            raise UpstreamTimeout(f"upstream {self.name!r} timed out after {total:.3g}s") from None
        except aiohttp.ClientConnectorError as exc:
            raise UpstreamUnreachable(f"upstream {self.name!r} is unreachable ({type(exc).__name__})") from None
        except aiohttp.ClientError as exc:
            raise UpstreamFailure(f"upstream {self.name!r} is unreachable ({type(exc).__name__})") from None
        content_type = resp.headers.get("content-type", JSON)
        retry_after = resp.headers.get("retry-after")
        if resp.status == 200 and content_type.startswith(SSE):
            return Reply(200, SSE, stream=resp.content.iter_any(), release=resp.release, close=resp.close)
        try:
            data = await resp.read()
        except TimeoutError:
            raise UpstreamTimeout(f"upstream {self.name!r} timed out after {total:.3g}s") from None
        except aiohttp.ClientError as exc:
            raise UpstreamFailure(f"upstream {self.name!r} broke off its answer ({type(exc).__name__})") from None
        finally:
            resp.release()
        return Reply(resp.status, content_type, data, retry_after=retry_after)


class DummyClient:
    """Deterministic OpenAI-shaped answers, plain and streamed, for demos and load tests.

    Quality knob: a prompt found in ``answers`` gets its answer, any other an echo; ``wrong_share`` of all
    prompts (chosen by a hash of the prompt alone, so a larger share is wrong on a superset of prompts) get
    ``WRONG`` instead. Two dummies differing only in ``wrong_share`` are a good and a bad model."""

    WRONG = "Sorry, I am not sure about that."

    def __init__(self, name: str, conf: Upstream) -> None:
        self.name = name
        self.model = conf.model
        self.answers = conf.answers
        self.wrong_share = conf.wrong_share

    def _text(self, body: dict[str, Any]) -> str:
        prompt = body.get("prompt")
        messages = body.get("messages")
        if isinstance(messages, list) and messages and isinstance(messages[-1], dict):
            prompt = messages[-1].get("content")
        said = prompt if isinstance(prompt, str) else orjson.dumps(prompt).decode()
        if self.wrong_share and _unit(said) < self.wrong_share:
            return self.WRONG
        if said in self.answers:
            return self.answers[said]
        return f"Hello from {self.name}. You said: {said[:200]}"

    async def call(
        self, endpoint: str, body: dict[str, Any], *, stream: bool, request_id: str, timeout_s: float | None = None
    ) -> Reply:
        created = int(time.time())
        rid = "dummy-" + request_id
        if endpoint == "embeddings":
            inputs = body.get("input")
            items = inputs if isinstance(inputs, list) else [inputs]
            data = [
                {"object": "embedding", "index": i, "embedding": _vector(orjson.dumps(item))}
                for i, item in enumerate(items)
            ]
            usage = {"prompt_tokens": len(items), "total_tokens": len(items)}
            out = {"object": "list", "data": data, "model": self.model, "usage": usage}
            return Reply(200, JSON, orjson.dumps(out))
        text = self._text(body)
        words = text.split(" ")
        usage = {"prompt_tokens": 8, "completion_tokens": len(words), "total_tokens": 8 + len(words)}
        chat = endpoint == "chat.completions"
        if not stream:
            if chat:
                choice: dict[str, Any] = {
                    "index": 0,
                    "message": {"role": "assistant", "content": text},
                    "finish_reason": "stop",
                }
                obj = "chat.completion"
            else:
                choice = {"index": 0, "text": text, "finish_reason": "stop", "logprobs": None}
                obj = "text_completion"
            out = {
                "id": rid,
                "object": obj,
                "created": created,
                "model": self.model,
                "choices": [choice],
                "usage": usage,
            }
            return Reply(200, JSON, orjson.dumps(out))
        include_usage = bool((body.get("stream_options") or {}).get("include_usage"))
        return Reply(200, SSE, stream=_dummy_stream(rid, created, self.model, words, chat, usage, include_usage))


def _unit(text: str) -> float:
    """A number in [0, 1) fixed by ``text``."""
    return int.from_bytes(hashlib.sha256(text.encode()).digest()[:8], "big") / 2**64


def _vector(seed: bytes) -> list[float]:
    digest = hashlib.sha256(seed).digest()
    return [round(b / 255.0 - 0.5, 6) for b in digest[:8]]


async def _dummy_stream(
    rid: str, created: int, model: str, words: list[str], chat: bool, usage: dict[str, int], include_usage: bool
) -> AsyncIterator[bytes]:
    obj = "chat.completion.chunk" if chat else "text_completion"
    for i, word in enumerate(words):
        piece = word if i == 0 else " " + word
        if chat:
            delta: dict[str, Any] = {"content": piece}
            if i == 0:
                delta["role"] = "assistant"
            choice: dict[str, Any] = {"index": 0, "delta": delta, "finish_reason": None}
        else:
            choice = {"index": 0, "text": piece, "finish_reason": None}
        yield _event({"id": rid, "object": obj, "created": created, "model": model, "choices": [choice]})
        await asyncio.sleep(0)
    last: dict[str, Any] = {"index": 0, "finish_reason": "stop"}
    last.update({"delta": {}} if chat else {"text": ""})
    yield _event({"id": rid, "object": obj, "created": created, "model": model, "choices": [last]})
    if include_usage:
        yield _event({"id": rid, "object": obj, "created": created, "model": model, "choices": [], "usage": usage})
    yield b"data: [DONE]\n\n"


def _event(obj: Any) -> bytes:
    return b"data: " + orjson.dumps(obj) + b"\n\n"


# litellm: arguments come from this allow-list only, so a client can never redirect a call (api_base,
# base_url, api_key, extra_headers, ...).
LITELLM_FIELDS = {
    "chat.completions": (
        "messages",
        "temperature",
        "top_p",
        "n",
        "stop",
        "max_tokens",
        "max_completion_tokens",
        "presence_penalty",
        "frequency_penalty",
        "logit_bias",
        "user",
        "tools",
        "tool_choice",
        "response_format",
        "seed",
        "logprobs",
        "top_logprobs",
        "parallel_tool_calls",
        "stream_options",
    ),
    "completions": (
        "prompt",
        "temperature",
        "top_p",
        "n",
        "stop",
        "max_tokens",
        "presence_penalty",
        "frequency_penalty",
        "logit_bias",
        "user",
        "seed",
        "logprobs",
        "echo",
        "suffix",
    ),
    "embeddings": ("input", "user", "dimensions", "encoding_format"),
}


def _litellm() -> Any:
    os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")  # importing must never reach the network
    import litellm

    litellm.suppress_debug_info = True
    litellm.telemetry = False
    return litellm


class LitellmClient:
    """Other providers through litellm's async API, translated to and from the OpenAI shape."""

    def __init__(
        self, name: str, conf: Upstream, api_key: str | None, headers: Mapping[str, str] | None = None
    ) -> None:
        self.name = name
        self.conf = conf
        self.api_key = api_key
        self.headers = dict(headers or {})
        self.litellm = _litellm()

    async def call(
        self, endpoint: str, body: dict[str, Any], *, stream: bool, request_id: str, timeout_s: float | None = None
    ) -> Reply:
        kwargs: dict[str, Any] = {k: body[k] for k in LITELLM_FIELDS[endpoint] if k in body}
        total = self.conf.timeout_s if timeout_s is None else timeout_s
        kwargs.update(model=self.conf.model, timeout=total, num_retries=0, max_retries=0)
        if self.api_key:
            kwargs["api_key"] = self.api_key
        if self.conf.base_url:
            kwargs["api_base"] = self.conf.base_url
        if self.headers:
            kwargs["extra_headers"] = {**self.headers, "x-turnout-request-id": request_id}
        call = {
            "chat.completions": self.litellm.acompletion,
            "completions": self.litellm.atext_completion,
            "embeddings": self.litellm.aembedding,
        }[endpoint]
        if endpoint != "embeddings":
            kwargs["stream"] = stream
        try:
            result = await call(**kwargs)
        except Exception as exc:
            return self._failure(exc, total)
        if stream and endpoint != "embeddings":
            return Reply(200, SSE, stream=self._relay(result))
        return Reply(200, JSON, orjson.dumps(result.model_dump(), default=str))

    def _failure(self, exc: Exception, timeout_s: float) -> Reply:
        status = getattr(exc, "status_code", None)
        kind = type(exc).__name__
        if isinstance(exc, self.litellm.Timeout) or status in (408, 504):
            raise UpstreamTimeout(f"upstream {self.name!r} timed out after {timeout_s:.3g}s") from None
        if isinstance(exc, self.litellm.APIConnectionError):
            raise UpstreamUnreachable(f"upstream {self.name!r} is unreachable ({kind})") from None
        if isinstance(status, int) and 400 <= status < 500:
            message = f"upstream {self.name!r} refused the request ({kind}): {getattr(exc, 'message', exc)}"
            body = {"error": {"message": message, "type": "invalid_request_error", "code": kind}}
            return Reply(status, JSON, orjson.dumps(body))
        raise UpstreamFailure(f"upstream {self.name!r} failed ({kind})") from None

    async def _relay(self, chunks: Any) -> AsyncIterator[bytes]:
        try:
            async for chunk in chunks:
                yield _event(chunk.model_dump(exclude_none=True))
        except Exception as exc:
            log.warning("upstream %r stream failed: %r", self.name, exc)
            raise UpstreamFailure(f"upstream {self.name!r} broke off its stream ({type(exc).__name__})") from None
        finally:
            await chunks.aclose()  # a cancelled relay (client gone) closes the provider's connection too
        yield b"data: [DONE]\n\n"


async def close_clients(clients: Iterable[Client]) -> None:
    """Close what the clients hold beyond the shared session (litellm caches its own HTTP clients)."""
    if any(isinstance(c, LitellmClient) for c in clients):
        litellm = _litellm()
        await litellm.close_litellm_async_clients()
        litellm.in_memory_llm_clients_cache.flush_cache()


def make_client(
    name: str,
    conf: Upstream,
    api_key: str | None,
    session: aiohttp.ClientSession,
    headers: Mapping[str, str] | None = None,
) -> Client:
    """A client for one upstream; ``headers`` are sent on every call (e.g. the shadow marker)."""
    if conf.provider == "dummy":
        return DummyClient(name, conf)
    if conf.provider == "litellm":
        return LitellmClient(name, conf, api_key, headers)
    return OpenAIClient(name, conf, api_key, session, headers)
