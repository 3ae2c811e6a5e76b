"""One retry loop inside one deadline: retries of the chosen upstream, then its fallbacks, before the first byte.

Retried: connect errors and resets before any answer (``UpstreamFailure``), 429 and 5xx answers. Not retried:
other 4xx (passed through), and a timeout, which moves on to the next fallback instead (retrying a slow
upstream only adds load). Waits use full jitter; an upstream's ``Retry-After`` is honoured when it fits in
what is left of the deadline, else that upstream is given up. Every retry of an upstream takes a slot in the
shared ``RetryBudget`` (about 20 % of in-flight requests, never fewer than 3), so a flapping upstream cannot
multiply the load. A retry the budget refuses, or whose back-off would pass the deadline, gives that upstream
up and moves on to the next fallback at once: a fallback's first attempt needs no slot (it is another upstream,
named for this case), its own retries do. SDK retries stay off underneath (``upstream.py``).

Usage::

    attempts = Attempts(gen, candidates=["prod", "backup"], deadline=time.monotonic() + 30, guard=gw.resilience)
    upstream, reply = await attempts.run("chat.completions", body, stream=False, request_id=rid)
    interaction.extra["attempts"] = attempts.log
"""

from __future__ import annotations

import asyncio
import email.utils
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from gateway.errors import UpstreamFailure, UpstreamTimeout, UpstreamUnreachable
from gateway.generation import Generation
from gateway.resilience import Resilience
from gateway.upstream import Reply

log = logging.getLogger(__name__)

BACKOFF_BASE_S = 0.1
BACKOFF_CAP_S = 2.0
MIN_ATTEMPT_S = 0.05  # an attempt with less time than this left is not started


def backoff(retry: int, rng_random: Callable[[], float]) -> float:
    """Full jitter: uniform in [0, min(cap, base * 2**retry))."""
    return rng_random() * min(BACKOFF_CAP_S, BACKOFF_BASE_S * (2**retry))


def retry_after_s(value: str | None, now: float | None = None) -> float | None:
    """Seconds to wait from a ``Retry-After`` value (delta-seconds or an HTTP date); None if absent or bad."""
    if not value:
        return None
    value = value.strip()
    try:
        seconds = float(value)
    except ValueError:
        try:
            when = email.utils.parsedate_to_datetime(value)
        except (TypeError, ValueError):
            return None
        seconds = when.timestamp() - (time.time() if now is None else now)
    return max(0.0, seconds) if seconds == seconds else None  # NaN is not a wait


@dataclass(slots=True)
class Attempt:
    upstream: str
    outcome: str
    status: int | None
    started_ms: float  # since the first attempt started
    duration_ms: float
    error: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "upstream": self.upstream,
            "outcome": self.outcome,
            "status": self.status,
            "started_ms": round(self.started_ms, 3),
            "duration_ms": round(self.duration_ms, 3),
            "error": self.error,
        }


def classify(status: int) -> str:
    if status < 400:
        return "ok"
    if status == 429:
        return "rate_limited"
    return "server_error" if status >= 500 else "client_error"


