"""Shadow mirroring: bounded fire-and-forget calls to candidate upstreams, compared with the primary.

A shadow lives in its own world (RELIABILITY rule 2): its own HTTP session and connection pool, its own
timeout (``shadow.timeout_s``), its own in-flight cap per shadow upstream (``shadow.max_in_flight``, so one
slow shadow cannot starve another), and a task set holding strong references, drained for at most
``shadow.drain_s`` on shutdown. Nothing here can delay, fail or change the primary: ``mirror`` only creates
tasks, and each task catches everything it can raise. A shadow is never retried, is always sent whole
(``stream`` removed, so a streamed primary gets a non-streamed shadow), with the model of its own upstream,
that upstream's own key and never the client's, the primary's ``x-turnout-correlation-id`` (never the request
id) and the marker ``x-turnout-shadow: 1``.

Every sampled shadow is counted exactly once in ``turnout_shadow_requests_total``: ``ok``, ``error``,
``timeout``, or ``dropped`` (over the cap, or cut at shutdown). Each call that was made becomes an
``Interaction`` (role ``shadow``, its own id, ``parent_id`` the primary's) scored against the primary's
answer (``collectors.compare``) and handed to the same sink.

Usage (owned by ``Gateway``)::

    runner = ShadowRunner(metrics, sink); await runner.open(config.server.http_client)
    clients = runner.clients(config, secrets)        # per config generation
    answered = runner.mirror(gen, endpoint, facts)   # in Call.run; resolve it with the primary's Interaction
    await runner.close(drain_s)
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import orjson

from collectors.compare import compare
from collectors.cost import Price
from collectors.metrics import Metrics
from collectors.record import Interaction
from collectors.sink import Sink
from gateway.config import Config, Secrets
from gateway.decide import Facts
from gateway.errors import UpstreamFailure, UpstreamTimeout
from gateway.generation import Generation
from gateway.outcome import Outcome
from gateway.upstream import Client, Session, make_client, open_session

log = logging.getLogger(__name__)

MARKER = {"x-turnout-shadow": "1"}
_NOT_MIRRORED = ("stream", "stream_options")
_COUNTED = {"ok": "ok", "timeout": "timeout"}  # an Interaction's outcome -> its shadow outcome (else "error")


@dataclass(slots=True)
class Job:
    shadow: str
    client: Client
    endpoint: str
    facts: Facts
    body: dict[str, Any]
    timeout_s: float
    answered: asyncio.Future[Interaction]
    primary_wait_s: float
    scrub: Callable[[bytes], bytes]  # removes every secret an upstream might echo
    price: Price | None  # the shadow upstream's, for the cost


async def _settled(future: asyncio.Future[Interaction], timeout_s: float) -> None:
    """Wait until ``future`` is done or ``timeout_s`` has passed (``asyncio.wait`` for one future, less its set
    and task bookkeeping: 11 -> 3 µs)."""
    loop = asyncio.get_running_loop()
    waiter: asyncio.Future[None] = loop.create_future()

    def wake(_: object = None) -> None:
        if not waiter.done():
            waiter.set_result(None)

    future.add_done_callback(wake)
    timer = loop.call_later(timeout_s, wake)
    try:
        await waiter
    finally:
        timer.cancel()
        future.remove_done_callback(wake)


class ShadowRunner:
    def __init__(self, metrics: Metrics, sink: Sink) -> None:
        self.metrics = metrics
        self.sink = sink
        self.session: Session | None = None
        self.tasks: set[asyncio.Task[None]] = set()
        self.in_flight: Counter[str] = Counter()
        self.closing = False

    async def open(self, http_client: str) -> None:
        self.session = open_session(http_client)  # its own pools: a shadow never waits for a primary's connection

    def clients(self, config: Config, secrets: Secrets) -> dict[str, Client]:
        """Clients for every upstream some route mirrors to, on the shadow session, with the shadow timeout."""
        assert self.session is not None, "open() the runner first"
        out: dict[str, Client] = {}
        for route_name, route in config.routes.items():
            for shadow in route.shadows:
                self.metrics.shadows_configured(route_name, shadow.upstream)
                if shadow.upstream in out:
                    continue
                conf = config.upstreams[shadow.upstream]
                timeout_s = min(conf.timeout_s, config.shadow.timeout_s)
                conf = conf.model_copy(update={"timeout_s": timeout_s})
                key = secrets.upstream_keys.get(shadow.upstream)
                out[shadow.upstream] = make_client(shadow.upstream, conf, key, self.session, MARKER)
        return out

    def mirror(self, gen: Generation, endpoint: str, facts: Facts) -> asyncio.Future[Interaction] | None:
        """Start this request's shadows; returns the future the primary resolves with its Interaction.

        Called on the request path, so it never raises: a failure here is logged and the primary goes on.
        """
        try:
            return self._mirror(gen, endpoint, facts)
        except Exception:
            log.exception("could not start the shadows of request %s", facts.request_id)
            return None

    def _mirror(self, gen: Generation, endpoint: str, facts: Facts) -> asyncio.Future[Interaction] | None:
        for name in facts.skipped_shadows:
            self.metrics.child(self.metrics.shadow_requests, facts.route, name, "skipped").inc()
        if not facts.shadows:
            return None
        limits = gen.config.shadow
        loop = asyncio.get_running_loop()
        answered: asyncio.Future[Interaction] = loop.create_future()
        body = facts.body  # shared, never changed (a client sends a copy with its own model)
        if "stream" in body or "stream_options" in body:
            body = {k: v for k, v in body.items() if k not in _NOT_MIRRORED}
        primary_wait_s = gen.config.upstreams[facts.variant].timeout_s + limits.timeout_s
        for name in facts.shadows:
            if self.closing or self.in_flight[name] >= limits.max_in_flight:
                self.metrics.child(self.metrics.shadow_requests, facts.route, name, "dropped").inc()
                continue
            client = gen.shadow_clients[name]
            job = Job(
                name, client, endpoint, facts, body, limits.timeout_s, answered, primary_wait_s, gen.scrub,
                gen.prices.get(name),
            )  # fmt: skip
            self.in_flight[name] += 1
            task = loop.create_task(self._run(job), name=f"shadow:{name}")
            self.tasks.add(task)
            task.add_done_callback(self.tasks.discard)
        return answered

    async def _run(self, job: Job) -> None:
        ts, t0 = time.time(), time.perf_counter()
        outcome = "error"
        shadow: Interaction | None = None
        try:
            shadow = await self._call(job, ts, t0)
            outcome = _COUNTED.get(shadow.outcome, "error")
        except asyncio.CancelledError:
            outcome = "dropped"  # cut by the shutdown drain bound
            raise
        except Exception:
            log.exception("shadow %r of request %s failed", job.shadow, job.facts.request_id)
        finally:
            self.in_flight[job.shadow] -= 1
            self.metrics.child(self.metrics.shadow_requests, job.facts.route, job.shadow, outcome).inc()
        await self._finish(job, shadow)

    async def _call(self, job: Job, ts: float, t0: float) -> Interaction:
        result = Outcome(upstream=job.shadow, outcome="upstream_error", price=job.price)
        call = job.client.call(job.endpoint, job.body, stream=False, request_id=job.facts.correlation_id)
        try:
            if job.client.bounds_time:  # it ends by its own timeout, shadow.timeout_s
                reply = await call
            else:
                async with asyncio.timeout(job.timeout_s):
                    reply = await call
        except (UpstreamTimeout, TimeoutError):
            result.status, result.outcome, result.error = 504, "timeout", f"shadow timed out after {job.timeout_s:g}s"
        except UpstreamFailure as exc:
            result.status, result.error = 502, exc.message
        else:
            result.status = reply.status
            if reply.stream is not None:
                reply.close()
                result.error = "shadow answered with a stream to a non-streamed request"
            elif reply.status >= 400:
                result.error = f"shadow answered {reply.status}"
            else:
                try:
                    parsed = orjson.loads(job.scrub(reply.body))
                except orjson.JSONDecodeError:
                    parsed = None
                if isinstance(parsed, dict):
                    result.answered(parsed)
                    result.outcome = "ok"
                else:
                    result.error = "shadow answered with a body that is not a JSON object"
        latency_ms = (time.perf_counter() - t0) * 1000.0
        return result.shadow(job.facts, job.endpoint, job.body, ts=ts, latency_ms=latency_ms)

    async def _finish(self, job: Job, shadow: Interaction | None) -> None:
        """Wait (bounded) for the primary's answer, score the shadow against it, hand it to the sink."""
        if shadow is None:
            return
        try:
            if not job.answered.done():
                await _settled(job.answered, job.primary_wait_s)
            primary = job.answered.result() if job.answered.done() else None
            if primary is not None and primary.outcome == "ok" and shadow.outcome == "ok":
                shadow.extra["comparison"] = compare(primary, shadow)  # ours alone still: no copy (replace: 8 µs)
        except Exception:
            log.exception("comparing shadow %s with its primary failed", shadow.request_id)
        finally:
            try:
                self.sink.finish(shadow)
            except Exception:
                log.exception("sink failed for shadow interaction %s", shadow.request_id)

    async def close(self, drain_s: float) -> None:
        """Take no new shadows, let running ones finish for up to ``drain_s``, cut the rest, close the pool."""
        self.closing = True
        if self.tasks:
            _, pending = await asyncio.wait(list(self.tasks), timeout=drain_s)
            for task in pending:
                task.cancel()
            for task in pending:
                with contextlib.suppress(asyncio.CancelledError):
                    await task
            self.tasks.difference_update(pending)  # their done callbacks may not have run yet
        if self.session is not None:
            await self.session.close()
