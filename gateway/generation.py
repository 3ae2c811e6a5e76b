"""A config generation: everything derived from one config file that a request reads.

Routes, client keys, upstream clients (primary pool and the shadow runner's own pool) and the secret values
to scrub from anything an upstream echoes. ``Gateway.apply`` builds one per valid file and swaps it in one
assignment, so each request reads exactly one generation and in-flight requests finish on theirs.

Usage: ``gen = gw.generation``; ``gen.config.routes[...]``; ``gen.clients[upstream].call(...)``;
``gen.scrub(body)``.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from collectors.cost import Price
from gateway.auth import Keys
from gateway.config import Config, Loaded
from gateway.upstream import Client


@dataclass(frozen=True)
class Generation:
    loaded: Loaded
    keys: Keys
    clients: dict[str, Client]
    secrets: tuple[bytes, ...]  # every secret value, to scrub from anything an upstream echoes
    shadow_clients: dict[str, Client] = field(default_factory=dict)  # on the shadow runner's own pool
    prices: dict[str, Price] = field(default_factory=dict)  # per upstream; absent: no cost known

    @property
    def config(self) -> Config:
        return self.loaded.config

    def scrub(self, data: bytes) -> bytes:
        for secret in self.secrets:
            if secret in data:
                data = data.replace(secret, b"[redacted]")
        return data
