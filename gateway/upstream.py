"""The one seam to model endpoints: OpenAI pass-through, litellm translation, and a built-in dummy.

Every kind answers ``call(endpoint, body, stream=..., request_id=...)`` (``request_id`` is the correlation id,
sent as ``x-turnout-correlation-id``; never the feedback key) with a ``Reply``: a status, a content
type and either a whole body or an async iterator of raw SSE bytes. Transport failures raise
``UpstreamFailure`` / ``UpstreamTimeout`` naming the upstream, never its key. This module is the only
importer of litellm, imported lazily so start-up stays fast when no litellm upstream is configured.

The OpenAI pass-through runs on the HTTP client ``server.http_client`` names: httptools (``gateway/h1_client.py``,
the default), pyqwest (``gateway/qwest_client.py``) or aiohttp (``gateway/aiohttp_client.py``, imported only
when configured); ``open_session(kind)`` opens what its clients share.

Usage: ``session = open_session("httptools")``; ``client = make_client("prod-v3", conf, api_key, session)``;
``reply = await client.call(...)``; ``await session.close()`` at shutdown.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import AsyncIterator, Iterable, Mapping
from typing import TYPE_CHECKING, Any, Protocol, TypeAlias

import orjson

from gateway.config import Upstream
from gateway.dummy import DummyClient
from gateway.errors import UpstreamFailure, UpstreamTimeout, UpstreamUnreachable
from gateway.h1_client import H1Client, Pools
from gateway.qwest_client import QwestClient, Transports
from gateway.reply import JSON, SSE, Reply, sse_event

if TYPE_CHECKING:
    import aiohttp

log = logging.getLogger(__name__)
Session: TypeAlias = "Pools | Transports | aiohttp.ClientSession"  # what an owner's OpenAI clients share


class Client(Protocol):
    name: str
    bounds_time: bool  # a call ends by the upstream's own timeout_s (a caller needs no timer around it)

    async def call(
        self, endpoint: str, body: dict[str, Any], *, stream: bool, request_id: str, timeout_s: float | None = None
    ) -> Reply: ...


# litellm: arguments come from this allow-list only, so a client can never redirect a call (api_base,
# base_url, api_key, extra_headers, ...). Any other field is dropped and logged once per upstream and field.
NOT_FORWARDED = frozenset(("model", "stream"))  # set by the gateway itself
MAX_WARNED = 256  # field names are the client's: a bounded set of them is remembered
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
        "metadata",
        "reasoning_effort",
        "verbosity",
        "service_tier",
        "store",
        "modalities",
        "audio",
        "prediction",
        "web_search_options",
        "safety_identifier",
        "prompt_cache_key",
        "functions",
        "function_call",
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
        "best_of",
        "stream_options",
    ),
    "embeddings": ("input", "user", "dimensions", "encoding_format"),
    "responses": (
        "input",
        "instructions",
        "include",
        "max_output_tokens",
        "metadata",
        "parallel_tool_calls",
        "previous_response_id",
        "reasoning",
        "store",
        "temperature",
        "text",
        "tool_choice",
        "tools",
        "top_p",
        "truncation",
        "user",
        "service_tier",
        "safety_identifier",
    ),
}


def _litellm() -> Any:
    os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")  # importing must never reach the network
    import litellm

    litellm.suppress_debug_info = True
    litellm.telemetry = False
    # a client's image_url / file_url is fetched by litellm for some providers: never from a private, loopback
    # or link-local address (its SSRF check, on by default since 1.110; set here so no default can change it)
    litellm.user_url_validation = True
    litellm.user_url_allowed_hosts = []
    for name in ("LiteLLM", "LiteLLM Router", "LiteLLM Proxy"):
        # litellm adds its own stderr handler and logs each call at INFO: that doubled our one line per call
        logger = logging.getLogger(name)
        for handler in list(logger.handlers):
            logger.removeHandler(handler)
        logger.setLevel(logging.ERROR)  # its per-call notes (e.g. a parameter the provider lacks) would flood
    return litellm


class LitellmClient:
    """Other providers through litellm's async API, translated to and from the OpenAI shape."""

    bounds_time = False  # litellm is handed the timeout; whether each provider keeps to it is litellm's

    def __init__(
        self, name: str, conf: Upstream, api_key: str | None, headers: Mapping[str, str] | None = None
    ) -> None:
        self.name = name
        self.conf = conf
        self.api_key = api_key
        self.headers = dict(headers or {})
        self.litellm = _litellm()
        self.warned: set[str] = set()  # request fields this upstream drops, each logged once

    def _arguments(self, endpoint: str, body: dict[str, Any]) -> dict[str, Any]:
        """The allowed fields of ``body`` (null means the provider's default, so it is left out)."""
        allowed = LITELLM_FIELDS[endpoint]
        dropped = [k for k in body if k not in allowed and k not in NOT_FORWARDED and k not in self.warned]
        for key in dropped[: max(0, MAX_WARNED - len(self.warned))]:
            self.warned.add(key)
            log.warning("upstream %r (litellm) does not pass the request field %r on; it is dropped", self.name, key)
        return {k: body[k] for k in allowed if body.get(k) is not None}

    async def call(
        self, endpoint: str, body: dict[str, Any], *, stream: bool, request_id: str, timeout_s: float | None = None
    ) -> Reply:
        kwargs = self._arguments(endpoint, body)
        total = self.conf.timeout_s if timeout_s is None else timeout_s
        kwargs.update(model=self.conf.model, timeout=total, num_retries=0, max_retries=0, drop_params=True)
        if self.api_key:
            kwargs["api_key"] = self.api_key
        if self.conf.base_url:
            kwargs["api_base"] = self.conf.base_url
        kwargs["extra_headers"] = {**self.headers, "x-turnout-correlation-id": request_id}
        started = time.perf_counter()
        try:
            return await self._call(endpoint, kwargs, stream, total)
        finally:
            log.info(
                "litellm call: upstream %r model %r %s%s in %.0f ms",
                self.name,
                self.conf.model,
                endpoint,
                " (stream opened)" if stream else "",
                (time.perf_counter() - started) * 1000.0,
            )

    async def _call(self, endpoint: str, kwargs: dict[str, Any], stream: bool, total: float) -> Reply:
        call = {
            "chat.completions": self.litellm.acompletion,
            "completions": self.litellm.atext_completion,
            "embeddings": self.litellm.aembedding,
            "responses": self.litellm.aresponses,
        }[endpoint]
        if endpoint != "embeddings":
            kwargs["stream"] = stream
        try:
            result = await call(**kwargs)
        except Exception as exc:
            return self._failure(exc, total)
        if stream and endpoint != "embeddings":
            return Reply(200, SSE, stream=self._relay(result, typed=endpoint == "responses"))
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

    async def _relay(self, chunks: Any, *, typed: bool) -> AsyncIterator[bytes]:
        """litellm's stream as SSE: chat chunks ending in ``[DONE]``, or the Responses API's typed events."""
        try:
            async for chunk in chunks:
                data = chunk.model_dump(exclude_none=True, mode="json")
                if typed:
                    yield b"event: " + str(data.get("type", "message")).encode() + b"\n" + sse_event(data)
                else:
                    yield sse_event(data)
        except Exception as exc:
            log.warning("upstream %r stream failed: %r", self.name, exc)
            raise UpstreamFailure(f"upstream {self.name!r} broke off its stream ({type(exc).__name__})") from None
        finally:
            if hasattr(chunks, "aclose"):
                await chunks.aclose()  # a cancelled relay (client gone) closes the provider's connection too
        if not typed:
            yield b"data: [DONE]\n\n"


