"""The OpenAI pass-through on a lean HTTP/1.1 client: an asyncio protocol with httptools' parser
(``server.http_client: httptools``, the default).

A gateway talks to a handful of upstreams, always ``POST`` with a JSON body, so a client needs a keep-alive pool
per upstream, one request head built from bytes prepared once per upstream, and the response parsed where its
bytes arrive: no per-request request/response/header objects, tracing hooks or cookie jar (measured: ~25 µs of
CPU a call against aiohttp's ~90 at 64 concurrent calls). httptools is llhttp (node's parser), the one uvicorn
parses requests with.

Same contract as the aiohttp and pyqwest clients: only ``model`` is rewritten and bytes flow back as sent
(``accept-encoding: identity``, nothing decompressed); a stream is relayed chunk by chunk as it is read, and a
reader that falls behind by ``HIGH_WATER`` bytes stops the socket's reads (back-pressure to the upstream);
cancelling a call aborts its connection at once, which the upstream sees; transport failures raise the same
``UpstreamFailure`` kinds. A call is sent once: a connection that breaks before its answer is a failed attempt
(the retry policy decides), never resent here, since the upstream may have read it. Idle connections are not
reused after ``KEEPALIVE_S``, under the usual servers' own keep-alive limits.

Usage: ``pools = Pools()``; ``client = H1Client("prod-v3", conf, key, pools)``; ``await pools.close()``.
"""

from __future__ import annotations

import asyncio
import ssl
from collections import deque
from collections.abc import AsyncIterator, Mapping
from typing import Any
from urllib.parse import urlsplit

import httptools
import orjson

from gateway.config import Upstream
from gateway.errors import UpstreamFailure, UpstreamTimeout, UpstreamUnreachable
from gateway.reply import JSON, PATHS, SAME_TIMEOUT_S, SSE, Reply

HIGH_WATER = 1 << 16  # body bytes read and not yet taken: over this the socket's reads pause
KEEPALIVE_S = 4.0  # an idle connection older than this is closed, not reused (uvicorn closes them after 5 s)
RELEASE_S = 1.0  # a released answer whose end (a chunked terminator) has not come by then: the connection goes
WANTED = frozenset((b"content-type", b"retry-after", b"content-length", b"transfer-encoding"))


class Broken(Exception):
    """The connection failed before the answer was complete (reset, closed, or bytes that are not HTTP)."""


