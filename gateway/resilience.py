"""The state that protects the gateway and its upstreams, shared by every request of one process.

``in_flight`` counts the proxied requests being served (kept by ``admission.Admission``); the retry budget
is a share of it. ``ejector`` cools failing upstreams down. ``drain`` knows whether shutdown began and
which calls are open.

Usage: ``gw.resilience = Resilience(metrics, rng)``; ``gw.resilience.ejector.order([...])``.
"""

from __future__ import annotations

import random

from collectors.metrics import Metrics
from gateway.ejection import Ejector
from gateway.retry import RetryBudget
from gateway.shutdown import Drain


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
