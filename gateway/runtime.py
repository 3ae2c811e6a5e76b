"""The running gateway: the live config generation (``gateway.generation``) and the resources every request
reaches. ``Gateway.apply`` swaps the generation in one assignment, so each request reads exactly one and
in-flight requests finish on the one they started with.

Usage (in the app lifespan): ``gw = Gateway(loaded, metrics=..., sink=...)``; ``await gw.start()``;
``gw.apply(new_loaded)`` on reload; ``await gw.close()``.
"""

from __future__ import annotations

import dataclasses
import logging
import random
from pathlib import Path
from typing import Any

from collectors.capture import CapturePolicy
from collectors.metrics import Metrics
from collectors.review.queue import ReviewPolicy
from collectors.rollouts import RolloutRow
from collectors.sink import Sink
from gateway.auth import Keys
from gateway.body_limits import BodyDeadlines
from gateway.client_limits import RateLimiter
from gateway.config import Config, Loaded
from gateway.generation import Generation
from gateway.limits import FEEDBACK_PER_MINUTE, CallerRate, LargeBodies
from gateway.pricing import upstream_prices
from gateway.resilience import Resilience
from gateway.rollout_state import overlay
from gateway.shadow import ShadowRunner
from gateway.upstream import Session, close_clients, make_client, open_session

log = logging.getLogger(__name__)


class Gateway:
    def __init__(self, loaded: Loaded, *, metrics: Metrics, sink: Sink, rng: random.Random | None = None) -> None:
        self.metrics = metrics
        self.sink = sink
        self.rng = rng or random.Random()
        self.resilience = Resilience(metrics, self.rng)  # in-flight count, retry budget, ejection, drain
        self.session: Session | None = None
        self.shadows = ShadowRunner(metrics, sink)
        self.limiter = RateLimiter(Path(loaded.config.server.state_dir) / "clients")  # auth.clients rpm
        self.feedback_rate = CallerRate(FEEDBACK_PER_MINUTE)  # per caller, per process
        self.large_bodies = LargeBodies()  # server.max_large_bodies, per process
        self.body_deadlines = BodyDeadlines()  # server.body_timeout_s, one timer for the process
        self.ready = False
        self._first = loaded
        self.file = loaded  # the config file's generation, before rollout overrides
        self.rollouts: tuple[RolloutRow, ...] = ()
        self.generation: Generation

    async def start(self) -> None:
        self.session = open_session(self._first.config.server.http_client)
        await self.shadows.open(self._first.config.server.http_client)
        self.apply(self._first)
        self.ready = True

    def apply(self, loaded: Loaded) -> None:
        """Make ``loaded`` (a config file) the generation new requests see, with the active rollouts' weights."""
        self.file = loaded
        self._install(loaded)
        self.metrics.reload_result(True)

    def set_overrides(self, rollouts: tuple[RolloutRow, ...]) -> None:
        """The stored rollouts changed (the stored-state reader): serve their weights as a new generation."""
        if rollouts != self.rollouts:
            self.rollouts = rollouts
            self._install(self.file)
            log.info("rollout weights applied: %s", {r.route: (r.phase, r.step) for r in rollouts})

    def _install(self, file: Loaded) -> None:
        assert self.session is not None
        loaded = dataclasses.replace(file, config=overlay(file.config, self.rollouts)) if self.rollouts else file
        config, secrets = loaded.config, loaded.secrets
        clients = {
            name: make_client(name, up, secrets.upstream_keys.get(name), self.session)
            for name, up in config.upstreams.items()
        }
        values = tuple(sorted({s.encode() for s in secrets.values()}, key=len, reverse=True))
        shadow_clients = self.shadows.clients(config, secrets)
        keys = Keys(secrets.client_keys, secrets.admin_key, named=secrets.named_keys, caller_key=secrets.caller_key)
        self.generation = Generation(loaded, keys, clients, values, shadow_clients, upstream_prices(config))
        self.metrics.config_applied(loaded.sha256, *_exported(config))
        self.sink.configure(capture_policy(config, secrets.values()))

    async def close(self) -> None:
        self.ready = False
        self.limiter.close()
        self.resilience.close()
        await self.shadows.close(self.generation.config.shadow.drain_s)
        await close_clients([*self.generation.clients.values(), *self.generation.shadow_clients.values()])
        if self.session is not None:
            await self.session.close()


def capture_policy(config: Config, secrets: list[str]) -> CapturePolicy:
    return CapturePolicy(
        redact={name: frozenset(route.capture.redact) for name, route in config.routes.items()},
        secrets=tuple(secrets),
        retention=config.store_retention,
        route_retention={n: r.store_retention for n, r in config.routes.items() if r.store_retention is not None},
        review=review_policy(config),
    )


def review_policy(config: Config) -> ReviewPolicy:
    review = config.review
    if review is None:
        return ReviewPolicy()
    flag = review.flag
    return ReviewPolicy(review.sample, flag.label, flag.max_score, flag.max_shadow_agreement)


def _exported(
    config: Config,
) -> tuple[dict[str, Any], dict[str, float], dict[str, dict[str, float]], dict[str, float]]:
    routes = {name: (config.experiment(name), dict(route.variants)) for name, route in config.routes.items()}
    trained = {name: up.trained_at.timestamp() for name, up in config.upstreams.items() if up.trained_at}
    thresholds: dict[str, dict[str, float]] = {}
    for name, route in config.routes.items():
        rt = route.retraining
        signals: dict[str, float | None] = {}
        if rt is not None:
            signals = {
                "max_model_age_seconds": rt.max_model_age,
                "min_feedback_score": rt.min_feedback_score,
                "min_eval_score": rt.min_eval_score,
                "min_ratings": float(rt.min_ratings),
            }
        if route.drift is not None:
            signals["max_psi"] = route.drift.max_psi
        if config.review is not None:
            signals["max_review_backlog"] = float(config.review.max_backlog)
        if signals:
            thresholds[name] = {k: v for k, v in signals.items() if v is not None}
    deprecated = {name: up.deprecated_at.timestamp() for name, up in config.upstreams.items() if up.deprecated_at}
    return routes, trained, thresholds, deprecated