async def close_clients(clients: Iterable[Client]) -> None:
    """Close what the clients hold beyond the shared session (litellm caches its own HTTP clients)."""
    if any(isinstance(c, LitellmClient) for c in clients):
        litellm = _litellm()
        await litellm.close_litellm_async_clients()
        litellm.in_memory_llm_clients_cache.flush_cache()


def open_session(kind: str) -> Session:
    """The connection pools an owner's OpenAI clients share (``server.http_client``); ``await .close()`` once."""
    if kind == "httptools":
        return Pools()
    if kind == "aiohttp":
        from gateway import aiohttp_client

        return aiohttp_client.open_session()
    return Transports()


def make_client(
    name: str,
    conf: Upstream,
    api_key: str | None,
    session: Session,
    headers: Mapping[str, str] | None = None,
) -> Client:
    """A client for one upstream; ``headers`` are sent on every call (e.g. the shadow marker)."""
    if conf.provider == "dummy":
        return DummyClient(name, conf)
    if conf.provider == "litellm":
        return LitellmClient(name, conf, api_key, headers)
    if isinstance(session, Pools):
        return H1Client(name, conf, api_key, session, headers)
    if isinstance(session, Transports):
        return QwestClient(name, conf, api_key, session, headers)
    from gateway.aiohttp_client import AiohttpClient

    return AiohttpClient(name, conf, api_key, session, headers)