class Attempts:
    """The attempts of one request; ``log`` lists each one and each retry the budget refused, whatever the end."""

    def __init__(
        self,
        gen: Generation,
        *,
        candidates: list[str],
        deadline: float,
        guard: Resilience,
    ) -> None:
        self.gen = gen
        self.candidates = candidates
        self.deadline = deadline
        self.guard = guard
        self.committed = False  # a byte went to the client (e.g. an SSE heartbeat): no further attempt
        self.log: list[Attempt] = []
        self.t0 = time.monotonic()
        self.stopped: str | None = None  # why no further attempt was made, if one could have been

    @property
    def records(self) -> list[dict[str, Any]]:
        return [a.to_dict() for a in self.log]

    @property
    def calls(self) -> int:
        """The attempts that reached an upstream (a retry the budget refused is listed, never made)."""
        return sum(a.outcome != "budget_exhausted" for a in self.log)

    async def run(self, endpoint: str, body: dict[str, Any], *, stream: bool, request_id: str) -> tuple[str, Reply]:
        """The reply to relay and the upstream that gave it; raises the last ``UpstreamFailure`` if none."""
        last_reply: tuple[str, Reply] | None = None
        last_error: UpstreamFailure | None = None
        config = self.gen.config
        for upstream in self.guard.ejector.order(self.candidates):
            conf = config.upstreams[upstream]
            wait = 0.0
            for retry in range(conf.retries + 1):
                retrying = retry > 0  # a retry of this upstream holds a budget slot; a fallback's first does not
                if self.log and not await self._admit(upstream, wait, budgeted=retrying):
                    if retrying and self.stopped != "client_committed":
                        break  # refused by the budget or the deadline: the next fallback may still be tried now
                    return self._give_up(last_reply, last_error)
                started = time.monotonic()
                timeout_s = min(conf.timeout_s, self.deadline - started)
                try:
                    reply = await self.gen.clients[upstream].call(
                        endpoint, body, stream=stream, request_id=request_id, timeout_s=timeout_s
                    )
                except UpstreamTimeout as exc:
                    self._note(upstream, "timeout", None, started, exc.message)
                    last_error, last_reply = exc, None
                    break  # a slow upstream is not asked again; the next fallback may be
                except UpstreamFailure as exc:
                    outcome = "connect_error" if isinstance(exc, UpstreamUnreachable) else "reset"
                    self._note(upstream, outcome, None, started, exc.message)
                    last_error, last_reply = exc, None
                    wait = backoff(retry, self.guard.rng.random)
                    continue
                except asyncio.CancelledError:
                    self._note(upstream, "cancelled", None, started, None)
                    raise
                finally:
                    if retrying:
                        self.guard.budget.release()
                outcome = classify(reply.status)
                self._note(upstream, outcome, reply.status, started, None)
                if outcome not in ("rate_limited", "server_error"):
                    return upstream, reply
                last_reply, last_error = (upstream, reply), None
                asked = retry_after_s(reply.retry_after)
                wait = backoff(retry, self.guard.rng.random) if asked is None else asked
                if asked is not None and time.monotonic() + asked > self.deadline - MIN_ATTEMPT_S:
                    break  # the upstream asks for more time than the deadline leaves: try the next one
        return self._give_up(last_reply, last_error)

    async def _admit(self, upstream: str, wait: float, *, budgeted: bool) -> bool:
        """Wait before the next attempt if it can still happen; a retry takes a budget slot (released after)."""
        if self.committed:
            self.stopped = "client_committed"
            return False
        if time.monotonic() + wait > self.deadline - MIN_ATTEMPT_S:
            self.stopped = "deadline"
            return False
        if not budgeted:
            return True
        if not self.guard.budget.acquire():
            self.stopped = "budget_exhausted"
            now = time.monotonic()
            self.log.append(Attempt(upstream, "budget_exhausted", None, (now - self.t0) * 1000, 0.0))
            metrics = self.guard.metrics
            metrics.child(metrics.upstream_attempts, upstream, "budget_exhausted").inc()
            return False
        if wait > 0:
            try:
                await asyncio.sleep(wait)
            except asyncio.CancelledError:
                self.guard.budget.release()
                raise
        if self.committed:
            self.guard.budget.release()
            self.stopped = "client_committed"
            return False
        return True

    def _note(self, upstream: str, outcome: str, status: int | None, started: float, error: str | None) -> None:
        now = time.monotonic()
        self.log.append(Attempt(upstream, outcome, status, (started - self.t0) * 1000, (now - started) * 1000, error))
        metrics = self.guard.metrics
        metrics.child(metrics.upstream_attempts, upstream, outcome).inc()
        if outcome in ("connect_error", "reset", "timeout", "server_error"):
            self.guard.ejector.failure(upstream, self.gen.config)
        elif outcome in ("ok", "client_error"):
            self.guard.ejector.success(upstream)

    def _give_up(self, last_reply: tuple[str, Reply] | None, last_error: UpstreamFailure | None) -> tuple[str, Reply]:
        if last_reply is not None:
            return last_reply
        if last_error is not None:
            if self.calls > 1:
                last_error.message += f" (after {self.calls} attempts)"
            raise last_error
        raise UpstreamTimeout("no upstream could be tried within the route deadline")
