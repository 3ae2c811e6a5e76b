"""The aiohttp pass-through (``server.http_client: aiohttp``), imported only when a session of that kind is
opened: a gateway on the default client (``gateway/h1_client.py``) never loads aiohttp (~0.1 s of start-up).

Same contract as the other clients: only ``model`` is rewritten, bytes flow back as sent, and transport
failures (a stream cut mid-way included) raise the ``UpstreamFailure`` kinds, never aiohttp's own errors.

Usage: ``session = open_session()``; ``client = AiohttpClient("prod-v3", conf, api_key, session)``;
``reply = await client.call(...)``; ``await session.close()`` at shutdown.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping
from typing import Any

import aiohttp
import orjson
from yarl import URL

from gateway.config import Upstream
from gateway.errors import UpstreamFailure, UpstreamTimeout, UpstreamUnreachable
from gateway.reply import JSON, PATHS, SAME_TIMEOUT_S, SSE, Reply


def open_session() -> aiohttp.ClientSession:
    connector = aiohttp.TCPConnector(limit=0, ttl_dns_cache=300, enable_cleanup_closed=True)
    return aiohttp.ClientSession(connector=connector, auto_decompress=False)


class AiohttpClient:
    """Pass-through to any OpenAI-compatible server: only ``model`` is rewritten, bytes flow back as sent."""

    bounds_time = False  # not checked to cover every phase: a shadow keeps its own timer around a call

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
        self.urls = {endpoint: URL(self.base + path) for endpoint, path in PATHS.items()}  # parsed once
        self.timeout_s = conf.timeout_s
        self.connect_timeout_s = conf.connect_timeout_s
        self.timeout = self._timeout(conf.timeout_s)  # an attempt with the upstream's whole timeout uses this one
        self.session = session
        # bytes are relayed as sent: never ask for a compressed answer (aiohttp asks for gzip by default)
        self.headers = {"content-type": JSON, "accept-encoding": "identity", **(headers or {})}
        if api_key:
            self.headers["authorization"] = f"Bearer {api_key}"

    def _timeout(self, total: float) -> aiohttp.ClientTimeout:
        return aiohttp.ClientTimeout(total=total, sock_connect=min(total, self.connect_timeout_s))

    async def call(
        self, endpoint: str, body: dict[str, Any], *, stream: bool, request_id: str, timeout_s: float | None = None
    ) -> Reply:
        payload = orjson.dumps({**body, "model": self.model})
        headers = {**self.headers, "x-turnout-correlation-id": request_id}
        if timeout_s is None or timeout_s > self.timeout_s - SAME_TIMEOUT_S:
            total, timeout = self.timeout_s, self.timeout
        else:
            total, timeout = timeout_s, self._timeout(timeout_s)
        try:
            resp = await self.session.post(self.urls[endpoint], data=payload, headers=headers, timeout=timeout)
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
            return Reply(200, SSE, stream=self._chunks(resp.content.iter_any()), release=resp.release, close=resp.close)
        try:
            data = await resp.read()
        except TimeoutError:
            raise UpstreamTimeout(f"upstream {self.name!r} timed out after {total:.3g}s") from None
        except aiohttp.ClientError as exc:
            raise UpstreamFailure(f"upstream {self.name!r} broke off its answer ({type(exc).__name__})") from None
        finally:
            resp.release()
        return Reply(resp.status, content_type, data, retry_after=retry_after)

    async def _chunks(self, chunks: AsyncIterator[bytes]) -> AsyncIterator[bytes]:
        """The stream's bytes as aiohttp reads them; a timeout stays a ``TimeoutError`` (the relay names it)."""
        try:
            async for chunk in chunks:
                yield chunk
        except aiohttp.ClientError as exc:
            raise UpstreamFailure(f"upstream {self.name!r} broke off its stream ({type(exc).__name__})") from None
