"""Weighted, sticky assignment of a variant.

A request's variant is a deterministic hash of (experiment, sticky key) mapped onto the weights laid out
as consecutive intervals in config order, so every replica and every restart agrees. Moving weight between
two variants that are next to each other in the file (or draining the last one to 0 and back) only moves
users between those two. Without a sticky key the draw comes from the injected RNG.

Usage: ``choose_variant("v4-ab", "user-17", {"prod-v3": 90, "cand-v4": 10}, rng)``
"""

from __future__ import annotations

import hashlib
import random
from collections.abc import Mapping

_SCALE = float(1 << 64)


def sticky_point(experiment: str, key: str) -> float:
    """A uniform point in [0, 1) fixed by (experiment, key)."""
    digest = hashlib.blake2b(f"{experiment}\x00{key}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") / _SCALE


def pick(point: float, weights: Mapping[str, float]) -> str:
    """The variant whose interval holds ``point``; zero weights own no interval."""
    total = sum(weights.values())
    target = point * total
    upto = 0.0
    last = ""
    for name, weight in weights.items():
        if weight <= 0:
            continue
        upto += weight
        last = name
        if target < upto:
            return name
    return last


def choose_variant(experiment: str, sticky_key: str | None, weights: Mapping[str, float], rng: random.Random) -> str:
    if len(weights) == 1:
        return next(iter(weights))
    point = rng.random() if sticky_key is None else sticky_point(experiment, sticky_key)
    return pick(point, weights)