class Connection(asyncio.Protocol):
    """One keep-alive connection and the exchange on it: the answer's head and body, as they are parsed."""

    def __init__(self, pool: Pool) -> None:
        self.pool = pool
        self.loop = pool.loop
        self.transport: asyncio.Transport | None = None
        self.parser = httptools.HttpResponseParser(self)
        self.closed = False
        self.idle_since = 0.0
        self.status = 0
        self.headers: dict[bytes, bytes] = {}
        self.chunks: deque[bytes] = deque()
        self.buffered = 0
        self.complete = False
        self.error: BaseException | None = None
        self.paused = False
        self.streaming = False  # the body is relayed as it comes (so a reader that falls behind pauses the socket)
        self.released = False
        self.waiter: asyncio.Future[None] | None = None
        self.timer: asyncio.TimerHandle | None = None

    # the exchange
    def send(self, head: bytes, payload: bytes, deadline: float) -> None:
        """Start an exchange: the request goes out, and the answer must be complete by ``deadline``."""
        assert self.transport is not None
        self.status, self.headers, self.complete, self.error = 0, {}, False, None
        self.released = self.streaming = False
        self.chunks.clear()
        self.buffered = 0
        self.timer = self.loop.call_at(deadline, self._expire)
        self.transport.writelines((head, payload))

    async def head(self) -> None:
        """Wait for the answer's status and headers (raises ``Broken`` or ``TimeoutError``)."""
        while not self.status:
            if self.error is not None:
                raise self.error
            await self._wait()

    async def body(self) -> bytes:
        """Wait for the whole body."""
        while not self.complete:
            if self.error is not None:
                raise self.error
            await self._wait()
        data = self.chunks.popleft() if len(self.chunks) == 1 else b"".join(self.chunks)
        self.chunks.clear()
        return data

    async def stream(self, name: str) -> AsyncIterator[bytes]:
        """The body as it is read: everything buffered so far in one piece per step."""
        while True:
            if self.chunks:
                data = self.chunks.popleft() if len(self.chunks) == 1 else b"".join(self.chunks)
                self.chunks.clear()
                self.buffered = 0
                if self.paused and self.transport is not None:
                    self.paused = False
                    self.transport.resume_reading()
                yield data
            elif self.complete:
                return
            elif isinstance(self.error, TimeoutError):
                raise self.error  # the relay names a timeout
            elif self.error is not None:
                raise UpstreamFailure(f"upstream {name!r} broke off its stream ({self.error})")
            else:
                await self._wait()

    def release(self) -> None:
        """The answer was taken to its end: the connection goes back to the pool once the answer is complete."""
        self.released = True
        if self.timer is not None:
            self.timer.cancel()
        if self.complete:
            self.pool.put(self)
        else:  # the stream's last event came before its terminator
            self.timer = self.loop.call_later(RELEASE_S, self.abort)

    def abort(self) -> None:
        """Drop the connection now (the upstream sees it closed)."""
        if self.timer is not None:
            self.timer.cancel()
        self.closed = True
        if self.transport is not None:
            self.transport.abort()

    async def _wait(self) -> None:
        self.waiter = self.loop.create_future()
        try:
            await self.waiter
        finally:
            self.waiter = None

    def _wake(self) -> None:
        if self.waiter is not None and not self.waiter.done():
            self.waiter.set_result(None)

    def _expire(self) -> None:
        self.timer = None
        self._fail(TimeoutError())
        self.abort()

    def _fail(self, error: BaseException) -> None:
        if self.error is None and not self.complete:
            self.error = error
        self._wake()

    # asyncio.Protocol
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError as exc:
            self._fail(Broken(f"not HTTP: {exc}"))
            self.abort()

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        if self.timer is not None:
            self.timer.cancel()
        delimited = b"content-length" in self.headers or b"transfer-encoding" in self.headers
        if self.status and not self.complete and not delimited:
            self.complete = True  # an answer without a length ends where its connection does
        self._fail(Broken(type(exc).__name__ if exc is not None else "connection closed"))
        self.pool.forget(self)

    # httptools
    def on_header(self, name: bytes, value: bytes) -> None:
        name = name.lower()
        if name in WANTED:
            self.headers[name] = value

    def on_headers_complete(self) -> None:
        status = self.parser.get_status_code()
        if status >= 200:  # an interim answer (100 Continue) is not the answer
            self.status = status
            self._wake()

    def on_body(self, body: bytes) -> None:
        self.chunks.append(body)
        self.buffered += len(body)
        if self.streaming and self.buffered > HIGH_WATER and not self.paused and self.transport is not None:
            self.paused = True
            self.transport.pause_reading()
        self._wake()

    def on_message_complete(self) -> None:
        if not self.status:
            return
        self.complete = True
        keep = self.parser.should_keep_alive()
        if self.released:
            if self.timer is not None:
                self.timer.cancel()
            self.pool.put(self) if keep else self.abort()
        elif not keep:
            self.closed = True  # answered, and the upstream closes it: never back to the pool
        self._wake()


class Pool:
    """Keep-alive connections to one upstream (scheme, host, port)."""

    def __init__(self, host: str, port: int, tls: ssl.SSLContext | None) -> None:
        self.loop = asyncio.get_running_loop()
        self.host, self.port, self.tls = host, port, tls
        self.idle: list[Connection] = []
        self.open: set[Connection] = set()

    async def get(self, connect_timeout_s: float) -> Connection:
        """An idle connection (the most recently used), or a new one (``OSError``/``TimeoutError`` if not)."""
        now = self.loop.time()
        while self.idle:
            conn = self.idle.pop()
            if not conn.closed and now - conn.idle_since < KEEPALIVE_S:
                return conn
            conn.abort()
        async with asyncio.timeout(connect_timeout_s):
            _, conn = await self.loop.create_connection(
                lambda: Connection(self),
                self.host,
                self.port,
                ssl=self.tls,
                server_hostname=self.host if self.tls else None,
            )
        self.open.add(conn)
        return conn

    def put(self, conn: Connection) -> None:
        if conn.closed:
            conn.abort()
            return
        conn.idle_since = self.loop.time()
        self.idle.append(conn)

    def forget(self, conn: Connection) -> None:
        self.open.discard(conn)

    def close(self) -> None:
        self.idle.clear()
        for conn in list(self.open):
            conn.abort()


