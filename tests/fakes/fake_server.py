"""A real HTTP server on 127.0.0.1 in its own thread and event loop, for fake model providers.

Usage::

    class FakeThing(FakeServer):
        def routes(self) -> list[tuple[str, str, Handler]]:
            return [("POST", "/v1/thing", self.answer_thing)]

The loop lives in a daemon thread, so sync clients and async tests running in any loop can call it.
Every request is recorded (`Recorded`) before its handler runs; `aborted` turns true when the client
goes away before the fake finished answering. Behaviour is chosen per request ``model`` (`Behavior`).
"""

from __future__ import annotations

import asyncio
import itertools
import json
import re
import socket
import threading
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, Self

from aiohttp import web

Handler = Callable[[web.Request, "Recorded", "Behavior", int], Awaitable[web.StreamResponse]]

_START_TIMEOUT_S = 5.0
_STOP_TIMEOUT_S = 5.0
_BACKLOG = 4096  # load tests open a thousand connections at once


@dataclass
class Behavior:
    """How a fake answers the requests for one model. Every field is optional."""

    statuses: list[int] = field(default_factory=list)  # one per request, then 200
    retry_after: float | None = None  # Retry-After header on 429/503
    delay_s: float = 0.0  # sleep before the headers
    hang: bool = False  # never answer; wait until the client goes away
    chunks: int | None = None  # stream pieces; default one per word
    chunk_delay_s: float = 0.0
    first_token_delay_s: float = 0.0  # stream: a role-only first chunk (content ""), then this pause before the text
    cut_after: int | None = None  # stream: drop the connection after N chunks; plain: no response at all
    malformed: str | None = None  # "html" | "bad-sse" | "truncated-json"
    response_id: str | None = None  # fixed `id` for every answer
    text: str | None = None  # answer text; default "echo: <last user message>"
    tool_call: dict[str, str] | None = None  # {"name": ..., "arguments": "<json string>"}
    fingerprint: str = "fp_fake"  # the answers' system_fingerprint (a provider updating its model changes it)


@dataclass(eq=False)
class Recorded:
    """One request as the fake received it. `aborted` and `done` change while the answer is sent."""

    path: str
    headers: dict[str, str]
    body: Any
    received_at: float
    aborted: bool = False
    finished_at: float | None = None  # time.monotonic() when answered, cut or aborted
    done: threading.Event = field(default_factory=threading.Event, repr=False)

    def wait_done(self, timeout: float = 5.0) -> Recorded:
        """Block until the fake finished with this request (answered, cut or aborted)."""
        if not self.done.wait(timeout):
            raise TimeoutError(f"request to {self.path} still running after {timeout}s")
        return self


