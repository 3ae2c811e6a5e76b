"""Outlier ejection: an upstream that fails again and again is skipped by the routes that have somewhere else to go.

After ``threshold`` consecutive failures (connect errors, resets, timeouts, 5xx) an upstream is ejected for a
cool-down that doubles with each ejection (jittered ±25 %, capped) and shrinks back with successes. While it
cools down, a route skips it when the route has another upstream that is not ejected; a route left with only
ejected upstreams (one whose only upstream it is, say) still tries them, in order: ejection never leaves a
route with nothing to try. An upstream is ejected only if some route using it (as a variant or a fallback)
would skip it. A success (from a route that still tries it) ends the ejection at once. The gauge
``turnout_upstream_ejected{upstream}`` is 1 while it is ejected.

Usage::

    ejector = Ejector(metrics.upstream_ejected, random.Random())
    for name in ejector.order(["prod", "backup"]): ...   # ejected ones left out, unless none would remain
    ejector.failure("prod", config); ejector.success("backup")
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Callable
from dataclasses import dataclass

from prometheus_client import Gauge

from gateway.config import Config

log = logging.getLogger(__name__)


@dataclass(slots=True)
class _Health:
    failures: int = 0  # consecutive
    ejections: int = 0  # drives the doubling; one less per success
    until: float = 0.0  # ejected while clock() < until
    timer: asyncio.TimerHandle | None = None


class Ejector:
    def __init__(
        self,
        gauge: Gauge,
        rng: random.Random,
        *,
        threshold: int = 5,
        base_s: float = 5.0,
        cap_s: float = 300.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.gauge = gauge
        self.rng = rng
        self.threshold = threshold
        self.base_s = base_s
        self.cap_s = cap_s
        self.clock = clock
        self.health: dict[str, _Health] = {}

    def ejected(self, upstream: str) -> bool:
        state = self.health.get(upstream)
        return state is not None and self.clock() < state.until

    def order(self, candidates: list[str]) -> list[str]:
        """The candidates to try, in order, without duplicates; ejected ones left out unless all are."""
        if len(candidates) == 1:
            return candidates  # the usual route: a lone candidate is tried whatever its health
        unique = list(dict.fromkeys(candidates))
        healthy = [name for name in unique if not self.ejected(name)]
        return healthy or unique

    def success(self, upstream: str) -> None:
        state = self.health.get(upstream)
        if state is not None:
            state.failures = 0
            state.ejections = max(0, state.ejections - 1)
            if self.ejected(upstream):  # it answers again: the routes that skip it may use it now
                state.until = 0.0
                self._expire(upstream)

    def failure(self, upstream: str, config: Config) -> None:
        state = self.health.setdefault(upstream, _Health())
        state.failures += 1
        if state.failures < self.threshold or self.ejected(upstream):
            return
        if not self._skippable(upstream, config):
            return
        state.failures = 0
        state.ejections += 1
        cool = min(self.cap_s, self.base_s * 2 ** (state.ejections - 1)) * (0.75 + 0.5 * self.rng.random())
        state.until = self.clock() + cool
        self.gauge.labels(upstream).set(1)
        if state.timer is not None:
            state.timer.cancel()
        state.timer = asyncio.get_running_loop().call_later(cool, self._expire, upstream)
        log.warning("upstream %s ejected for %.1fs after %d failures in a row", upstream, cool, self.threshold)

    def _expire(self, upstream: str) -> None:
        state = self.health[upstream]
        if state.timer is not None:
            state.timer.cancel()
            state.timer = None
        self.gauge.labels(upstream).set(0)

    def _skippable(self, upstream: str, config: Config) -> bool:
        """Whether some route using ``upstream`` has another upstream that is not ejected (it would skip it)."""
        for route in config.routes.values():
            members = {*route.variants, *route.fallbacks}
            if upstream in members and any(not self.ejected(other) for other in members - {upstream}):
                return True
        return False

    def close(self) -> None:
        for state in self.health.values():
            if state.timer is not None:
                state.timer.cancel()
                state.timer = None