class Pools:
    """The connection pools of one owner (the gateway, the shadow runner); ``await close()`` once at shutdown."""

    def __init__(self) -> None:
        self.pools: dict[tuple[str, str, int], Pool] = {}
        self._tls: ssl.SSLContext | None = None

    def get(self, scheme: str, host: str, port: int) -> Pool:
        key = (scheme, host, port)
        pool = self.pools.get(key)
        if pool is None:
            if scheme == "https" and self._tls is None:
                self._tls = ssl.create_default_context()
            pool = self.pools[key] = Pool(host, port, self._tls if scheme == "https" else None)
        return pool

    async def close(self) -> None:
        pools, self.pools = list(self.pools.values()), {}
        for pool in pools:
            pool.close()


class H1Client:
    """Pass-through to any OpenAI-compatible server on ``Pools``. A call ends by its upstream's ``timeout_s``
    (connecting, sending and the whole answer; one timer), so a caller needs no timer of its own around it."""

    bounds_time = True

    def __init__(
        self,
        name: str,
        conf: Upstream,
        api_key: str | None,
        pools: Pools,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        self.name = name
        self.model = conf.model
        self.timeout_s = conf.timeout_s
        self.connect_timeout_s = conf.connect_timeout_s
        url = urlsplit((conf.base_url or "").rstrip("/"))
        scheme = url.scheme or "http"
        port = url.port or (443 if scheme == "https" else 80)
        host = url.hostname or "localhost"
        self.pools, self.where = pools, (scheme, host, port)
        authority = host if url.port is None else f"{host}:{url.port}"
        fields = {"host": authority, "content-type": JSON, "accept-encoding": "identity", "user-agent": "turnout"}
        fields.update({k.lower(): v for k, v in (headers or {}).items()})
        if api_key:
            fields["authorization"] = f"Bearer {api_key}"
        lines = "".join(f"{k}: {v}\r\n" for k, v in fields.items())
        self.heads = {
            endpoint: f"POST {url.path}{path} HTTP/1.1\r\n{lines}".encode("latin-1") for endpoint, path in PATHS.items()
        }

    async def call(
        self, endpoint: str, body: dict[str, Any], *, stream: bool, request_id: str, timeout_s: float | None = None
    ) -> Reply:
        payload = orjson.dumps({**body, "model": self.model})
        head = self.heads[endpoint] + b"x-turnout-correlation-id: %s\r\ncontent-length: %d\r\n\r\n" % (
            request_id.encode("latin-1"),
            len(payload),
        )
        total = self.timeout_s if timeout_s is None or timeout_s > self.timeout_s - SAME_TIMEOUT_S else timeout_s
        pool = self.pools.get(*self.where)
        deadline = pool.loop.time() + total
        conn = await self._connect(pool, deadline, total)
        conn.send(head, payload, deadline)
        try:
            await conn.head()
        except Broken as exc:
            raise UpstreamFailure(f"upstream {self.name!r} is unreachable ({exc})") from None
        except TimeoutError:
            raise UpstreamTimeout(f"upstream {self.name!r} timed out after {total:.3g}s") from None
        except BaseException:
            conn.abort()  # cancelled (the client went away): the upstream sees the connection close
            raise
        return await self._answer(conn, total)

    async def _connect(self, pool: Pool, deadline: float, total: float) -> Connection:
        left = deadline - pool.loop.time()
        try:
            return await pool.get(min(left, self.connect_timeout_s))
        except TimeoutError:
            if left <= self.connect_timeout_s:
                raise UpstreamTimeout(f"upstream {self.name!r} timed out after {total:.3g}s") from None
            raise UpstreamUnreachable(f"upstream {self.name!r} did not accept a connection in time") from None
        except OSError as exc:
            raise UpstreamUnreachable(f"upstream {self.name!r} is unreachable ({type(exc).__name__})") from None

    async def _answer(self, conn: Connection, total: float) -> Reply:
        content_type = conn.headers.get(b"content-type", b"").decode("latin-1") or JSON
        retry_after = conn.headers.get(b"retry-after")
        if conn.status == 200 and content_type.startswith(SSE):
            conn.streaming = True
            return Reply(200, SSE, stream=conn.stream(self.name), release=conn.release, close=conn.abort)
        try:
            data = await conn.body()
        except TimeoutError:
            raise UpstreamTimeout(f"upstream {self.name!r} timed out after {total:.3g}s") from None
        except Broken as exc:
            raise UpstreamFailure(f"upstream {self.name!r} broke off its answer ({exc})") from None
        except BaseException:
            conn.abort()
            raise
        conn.release()
        return Reply(
            conn.status, content_type, data, retry_after=retry_after.decode("latin-1") if retry_after else None
        )
