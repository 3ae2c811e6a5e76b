"""Which shadows mirror a request: each sampled independently; absent or 0 means never.

A request that may not be mirrored (opted out of capture, body over the shadow cap) is not sampled at all:
every shadow that would have been drawn is reported as skipped instead, so that for each shadow
``sampled = ok + error + timeout + dropped`` holds exactly and skips are counted apart.

Usage: ``pick_shadows([("cand-v5", 0.25)], rng)`` -> ``(["cand-v5"], [])`` about a quarter of the time;
``pick_shadows([("cand-v5", 0.25)], rng, eligible=False)`` -> ``([], ["cand-v5"])``.
"""

from __future__ import annotations

import random
from collections.abc import Iterable


def pick_shadows(
    shadows: Iterable[tuple[str, float]], rng: random.Random, *, eligible: bool = True
) -> tuple[list[str], list[str]]:
    """(shadows to mirror, shadows skipped because the request is not eligible)."""
    configured = [(name, sample) for name, sample in shadows if sample > 0]
    if not eligible:
        return [], [name for name, _ in configured]
    return [name for name, sample in configured if sample >= 1.0 or rng.random() < sample], []