class FakeServer:
    """Base for the fake providers: thread, loop, free port, recording, behaviour per model."""

    url_suffix = ""

    def __init__(self) -> None:
        self._behaviors: dict[str, Behavior] = {}
        self._served: dict[str | None, int] = {}  # requests seen per model (None: default), for statuses
        self._requests: list[Recorded] = []
        self._cond = threading.Condition()
        self.default = Behavior()
        self._ids = itertools.count(1)
        self._closing = False
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name=type(self).__name__, daemon=True)
        self._thread.start()
        self._sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._sock.bind(("127.0.0.1", 0))
        self.port: int = self._sock.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}{self.url_suffix}"
        self._runner: web.AppRunner | None = None
        asyncio.run_coroutine_threadsafe(self._start(), self._loop).result(_START_TIMEOUT_S)

    # -- what subclasses provide -------------------------------------------------------------------

    def routes(self) -> list[tuple[str, str, Handler]]:
        """(method, path, handler) triples; each handler gets the request, its record, behaviour, status."""
        raise NotImplementedError

    # -- public API ----------------------------------------------------------------------------------

    def set(self, model: str, behavior: Behavior) -> None:
        """Use `behavior` for requests whose JSON ``model`` equals `model`; restarts its status sequence."""
        with self._cond:
            self._behaviors[model] = behavior
            self._served.pop(model, None)

    @property
    def default(self) -> Behavior:
        return self._default

    @default.setter
    def default(self, behavior: Behavior) -> None:
        with self._cond:
            self._default = behavior
            self._served.pop(None, None)

    @property
    def requests(self) -> list[Recorded]:
        """A snapshot of the recorded requests, in arrival order."""
        with self._cond:
            return list(self._requests)

    def wait_for(self, n: int, timeout: float = 5.0) -> list[Recorded]:
        """Block until at least `n` requests were recorded; return them. Raise TimeoutError otherwise."""
        with self._cond:
            if not self._cond.wait_for(lambda: len(self._requests) >= n, timeout):
                raise TimeoutError(f"{len(self._requests)} requests recorded, waited {timeout}s for {n}")
            return list(self._requests)

    def next_id(self) -> int:
        return next(self._ids)

    def close(self) -> None:
        """Stop the server and its thread. Requests still running are cancelled (not marked aborted)."""
        if self._closing:
            return
        self._closing = True
        try:
            asyncio.run_coroutine_threadsafe(self._stop(), self._loop).result(_STOP_TIMEOUT_S)
        finally:
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(_STOP_TIMEOUT_S)
            self._loop.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- inside the loop -------------------------------------------------------------------------------

    async def _start(self) -> None:
        app = web.Application(client_max_size=64 * 1024 * 1024)
        for method, path, handler in self.routes():
            app.router.add_route(method, path, self._recording(handler))
        # handler_cancellation: a client going away cancels its handler, which is how `aborted` is seen.
        self._runner = web.AppRunner(app, handler_cancellation=True, shutdown_timeout=0.1, access_log=None)
        await self._runner.setup()
        await web.SockSite(self._runner, self._sock, backlog=_BACKLOG).start()

    async def _stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
        self._sock.close()

    def _recording(self, handler: Handler) -> Callable[[web.Request], Awaitable[web.StreamResponse]]:
        async def endpoint(request: web.Request) -> web.StreamResponse:
            raw = await request.read()
            try:
                body: Any = json.loads(raw)
            except ValueError:
                body = raw
            rec = Recorded(
                path=request.path,
                headers={k.lower(): v for k, v in request.headers.items()},
                body=body,
                received_at=time.monotonic(),
            )
            model = body.get("model") if isinstance(body, dict) else None
            with self._cond:
                behavior = self._behaviors.get(model) if isinstance(model, str) else None
                key = model if behavior is not None else None
                behavior = behavior or self._default
                served = self._served.get(key, 0)
                self._served[key] = served + 1
                self._requests.append(rec)
                self._cond.notify_all()
            status = behavior.statuses[served] if served < len(behavior.statuses) else 200
            try:
                if behavior.hang:
                    await asyncio.Event().wait()
                if behavior.delay_s:
                    await asyncio.sleep(behavior.delay_s)
                if behavior.cut_after is not None and not _wants_stream(body):
                    cut(request)
                    return web.Response()
                return await handler(request, rec, behavior, status)
            except (asyncio.CancelledError, ConnectionError):
                rec.aborted = not self._closing
                raise
            finally:
                rec.finished_at = time.monotonic()
                rec.done.set()

        return endpoint


def _wants_stream(body: Any) -> bool:
    return isinstance(body, dict) and body.get("stream") is True


def cut(request: web.Request) -> None:
    """Drop the connection now, without finishing the response (the peer sees a truncated message)."""
    if request.transport is not None:
        request.transport.abort()


def words(text: str) -> int:
    return len(text.split())


def pieces(text: str, chunks: int | None) -> list[str]:
    """Split `text` for streaming: one piece per word (spaces kept), or `chunks` near-equal pieces."""
    if not text:
        return []
    if chunks is None:
        return re.findall(r"\s*\S+\s*", text) or [text]
    n = max(1, min(chunks, len(text)))
    size, extra = divmod(len(text), n)
    out, start = [], 0
    for i in range(n):
        end = start + size + (1 if i < extra else 0)
        out.append(text[start:end])
        start = end
    return out


def retry_headers(behavior: Behavior, status: int) -> dict[str, str]:
    if behavior.retry_after is not None and status in (429, 503):
        return {"Retry-After": f"{behavior.retry_after:g}"}
    return {}


def json_response(body: dict[str, Any], status: int = 200, headers: dict[str, str] | None = None) -> web.Response:
    return web.Response(status=status, text=json.dumps(body), content_type="application/json", headers=headers)
