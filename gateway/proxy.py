"""The data path, top to bottom, for every OpenAI endpoint: parse, decide, call, relay, finish.

Each endpoint is a raw ASGI app (no per-request Request/Response objects on the hot path). A client
disconnect cancels the upstream call at every phase; an upstream cut mid-stream reaches the client as an
error event and never as a fabricated ``[DONE]``. The pieces: ``decide`` (the request's ``Facts``),
``retry.Attempts`` (the call), ``stream.relay`` (the relay), ``ClientSide`` (what the client was sent; its
``last`` hands the interaction, built from the call's ``Outcome``, to the sink before the last bytes go out).

Usage: ``Route("/v1/chat/completions", endpoint=Endpoint("chat.completions"), methods=["POST"])``.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable
from typing import Any

import orjson

from collectors.record import Interaction, new_id
from gateway.auth import Caller
from gateway.body_limits import ClientGone, read_body
from gateway.client_side import ClientSide
from gateway.decide import Facts, decide
from gateway.errors import (
    BadRequest,
    GatewayError,
    Overloaded,
    RateLimited,
    RequestTimeout,
    StreamBroken,
    UpstreamFailure,
    UpstreamTimeout,
    send_error,
)
from gateway.generation import Generation
from gateway.limits import check_brackets, check_shape
from gateway.outcome import Outcome
from gateway.pacing import Beats
from gateway.responses_stream import ResponsesTee
from gateway.retry import Attempts
from gateway.runtime import Gateway
from gateway.server_protocol import DEPARTURES
from gateway.stream import SSETee, relay
from gateway.upstream import Reply

log = logging.getLogger(__name__)

Scope = dict[str, Any]
REQUIRED = {"chat.completions": "messages", "completions": "prompt", "embeddings": "input"}
NULLABLE = {"prompt"}  # OpenAI's schema: present but null means the default prompt
JSON_HEADERS = [(b"content-type", b"application/json")]


def _check_n(body: dict[str, Any], max_n: int) -> None:
    """``n`` would multiply the upstream's work (and every shadow's): at most ``server.max_n``."""
    n = body.get("n")
    if n is not None and (isinstance(n, bool) or not isinstance(n, int) or not 1 <= n <= max_n):
        raise BadRequest(f"'n' must be an integer from 1 to {max_n} (server.max_n)", param="n")


def parse_body(raw: bytes, endpoint: str) -> dict[str, Any]:
    if not raw.strip():
        raise BadRequest("request body is empty; expected a JSON object")
    check_brackets(raw)
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
    field = REQUIRED.get(endpoint)  # the Responses API may take its input from previous_response_id or a prompt
    value = body.get(field) if field else None
    if field and (field not in body or (value is None and field not in NULLABLE)):
        raise BadRequest(f"'{field}' is required", param=field)
    if endpoint == "chat.completions":
        if not isinstance(value, list) or not value:
            raise BadRequest("'messages' must be a non-empty array", param="messages")
        if not all(isinstance(m, dict) for m in value):
            raise BadRequest("each of 'messages' must be an object", param="messages")
    stream = body.get("stream", False)
    if not isinstance(stream, bool) and stream is not None:
        raise BadRequest("'stream' must be a boolean", param="stream")
    options = body.get("stream_options")
    if options is not None and not isinstance(options, dict):
        raise BadRequest("'stream_options' must be an object", param="stream_options")
    return body


def _user(headers: dict[bytes, bytes], body: dict[str, Any]) -> str | None:
    """The user a request names (``x-turnout-user``, else the body's ``user``): with no client auth, the caller."""
    user = headers.get(b"x-turnout-user")
    if user:
        return user.decode("latin-1")
    return body["user"] if isinstance(body.get("user"), str) else None


def _response_headers(facts: Facts) -> list[tuple[bytes, bytes]]:
    headers = [
        (b"x-turnout-request-id", facts.request_id.encode()),
        (b"x-turnout-correlation-id", facts.correlation_id.encode()),  # what the upstream saw (not a feedback key)
        (b"x-turnout-route", facts.route.encode()),
        (b"x-turnout-variant", facts.variant.encode()),
    ]
    if facts.override_ignored:
        headers.append((b"x-turnout-variant-ignored", b"the admin key is required to force a variant"))
    return headers


async def _depart_on_disconnect(receive: Any, departure: _Departure) -> None:
    """Run ``departure`` at the ``http.disconnect`` (under a server without the departure hook). ASGI servers
    also answer ``http.disconnect`` once the response is complete, so this task ends by itself: it is never
    cancelled (a cancelled task keeps its exception, whose traceback is a reference cycle: garbage for the
    collector)."""
    while (await receive())["type"] != "http.disconnect":
        pass
    departure()


class _Departure:
    """The departure hook of one call (``server_protocol.DEPARTURES``): cancels the call's task if the client
    goes away before its answer is finished."""

    __slots__ = ("call", "cancelled", "task")

    def __init__(self, call: Call, task: asyncio.Task[Any]) -> None:
        self.call, self.task, self.cancelled = call, task, False

    def __call__(self) -> None:
        if not self.call.client.finished:
            self.cancelled = True
            self.task.cancel()


def _admit(gw: Gateway, gen: Generation, client: str) -> None:
    """Raise ``RateLimited`` when the named client is over its ``rpm`` on this replica."""
    named = gen.config.auth.clients.get(client)
    if named is not None and named.rpm is not None:
        wait = gw.limiter.admit(client, named.rpm)
        if wait is not None:
            raise RateLimited(f"client {client!r} is over its limit of {named.rpm} requests per minute", wait_s=wait)


def _refused(gw: Gateway, gen: Generation, client: str, body: dict[str, Any] | None, exc: GatewayError) -> None:
    """Count a named client's refused request (outside its routes, over its rpm) under the route it named."""
    route = body.get("model") if body is not None else None
    if isinstance(route, str) and route in gen.config.routes:
        gw.metrics.client_refused(client, route, exc.status)


class Endpoint:
    """Raw ASGI app for one OpenAI endpoint kind."""

    def __init__(self, endpoint: str) -> None:
        self.endpoint = endpoint

    async def __call__(self, scope: Scope, receive: Any, send: Any) -> None:
        gw: Gateway = scope["state"]["gateway"]
        gen = gw.generation
        headers = dict(scope["headers"])
        caller: Caller | None = None
        body: dict[str, Any] | None = None
        try:
            caller = gen.keys.client(headers.get(b"authorization"))
            with gw.large_bodies.slot(gen.config.server.max_large_bodies) as slot:
                with gw.body_deadlines.watch(gen.config.server.body_timeout_s):
                    raw = await read_body(receive, gen.max_body_bytes, headers.get(b"content-length"), slot)
                body = parse_body(raw, self.endpoint)
            _check_n(body, gen.config.server.max_n)
            facts = decide(
                gen.routes, gw.rng, body, headers, caller, len(raw),
                request_id=new_id(), ts=time.time(), t0=time.perf_counter(),
                caller_hash=gen.keys.caller_hash(caller, _user(headers, body)), correlation_id=new_id(),
            )  # fmt: skip
            if caller.client is not None:
                _admit(gw, gen, caller.client)
        except GatewayError as exc:
            if caller is not None and caller.client is not None:
                _refused(gw, gen, caller.client, body, exc)
            await send_error(send, exc)
            return
        except ClientGone:
            return
        except TimeoutError:
            slow = RequestTimeout(f"the request body did not arrive within {gen.config.server.body_timeout_s:g}s")
            await send_error(send, slow, [(b"connection", b"close")])
            return
        # the call runs in this task, cancelled if the client goes away: by the server protocol's departure hook,
        # or (under another server) by a watcher task awaiting the http.disconnect
        this = asyncio.current_task()
        assert this is not None
        call = Call(gw, gen, self.endpoint, facts, send)
        departure = _Departure(call, this)
        departures = scope.get("extensions", {}).get(DEPARTURES)
        if departures is None:  # another ASGI server, without the hook: a task waits for the http.disconnect
            _watcher = this.get_loop().create_task(_depart_on_disconnect(receive, departure))  # held while we run
        else:
            departures.append(departure)
        try:
            await call.run()
        except asyncio.CancelledError:
            if not departure.cancelled or this.uncancel() > 0:
                raise  # cancelled from elsewhere (server shutdown), not by the client leaving
        finally:
            if departures is not None:
                departures.remove(departure)


class Call:
    """One primary call: dispatch, relay, and exactly one interaction whatever happens (``client.last`` and
    ``client.finish`` hand it on; ``_finish`` builds it)."""

    def __init__(self, gw: Gateway, gen: Generation, endpoint: str, facts: Facts, send: Any) -> None:
        self.gw, self.gen, self.endpoint, self.facts = gw, gen, endpoint, facts
        self.outcome = Outcome(upstream=facts.variant)
        self.answered: asyncio.Future[Interaction] | None = None  # shadows compare against it
        self.shutting = False
        self.task: asyncio.Task[None] | None = None
        candidates, deadline_s = gen.plans[facts.route, facts.variant]
        self.attempts = Attempts(
            gen, candidates=candidates, deadline=time.monotonic() + deadline_s, guard=gw.resilience
        )
        self.client = ClientSide(send, _response_headers(facts), finish=self._finish, attempts=self.attempts)

    async def run(self) -> None:
        facts, outcome = self.facts, self.outcome
        stream = facts.stream and self.endpoint != "embeddings"
        body = facts.body
        withhold_usage = False
        if stream and self.endpoint != "responses" and not (body.get("stream_options") or {}).get("include_usage"):
            body = {**body, "stream_options": {**(body.get("stream_options") or {}), "include_usage": True}}
            withhold_usage = True
        self.answered = self.gw.shadows.mirror(self.gen, self.endpoint, facts)  # they run once this call yields
        drain = self.gw.resilience.drain
        self.task = asyncio.current_task()
        drain.calls.add(self)
        try:
            try:
                outcome.upstream, reply = await self._reply(body, stream)
            except UpstreamFailure as exc:
                kind = "timeout" if isinstance(exc, UpstreamTimeout) else "connect"
                self.gw.metrics.upstream_errors.labels(outcome.upstream, kind).inc()
                await self._fail(exc, "timeout" if kind == "timeout" else "upstream_error")
                return
            if reply.stream is not None:
                await self._relay_stream(reply, withhold_usage)
            else:
                await self._relay_whole(reply)
        except asyncio.CancelledError:
            if not self.shutting:
                outcome.outcome = "client_cancelled"
                outcome.status = outcome.status or 499
                outcome.error = outcome.error or "client disconnected"
                raise
            stopped = Overloaded("the gateway shut down before the answer was complete", code="shutting_down")
            await self._fail(stopped, "shutdown_aborted")
        finally:
            drain.calls.discard(self)
            self.client.finish()

    async def _reply(self, body: dict[str, Any], stream: bool) -> tuple[str, Reply]:
        """Run the attempts; a stream waiting longer than ``heartbeat_s`` gets its headers and SSE comments."""
        call = self.attempts.run(self.endpoint, body, stream=stream, request_id=self.facts.correlation_id)
        heartbeat_s = self.gen.config.server.heartbeat_s
        if not (stream and heartbeat_s):
            return await call
        beats = Beats(self._heartbeat, heartbeat_s)  # no task and asyncio.wait around every call (~15 µs)
        try:
            return await call
        finally:
            await beats.stop()

    async def _heartbeat(self) -> None:
        self.outcome.status = 200
        await self.client.heartbeat()

    def abort_for_shutdown(self) -> None:
        """The drain bound is reached: end this call now with a terminal error (``shutdown_aborted``)."""
        self.shutting = True
        if self.task is not None:
            self.task.cancel()

    async def _fail(self, exc: GatewayError, outcome: str) -> None:
        committed = self.client.committed
        self.outcome.status = 200 if committed else exc.status
        self.outcome.outcome, self.outcome.error = outcome, exc.message
        await self.client.error(exc)

    async def _relay_whole(self, reply: Reply) -> None:
        upstream, errors = self.outcome.upstream, self.gw.metrics.upstream_errors
        if self.client.committed:  # heartbeats already went out as a stream: only an event can follow
            await self._fail(
                UpstreamFailure(f"upstream {upstream!r} answered {reply.status} without a stream"), "upstream_error"
            )
            return
        if reply.status >= 500:
            errors.labels(upstream, "status").inc()
            tries = self.attempts.calls
            after = f" (after {tries} attempts)" if tries > 1 else ""
            await self._fail(UpstreamFailure(f"upstream {upstream!r} answered {reply.status}{after}"), "upstream_error")
            return
        data = self.gen.scrub(reply.body)
        try:
            parsed = orjson.loads(data)
        except orjson.JSONDecodeError:
            parsed = None
        if not isinstance(parsed, dict):
            errors.labels(upstream, "protocol").inc()
            message = f"upstream {upstream!r} answered {reply.status} with a body that is not a JSON object"
            await self._fail(UpstreamFailure(message), "upstream_error")
            return
        self.outcome.status = reply.status
        if reply.status >= 400:
            self.outcome.outcome, self.outcome.error = "upstream_error", f"upstream answered {reply.status}"
            errors.labels(upstream, "status").inc()
        else:
            self.outcome.answered(parsed)
        headers = list(JSON_HEADERS)
        if reply.retry_after and reply.status == 429:
            headers.append((b"retry-after", reply.retry_after.encode("latin-1")))
        await self.client.whole(reply.status, data, headers)

    async def _relay_stream(self, reply: Reply, withhold_usage: bool) -> None:
        text = self.facts.capture or bool(self.facts.shadows)  # who reads the answer; metrics need only usage
        if self.endpoint == "responses":
            tee: ResponsesTee | SSETee = ResponsesTee(text=text)
        else:
            tee = SSETee(withhold_usage=withhold_usage, text=text)
        server, outcome = self.gen.config.server, self.outcome
        outcome.status = 200
        timeout_s = self.gen.config.upstreams[outcome.upstream].timeout_s
        try:
            failure, last = await relay(
                reply,
                self.client,
                tee,
                heartbeat_s=server.heartbeat_s,
                idle_s=server.stream_idle_s,
                timeout_s=timeout_s,
                secrets=self.gen.secrets,
            )
        finally:
            outcome.first_token_at = tee.first_token_at
            outcome.response = tee.assemble() if text else None
            outcome.usage = tee.usage if isinstance(tee.usage, dict) else None
            outcome.response_id = tee.meta.get("id")
        if failure is not None:
            outcome.outcome, outcome.error = "upstream_error", failure
            self.gw.metrics.upstream_errors.labels(outcome.upstream, "protocol").inc()
            await self.client.error(StreamBroken(failure))
            return
        await self.client.last(last)

    def _finish(self) -> Awaitable[None] | None:
        """Hand the one interaction of this call to the sink and to the shadows waiting for it; returns what to
        wait for until it is journaled (a large record is encoded off the loop), if anything."""
        extra = {"attempts": self.attempts.records, "unit": self.facts.unit}
        self.outcome.price = self.gen.prices.get(self.outcome.upstream)
        it = self.outcome.primary(self.facts, self.endpoint, now=time.perf_counter(), extra=extra)
        journaled = self.gw.sink.finish(it)
        if self.answered is not None and not self.answered.done():
            self.answered.set_result(it)
        return journaled
