"""The data path, top to bottom, for every OpenAI endpoint: parse, decide, call, relay, finish.

Each endpoint is a raw ASGI app (no per-request Request/Response objects on the hot path). A client
disconnect cancels the upstream call at every phase; an upstream cut mid-stream reaches the client as an
error event and never as a fabricated ``[DONE]``. The interaction is handed to the sink before the
client's last bytes go out.

Usage: ``Route("/v1/chat/completions", endpoint=Endpoint("chat.completions"), methods=["POST"])``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable
from typing import Any

import aiohttp
import orjson

from collectors.record import Interaction, new_id
from gateway.decide import Facts, decide
from gateway.errors import (
    BadRequest,
    GatewayError,
    Overloaded,
    PayloadTooLarge,
    RequestTimeout,
    StreamBroken,
    UpstreamFailure,
    UpstreamTimeout,
    error_event,
    send_error,
)
from gateway.generation import Generation
from gateway.limits import check_shape
from gateway.pacing import HEARTBEAT, Pacer, StreamIdle
from gateway.retry import Attempts, plan
from gateway.runtime import Gateway
from gateway.stream import SSETee, StreamProtocolError
from gateway.upstream import Reply

log = logging.getLogger(__name__)

Scope = dict[str, Any]
REQUIRED = {"chat.completions": "messages", "completions": "prompt", "embeddings": "input"}
NULLABLE = {"prompt"}  # OpenAI's schema: present but null means the default prompt
JSON_HEADERS = [(b"content-type", b"application/json")]
SSE_HEADERS = [(b"content-type", b"text/event-stream"), (b"cache-control", b"no-cache"), (b"x-accel-buffering", b"no")]


class ClientGone(Exception):
    """The client disconnected before its request body was complete."""


async def read_body(receive: Any, limit: int, declared: bytes | None) -> bytes:
    """The whole request body; 413 as soon as it passes ``limit`` (declared or counted)."""
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise PayloadTooLarge(f"request body is larger than the {limit} byte limit (server.max_body_mb)")
    chunks = []
    size = 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise ClientGone
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            raise PayloadTooLarge(f"request body is larger than the {limit} byte limit (server.max_body_mb)")
        chunks.append(chunk)
        if not message.get("more_body", False):
            return b"".join(chunks)


def parse_body(raw: bytes, endpoint: str) -> dict[str, Any]:
    if not raw.strip():
        raise BadRequest("request body is empty; expected a JSON object")
    try:
        body = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise BadRequest(f"request body is not valid JSON: {exc.msg} at position {exc.pos}") from None
    if not isinstance(body, dict):
        raise BadRequest(f"request body must be a JSON object, got {type(body).__name__}")
    check_shape(body, raw)
    model = body.get("model")
    if model is None:
        raise BadRequest("'model' is required: the name of a route (GET /v1/models lists them)", param="model")
    if not isinstance(model, str):
        raise BadRequest(f"'model' must be a string, got {type(model).__name__}", param="model")
    if not model:
        raise BadRequest("'model' is empty: name a route (GET /v1/models lists them)", param="model")
    field = REQUIRED[endpoint]
    value = body.get(field)
    if field not in body or (value is None and field not in NULLABLE):
        raise BadRequest(f"'{field}' is required", param=field)
    if endpoint == "chat.completions" and (not isinstance(value, list) or not value):
        raise BadRequest("'messages' must be a non-empty array", param="messages")
    if endpoint == "chat.completions" and not all(isinstance(m, dict) for m in value):
        raise BadRequest("each of 'messages' must be an object", param="messages")
    stream = body.get("stream", False)
    if not isinstance(stream, bool) and stream is not None:
        raise BadRequest("'stream' must be a boolean", param="stream")
    return body


def _response_headers(facts: Facts) -> list[tuple[bytes, bytes]]:
    headers = [
        (b"x-turnout-request-id", facts.request_id.encode()),
        (b"x-turnout-route", facts.route.encode()),
        (b"x-turnout-variant", facts.variant.encode()),
    ]
    if facts.override_ignored:
        headers.append((b"x-turnout-variant-ignored", b"the admin key is required to force a variant"))
    return headers


async def _send_whole(send: Any, status: int, body: bytes, headers: list[tuple[bytes, bytes]]) -> None:
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [*headers, (b"content-length", str(len(body)).encode())],
        }
    )
    await send({"type": "http.response.body", "body": body})


async def _cancel_on_disconnect(receive: Any, call: Call, task: asyncio.Task[Any]) -> None:
    """Cancel ``task`` if the client goes away before ``call`` is finished. uvicorn's ``receive`` also answers
    ``http.disconnect`` once the response is complete, so this task ends by itself: it is never cancelled
    (a cancelled task keeps its exception, whose traceback is a reference cycle: garbage for the collector)."""
    while (await receive())["type"] != "http.disconnect":
        pass
    if not call.finished:
        task.cancel()


class Endpoint:
    """Raw ASGI app for one OpenAI endpoint kind."""

    def __init__(self, endpoint: str) -> None:
        self.endpoint = endpoint

    async def __call__(self, scope: Scope, receive: Any, send: Any) -> None:
        gw: Gateway = scope["state"]["gateway"]
        gen = gw.generation
        headers = dict(scope["headers"])
        try:
            caller = gen.keys.client(headers.get(b"authorization"))
            limit = int(gen.config.server.max_body_mb * 1024 * 1024)
            async with asyncio.timeout(gen.config.server.body_timeout_s):
                raw = await read_body(receive, limit, headers.get(b"content-length"))
            body = parse_body(raw, self.endpoint)
            facts = decide(
                gen.config, gw.rng, body, headers, caller, len(raw),
                request_id=new_id(), ts=time.time(), t0=time.perf_counter(),
            )  # fmt: skip
        except GatewayError as exc:
            await send_error(send, exc)
            return
        except ClientGone:
            return
        except TimeoutError:
            slow = RequestTimeout(f"the request body did not arrive within {gen.config.server.body_timeout_s:g}s")
            await send_error(send, slow, [(b"connection", b"close")])
            return
        # the call runs in this task; one watcher task cancels it if the client goes away
        this = asyncio.current_task()
        assert this is not None
        call = Call(gw, gen, self.endpoint, facts, send)
        watching = asyncio.ensure_future(_cancel_on_disconnect(receive, call, this))
        try:
            await call.run()
        except asyncio.CancelledError:
            if not watching.done() or this.uncancel() > 0:
                raise  # cancelled from elsewhere (server shutdown), not by the client leaving


class Call:
    """One primary call: dispatch, relay, and exactly one interaction whatever happens."""

    def __init__(self, gw: Gateway, gen: Generation, endpoint: str, facts: Facts, send: Any) -> None:
        self.gw, self.gen, self.endpoint, self.facts, self.send = gw, gen, endpoint, facts, send
        self.headers = _response_headers(facts)
        self.status = 0
        self.response: dict[str, Any] | None = None
        self.usage: dict[str, Any] | None = None
        self.response_id: str | None = None
        self.error: str | None = None
        self.outcome = "ok"
        self.first_token_at: float | None = None
        self.finished = False
        self.journaled: Awaitable[None] | None = None  # a large record still being encoded off the loop
        self.answered: asyncio.Future[Interaction] | None = None  # shadows compare against it
        self.upstream = facts.variant  # the one that answered: the variant, or a fallback
        self.shutting = False
        self.task: asyncio.Task[None] | None = None
        candidates, deadline_s = plan(gen.config, facts.route, facts.variant)
        self.attempts = Attempts(
            gen,
            candidates=candidates,
            deadline=time.monotonic() + deadline_s,
            guard=gw.resilience,
        )

    @property
    def committed(self) -> bool:
        """A byte went to the client: no more retries, and errors are events."""
        return self.attempts.committed

    async def run(self) -> None:
        facts = self.facts
        stream = facts.stream and self.endpoint != "embeddings"
        body = facts.body
        withhold_usage = False
        if stream and not (body.get("stream_options") or {}).get("include_usage"):
            body = {**body, "stream_options": {**(body.get("stream_options") or {}), "include_usage": True}}
            withhold_usage = True
        self.answered = self.gw.shadows.mirror(self.gen, self.endpoint, facts)  # they run once this call yields
        drain = self.gw.resilience.drain
        self.task = asyncio.current_task()
        drain.calls.add(self)
        try:
            try:
                self.upstream, reply = await self._reply(body, stream)
            except UpstreamFailure as exc:
                kind = "timeout" if isinstance(exc, UpstreamTimeout) else "connect"
                self.gw.metrics.upstream_errors.labels(self.upstream, kind).inc()
                await self._fail(exc, "timeout" if kind == "timeout" else "upstream_error")
                return
            if reply.stream is not None:
                await self._relay_stream(reply, withhold_usage)
            else:
                await self._relay_whole(reply)
        except asyncio.CancelledError:
            if not self.shutting:
                self.outcome = "client_cancelled"
                self.status = self.status or 499
                self.error = self.error or "client disconnected"
                raise
            stopped = Overloaded("the gateway shut down before the answer was complete", code="shutting_down")
            await self._fail(stopped, "shutdown_aborted")
        finally:
            drain.calls.discard(self)
            self._finish()

    async def _reply(self, body: dict[str, Any], stream: bool) -> tuple[str, Reply]:
        """Run the attempts; a stream waiting longer than ``heartbeat_s`` gets its headers and SSE comments."""
        call = self.attempts.run(self.endpoint, body, stream=stream, request_id=self.facts.request_id)
        heartbeat_s = self.gen.config.server.heartbeat_s
        if not (stream and heartbeat_s):
            return await call
        task = asyncio.ensure_future(call)
        try:
            while not (await asyncio.wait((task,), timeout=heartbeat_s))[0]:
                await self._commit()
                await self.send({"type": "http.response.body", "body": HEARTBEAT, "more_body": True})
            return task.result()
        finally:
            if not task.done():
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task

    async def _commit(self) -> None:
        """Send the stream's headers (once); from here on no retry, and errors are events."""
        if not self.committed:
            self.attempts.committed = True
            self.status = 200
            await self.send({"type": "http.response.start", "status": 200, "headers": [*SSE_HEADERS, *self.headers]})

    def abort_for_shutdown(self) -> None:
        """The drain bound is reached: end this call now with a terminal error (``shutdown_aborted``)."""
        self.shutting = True
        if self.task is not None:
            self.task.cancel()

    async def _fail(self, exc: GatewayError, outcome: str) -> None:
        self.status, self.outcome, self.error = exc.status, outcome, exc.message
        if self.committed:
            self.status = 200
            await self._finished()
            await self.send({"type": "http.response.body", "body": error_event(exc), "more_body": False})
            return
        await self._finished()
        await send_error(self.send, exc, self.headers)

    async def _relay_whole(self, reply: Reply) -> None:
        if self.committed:  # heartbeats already went out as a stream: only an event can follow
            message = f"upstream {self.upstream!r} answered {reply.status} without a stream"
            await self._fail(UpstreamFailure(message), "upstream_error")
            return
        if reply.status >= 500:
            self.gw.metrics.upstream_errors.labels(self.upstream, "status").inc()
            tries = self.attempts.calls
            after = f" (after {tries} attempts)" if tries > 1 else ""
            message = f"upstream {self.upstream!r} answered {reply.status}{after}"
            await self._fail(UpstreamFailure(message), "upstream_error")
            return
        data = self.gen.scrub(reply.body)
        try:
            parsed = orjson.loads(data)
        except orjson.JSONDecodeError:
            parsed = None
        if not isinstance(parsed, dict):
            self.gw.metrics.upstream_errors.labels(self.upstream, "protocol").inc()
            await self._fail(
                UpstreamFailure(
                    f"upstream {self.upstream!r} answered {reply.status} with a body that is not a JSON object"
                ),
                "upstream_error",
            )
            return
        self.status = reply.status
        if reply.status >= 400:
            self.outcome = "upstream_error"
            self.error = f"upstream answered {reply.status}"
            self.gw.metrics.upstream_errors.labels(self.upstream, "status").inc()
        else:
            self.response = parsed
            self.usage = parsed.get("usage")
            self.response_id = parsed.get("id") if isinstance(parsed.get("id"), str) else None
        headers = [*JSON_HEADERS, *self.headers]
        if reply.retry_after and reply.status == 429:
            headers.append((b"retry-after", reply.retry_after.encode("latin-1")))
        await self._finished()
        await _send_whole(self.send, reply.status, data, headers)

    async def _relay_stream(self, reply: Reply, withhold_usage: bool) -> None:
        assert reply.stream is not None
        send = self.send
        tee = SSETee(withhold_usage=withhold_usage)
        await self._commit()
        server = self.gen.config.server
        pacer = Pacer(
            reply.stream,
            heartbeat_s=server.heartbeat_s,
            idle_s=server.stream_idle_s,
            waiting=lambda: tee.first_token_at is None,
        )
        failure: str | None = None
        out = b""
        try:
            while (data := await pacer.next()) is not None:
                if data is HEARTBEAT:
                    await send({"type": "http.response.body", "body": data, "more_body": True})
                    continue
                out = tee.feed(data)
                if tee.done:
                    break
                if out:
                    await send({"type": "http.response.body", "body": out, "more_body": True})
            else:
                failure = "upstream closed the stream without [DONE]"
        except StreamProtocolError as exc:
            failure = str(exc)
        except StreamIdle:
            failure = f"upstream sent nothing for {server.stream_idle_s:g}s"
        except (aiohttp.ClientError, UpstreamFailure) as exc:
            failure = f"upstream broke off the stream ({type(exc).__name__})"
        except TimeoutError:
            failure = f"upstream timed out after {self.gen.config.upstreams[self.upstream].timeout_s:g}s"
        finally:
            pacer.close()
            (reply.release if tee.done else reply.close)()
            self.first_token_at = tee.first_token_at
            self.response = tee.assemble()
            self.usage = tee.usage
            self.response_id = tee.meta.get("id")
        if tee.error is not None and failure is None:
            failure = "upstream sent an error event"
        if failure is not None:
            self.outcome, self.error = "upstream_error", failure
            self.gw.metrics.upstream_errors.labels(self.upstream, "protocol").inc()
            await self._finished()
            await send({"type": "http.response.body", "body": error_event(StreamBroken(failure)), "more_body": False})
            return
        await self._finished()
        await send({"type": "http.response.body", "body": out, "more_body": False})

    async def _finished(self) -> None:
        """``_finish``, and wait until the interaction is journaled (before the client's last bytes)."""
        self._finish()
        if self.journaled is not None:
            await asyncio.shield(self.journaled)

    def _finish(self) -> None:
        """Hand the one interaction of this call to the sink (idempotent)."""
        if self.finished:
            return
        self.finished = True
        facts = self.facts
        now = time.perf_counter()
        it = Interaction(
            request_id=facts.request_id,
            ts=facts.ts,
            route=facts.route,
            experiment=facts.experiment,
            variant=facts.variant,
            role="primary",
            parent_id=None,
            upstream=self.upstream,
            endpoint=self.endpoint,
            request=facts.body,
            response=self.response,
            status=self.status,
            outcome=self.outcome,
            latency_ms=(now - facts.t0) * 1000.0,
            ttft_ms=None if self.first_token_at is None else (self.first_token_at - facts.t0) * 1000.0,
            usage=self.usage if isinstance(self.usage, dict) else None,
            error=self.error,
            stream=facts.stream,
            capture=facts.capture,
            response_id=self.response_id,
            extra={"attempts": self.attempts.records, "unit": facts.unit},
        )
        self.journaled = self.gw.sink.finish(it)
        if self.answered is not None and not self.answered.done():
            self.answered.set_result(it)
