"""Shadow sampling (SH-4): independent draws inside the 99.9 % interval; 0 and absent mean none."""

from __future__ import annotations

import math
import random

from hypothesis import given, settings
from hypothesis import strategies as st

from policies.shadows import pick_shadows

Z_999 = 3.2905


def test_each_shadow_is_sampled_independently_at_its_rate() -> None:
    rng = random.Random(1234)
    n = 20_000
    hits = {"a": 0, "b": 0, "both": 0}
    for _ in range(n):
        mirror, skipped = pick_shadows([("a", 0.25), ("b", 0.5)], rng)
        assert skipped == []
        hits["a"] += "a" in mirror
        hits["b"] += "b" in mirror
        hits["both"] += mirror == ["a", "b"]
    for name, p in (("a", 0.25), ("b", 0.5), ("both", 0.125)):
        assert abs(hits[name] - n * p) <= Z_999 * math.sqrt(n * p * (1 - p)), (name, hits)


def test_zero_and_full_samples_are_exact() -> None:
    rng = random.Random(5)
    for _ in range(2000):
        assert pick_shadows([("off", 0.0), ("on", 1.0)], rng) == (["on"], [])
    assert pick_shadows([], rng) == ([], [])


@settings(max_examples=50, deadline=None)
@given(samples=st.lists(st.floats(min_value=0.0, max_value=1.0), max_size=4), seed=st.integers())
def test_an_ineligible_request_is_never_sampled_and_skips_each_live_shadow(samples: list[float], seed: int) -> None:
    shadows = [(f"s{i}", p) for i, p in enumerate(samples)]
    rng = random.Random(seed)
    state = rng.getstate()
    mirror, skipped = pick_shadows(shadows, rng, eligible=False)
    assert mirror == [] and skipped == [name for name, p in shadows if p > 0]
    assert rng.getstate() == state  # no draw spent: eligibility never shifts other requests' samples
    mirror, skipped = pick_shadows(shadows, rng)
    assert skipped == [] and set(mirror) <= {name for name, p in shadows if p > 0}
