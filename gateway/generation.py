"""A config generation: everything derived from one config file that a request reads.

Routes, client keys, upstream clients (primary pool and the shadow runner's own pool) and the secret values
to scrub from anything an upstream echoes; and what a request would otherwise rebuild from the config each
time (``decide``'s route views, each (route, variant)'s retry plan, the body limit), computed once here.
``Gateway.apply`` builds one per valid file and swaps it in one assignment, so each request reads exactly one
generation and in-flight requests finish on theirs.

Usage: ``gen = gw.generation``; ``gen.config.routes[...]``; ``gen.clients[upstream].call(...)``;
``gen.scrub(body)``.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from collectors.cost import Price
from gateway.auth import Keys
from gateway.config import Config, Loaded
from gateway.decide import RouteView, route_views
from gateway.upstream import Client


def plan(config: Config, route: str, variant: str) -> tuple[list[str], float]:
    """The upstreams to try for a request of ``route`` given ``variant``, in order, and the route deadline in
    seconds (``Generation.plans`` holds it for every route and variant)."""
    conf = config.routes[route]
    candidates = [variant, *conf.fallbacks]
    deadline_s = conf.timeout_s or max(config.upstreams[name].timeout_s for name in candidates)
    return candidates, deadline_s


@dataclass(frozen=True)
class Generation:
    loaded: Loaded
    keys: Keys
    clients: dict[str, Client]
    secrets: tuple[bytes, ...]  # every secret value, to scrub from anything an upstream echoes
    shadow_clients: dict[str, Client] = field(default_factory=dict)  # on the shadow runner's own pool
    prices: dict[str, Price] = field(default_factory=dict)  # per upstream; absent: no cost known
    config: Config = field(init=False)
    routes: dict[str, RouteView] = field(init=False)  # decide's view of each route
    plans: dict[tuple[str, str], tuple[list[str], float]] = field(init=False)  # (route, variant) -> plan(...)
    max_body_bytes: int = field(init=False)  # server.max_body_mb

    def __post_init__(self) -> None:
        config = self.loaded.config
        plans = {(r, v): plan(config, r, v) for r, route in config.routes.items() for v in route.variants}
        for name, value in (
            ("config", config),
            ("routes", route_views(config)),
            ("plans", plans),
            ("max_body_bytes", int(config.server.max_body_mb * 1024 * 1024)),
        ):
            object.__setattr__(self, name, value)  # frozen: set once, here

    def scrub(self, data: bytes) -> bytes:
        for secret in self.secrets:
            if secret in data:
                data = data.replace(secret, b"[redacted]")
        return data
