"""The OpenAI pass-through on pyqwest (reqwest and hyper in Rust): ``server.http_client: pyqwest`` (opt-in).

Same contract as the other clients (``gateway/h1_client.py``, ``gateway/aiohttp_client.py``): only ``model`` is
rewritten, bytes flow back as sent, a stream is relayed chunk by chunk as hyper reads it (a bounded channel, so
a slow client stops the reads), and transport failures raise the same ``UpstreamFailure`` kinds. Cancelling a
call (the client went away) drops the Rust request at once, which closes its connection: the upstream sees the
abort.

Measured against aiohttp in one bench run (bench/README.md): less CPU a call and more requests/s at 64
concurrent non-streamed calls, but more CPU per streamed event (each chunk crosses from the Rust thread to the
event loop), so it stayed opt-in (httptools became the default).

Connection pools (``Transports``) are per owner (the gateway, the shadow runner), shared by every config
generation, one ``HTTPTransport`` per (timeout, connect timeout) pair since pyqwest sets both per transport.

Usage: ``pools = Transports()``; ``client = QwestClient("prod-v3", conf, key, pools)``; ``await pools.close()``.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable, Mapping
from typing import Any

import orjson
import pyqwest

from gateway.config import Upstream
from gateway.errors import UpstreamFailure, UpstreamTimeout, UpstreamUnreachable
from gateway.reply import JSON, PATHS, SAME_TIMEOUT_S, SSE, Reply

# what a failed exchange raises: the connect errors and timeouts are OSErrors, resets and cut bodies the others
TRANSPORT_ERRORS = (OSError, pyqwest.RemoteProtocolError, pyqwest.ReadError, pyqwest.WriteError)
_settling: set[asyncio.Task[None]] = set()  # streamed responses being drained or closed after the relay


class Transports:
    """The connection pools of one owner, by (timeout, connect timeout); ``close`` once at shutdown."""

    def __init__(self) -> None:
        self.pools: dict[tuple[float, float], pyqwest.HTTPTransport] = {}

    def get(self, timeout_s: float, connect_timeout_s: float) -> pyqwest.HTTPTransport:
        key = (timeout_s, min(timeout_s, connect_timeout_s))
        if key not in self.pools:
            self.pools[key] = pyqwest.HTTPTransport(
                timeout=key[0],  # the whole exchange, body (and stream) included, like aiohttp's total
                connect_timeout=key[1],
                pool_idle_timeout=90.0,
                enable_gzip=False,  # bytes are relayed as the upstream sent them
                enable_brotli=False,
                enable_zstd=False,
                follow_redirects=False,
                enable_otel=False,
            )
        return self.pools[key]

    async def close(self) -> None:
        pools, self.pools = list(self.pools.values()), {}
        for pool in pools:
            await pool.aclose()


class QwestClient:
    """Pass-through to any OpenAI-compatible server on pyqwest."""

    bounds_time = False  # not checked to cover every phase: a shadow keeps its own timer around a call

    def __init__(
        self,
        name: str,
        conf: Upstream,
        api_key: str | None,
        pools: Transports,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        self.name = name
        self.model = conf.model
        base = (conf.base_url or "").rstrip("/")
        self.urls = {endpoint: base + path for endpoint, path in PATHS.items()}
        self.timeout_s = conf.timeout_s
        self.transport = pools.get(conf.timeout_s, conf.connect_timeout_s)
        self.client = pyqwest.Client(self.transport)
        self.headers = {"content-type": JSON, **(headers or {})}
        if api_key:
            self.headers["authorization"] = f"Bearer {api_key}"

    async def call(
        self, endpoint: str, body: dict[str, Any], *, stream: bool, request_id: str, timeout_s: float | None = None
    ) -> Reply:
        payload = orjson.dumps({**body, "model": self.model})
        headers = {**self.headers, "x-turnout-correlation-id": request_id}
        if timeout_s is None or timeout_s > self.timeout_s - SAME_TIMEOUT_S:
            total, deadline = self.timeout_s, None  # the transport's own timeout
        else:
            total, deadline = timeout_s, asyncio.get_running_loop().time() + timeout_s
        try:
            if deadline is None:
                return await self._exchange(self.urls[endpoint], headers, payload, stream, deadline)
            async with asyncio.timeout_at(deadline):
                return await self._exchange(self.urls[endpoint], headers, payload, stream, deadline)
        except TRANSPORT_ERRORS as exc:  # TimeoutError included
            raise self._failure(exc, total) from None

    async def _exchange(
        self, url: str, headers: dict[str, str], payload: bytes, stream: bool, deadline: float | None
    ) -> Reply:
        if stream:
            return await self._open_stream(url, headers, payload, deadline)
        answer = await self.client.post(url, headers, payload)
        content_type = answer.headers.get("content-type", JSON)
        if answer.status == 200 and content_type.startswith(SSE):  # a stream nobody asked for: relayed as one
            return Reply(200, SSE, stream=_once(answer.content))
        return Reply(answer.status, content_type, answer.content, retry_after=answer.headers.get("retry-after"))

    async def _open_stream(self, url: str, headers: dict[str, str], payload: bytes, deadline: float | None) -> Reply:
        resp = await self.transport.execute(pyqwest.Request("POST", url, pyqwest.Headers(headers.items()), payload))
        content_type = resp.headers.get("content-type", JSON)
        if resp.status == 200 and content_type.startswith(SSE):
            return Reply(
                200,
                SSE,
                stream=self._chunks(resp, deadline),
                release=_later(resp, drain=True),
                close=_later(resp, drain=False),
            )
        try:
            data = b"".join([bytes(chunk) async for chunk in resp.content])
        finally:
            await resp.aclose()
        return Reply(resp.status, content_type, data, retry_after=resp.headers.get("retry-after"))

    async def _chunks(self, resp: pyqwest.Response, deadline: float | None) -> AsyncIterator[bytes]:
        """The stream's bytes as hyper reads them; a timeout stays a ``TimeoutError`` (the relay names it)."""
        chunks = resp.content.__aiter__()
        while True:
            try:
                if deadline is None:
                    chunk = await chunks.__anext__()
                else:
                    async with asyncio.timeout_at(deadline):
                        chunk = await chunks.__anext__()
            except StopAsyncIteration:
                return
            except TimeoutError:
                raise
            except TRANSPORT_ERRORS as exc:
                raise UpstreamFailure(f"upstream {self.name!r} broke off its stream ({type(exc).__name__})") from None
            yield bytes(chunk)

    def _failure(self, exc: BaseException, total: float) -> UpstreamFailure:
        if isinstance(exc, pyqwest.ConnectTimeout):
            return UpstreamUnreachable(f"upstream {self.name!r} did not accept a connection in time")
        if isinstance(exc, TimeoutError):
            return UpstreamTimeout(f"upstream {self.name!r} timed out after {total:.3g}s")
        if isinstance(exc, ConnectionError):
            return UpstreamUnreachable(f"upstream {self.name!r} is unreachable ({type(exc).__name__})")
        return UpstreamFailure(f"upstream {self.name!r} is unreachable ({type(exc).__name__})")


async def _once(data: bytes) -> AsyncIterator[bytes]:
    yield data


def _later(resp: pyqwest.Response, *, drain: bool) -> Callable[[], None]:
    """``Reply.release`` / ``close`` (called synchronously): ``release`` reads what is left after the answer's
    end (the chunked terminator) so the connection goes back to the pool; ``close`` drops the connection at once,
    which the upstream sees as an abort."""

    async def settle() -> None:
        try:
            if drain:
                async for _ in resp.content:
                    pass
        except TRANSPORT_ERRORS:
            pass
        finally:
            await resp.aclose()

    def run() -> None:
        task = asyncio.get_running_loop().create_task(settle())
        _settling.add(task)
        task.add_done_callback(_settling.discard)

    return run
