"""Which shadows mirror a request: each sampled independently; absent or 0 means never.

Usage: ``pick_shadows([("cand-v5", 0.25)], rng)`` -> ``["cand-v5"]`` about a quarter of the time.
"""

from __future__ import annotations

import random
from collections.abc import Iterable


def pick_shadows(shadows: Iterable[tuple[str, float]], rng: random.Random) -> list[str]:
    return [name for name, sample in shadows if sample >= 1.0 or (sample > 0 and rng.random() < sample)]
