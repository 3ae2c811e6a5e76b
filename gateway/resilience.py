"""The state that protects the gateway and its upstreams, shared by every request of one process.

``in_flight`` counts the proxied requests being served (kept by ``admission.Admission``); the retry budget
is a share of it. ``ejector`` cools failing upstreams down. ``drain`` knows whether shutdown began and
which calls are open.

Usage: ``gw.resilience = Resilience(metrics, rng)``; ``gw.resilience.ejector.order([...])``.
"""

from __future__ import annotations

import random
from collections.abc import Callable

from collectors.metrics import Metrics
from gateway.ejection import Ejector
from gateway.shutdown import Drain


class RetryBudget:
    """Concurrent retries allowed: ``max(min_concurrent, ratio * in_flight)``."""

    def __init__(self, in_flight: Callable[[], int], *, ratio: float = 0.2, min_concurrent: int = 3) -> None:
        self.in_flight = in_flight
        self.ratio = ratio
        self.min_concurrent = min_concurrent
        self.active = 0

    def acquire(self) -> bool:
        if self.active >= max(self.min_concurrent, int(self.ratio * self.in_flight())):
            return False
        self.active += 1
        return True

    def release(self) -> None:
        self.active -= 1


class Resilience:
    def __init__(self, metrics: Metrics, rng: random.Random) -> None:
        self.metrics = metrics
        self.rng = rng
        self.in_flight = 0
        self.budget = RetryBudget(lambda: self.in_flight)
        self.ejector = Ejector(metrics.upstream_ejected, rng)
        self.drain = Drain()

    def close(self) -> None:
        self.ejector.close()
        self.drain.close()
