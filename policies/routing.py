"""Weighted, sticky assignment of a variant: weighted rendezvous hashing of (experiment, sticky key).

Each variant ``v`` with weight ``w > 0`` gets the score ``ln(u_v) / w`` where ``u_v`` in (0, 1) is a hash of
(experiment, key, v); the highest score wins. ``-ln(u_v) / w`` is exponential with rate ``w``, so a uniform
key lands on ``v`` with probability exactly ``w / sum(weights)``. Guarantees, all stateless (every replica
and every restart computes the same answer from the file alone):

- Sticky: the variant depends only on (experiment, key, the weights); not on config order, replica or time.
- One weight moves only its own users: raising ``w_v`` only moves users *to* ``v``, lowering it only moves
  users *from* ``v`` (no other score changes). So a variant drained to 0 loses exactly its users, spread
  over the others in proportion to their weights, and raising it back returns exactly those users; adding a
  variant at 0, removing one at 0, or reordering the file moves nobody.
- Moving weight from A to B (total kept) moves users only A->B, A->other or other->B: nobody moves to A,
  nobody leaves B, and no user moves between two bystanders. With two variants that is exactly "only A
  users move to B". With three or more some bystander users trade places with A users (about
  ``delta * share(bystanders)`` of the traffic each way) while every bystander keeps its share.

Why not better: for three variants no stateless scheme keeps "moving weight A->B moves only A users to B"
for every pair. If it held, the set of users of C could not change while weight moves between A and B, so
it would be a nested set S_C(c) fixed by C's share alone, likewise S_A(a) and S_B(b), with S_A(a), S_B(b),
S_C(c) a partition whenever a + b + c = 1. Then (1/2, 1/2, 0) and (1/2, 0, 1/2) give S_B(1/2) = S_C(1/2) =
the complement of S_A(1/2), yet (0, 1/2, 1/2) needs them disjoint. Laying weights out as intervals in file
order keeps the property for neighbours in the file, but then draining an end variant to 0 moves the
middle variant's users (weights 90/5/5 -> 90/5/0 sends 95 % of the middle variant's users elsewhere), and
no scheme that reads weights as shares keeps both for three variants; rendezvous keeps the drain property
for every variant and any number of variants. Renaming the experiment re-draws every assignment; renaming a variant
re-draws only that variant's users.

Without a sticky key (``sticky_by: none`` or no key in the request) each request draws from the injected RNG.

Usage: ``choose_variant("v4-ab", "user-17", {"prod-v3": 90, "cand-v4": 10}, rng)``
"""

from __future__ import annotations

import hashlib
import math
import random
from collections.abc import Mapping

_SCALE = float(1 << 53)


def _part(text: str) -> bytes:
    data = text.encode("utf-8", "surrogatepass")
    return len(data).to_bytes(4, "big") + data


def unit_hash(experiment: str, key: str, variant: str) -> float:
    """A uniform number in (0, 1) fixed by (experiment, key, variant)."""
    digest = hashlib.blake2b(_part(experiment) + _part(key) + _part(variant), digest_size=8).digest()
    return ((int.from_bytes(digest, "big") >> 11) + 0.5) / _SCALE


def unit_id(key: str) -> str:
    """The experiment's unit for a sticky key, as stored: a one-way hash, so no key or user id is kept."""
    return hashlib.blake2b(_part(key), digest_size=8, person=b"turnout-unit").hexdigest()


def sticky_variant(experiment: str, key: str, weights: Mapping[str, float]) -> str:
    """The variant of ``key``: highest ``ln(u) / weight`` over the variants with a positive weight."""
    best, best_score = "", -math.inf
    for name, weight in weights.items():
        if weight <= 0:
            continue
        score = math.log(unit_hash(experiment, key, name)) / weight
        if score > best_score:
            best, best_score = name, score
    return best


def choose_variant(experiment: str, sticky_key: str | None, weights: Mapping[str, float], rng: random.Random) -> str:
    if len(weights) == 1:
        return next(iter(weights))
    if sticky_key is None:
        names = [name for name, weight in weights.items() if weight > 0]
        return rng.choices(names, [weights[name] for name in names])[0]
    return sticky_variant(experiment, sticky_key, weights)
