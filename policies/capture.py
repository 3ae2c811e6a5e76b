"""Whether an interaction is stored as a training candidate.

Usage: ``should_capture(0.5, opted_out=False, rng=rng)``; an opt-out always wins, 0 means never.
"""

from __future__ import annotations

import random


def should_capture(sample: float, *, opted_out: bool, rng: random.Random) -> bool:
    if opted_out or sample <= 0:
        return False
    return sample >= 1.0 or rng.random() < sample
