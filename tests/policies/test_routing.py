"""Sticky weighted assignment (SH-4): stickiness, split accuracy, what a weight change may move."""

from __future__ import annotations

import math
import random
from collections import Counter

from hypothesis import given, settings
from hypothesis import strategies as st

from policies.routing import choose_variant, sticky_variant

Z_999 = 3.2905  # two-sided 99.9 % normal quantile
KEYS = [f"user-{i}" for i in range(20_000)]


def within_binomial_interval(count: int, n: int, p: float) -> bool:
    return abs(count - n * p) <= Z_999 * math.sqrt(n * p * (1 - p))


def assign(weights: dict[str, float], keys: list[str], experiment: str = "exp") -> list[str]:
    return [sticky_variant(experiment, key, weights) for key in keys]


NAMES = ["a", "b", "c", "d", "e"]
weights_st = (
    st.lists(st.sampled_from([0, 0, 1, 5, 10, 25, 50, 90, 100]), min_size=2, max_size=5)
    .filter(lambda ws: sum(ws) > 0)
    .map(lambda ws: dict(zip(NAMES, ws, strict=False)))
)
SAMPLE = KEYS[:400]


def test_split_accuracy_inside_the_999_interval_over_20000_keys() -> None:
    for weights in ({"prod": 90, "cand": 10}, {"a": 50, "b": 30, "c": 20}, {"a": 1, "b": 1, "c": 1, "d": 1}):
        counts = Counter(assign(weights, KEYS))
        total = sum(weights.values())
        for name, weight in weights.items():
            assert within_binomial_interval(counts[name], len(KEYS), weight / total), (weights, counts)


def test_split_error_over_10000_keys_is_small() -> None:
    counts = Counter(assign({"prod": 90, "cand": 10}, KEYS[:10_000]))
    error = abs(counts["cand"] / 10_000 - 0.10)
    assert error <= Z_999 * math.sqrt(0.1 * 0.9 / 10_000)  # 0.99 percentage points


def test_zero_weight_is_never_chosen_sticky_or_not() -> None:
    weights = {"a": 70, "b": 0, "c": 30}
    assert "b" not in set(assign(weights, KEYS[:5000]))
    rng = random.Random(7)
    draws = Counter(choose_variant("exp", None, weights, rng) for _ in range(5000))
    assert draws["b"] == 0 and within_binomial_interval(draws["a"], 5000, 0.7)


def test_sticky_by_none_draws_afresh_from_the_injected_rng() -> None:
    rng = random.Random(11)
    draws = [choose_variant("exp", None, {"a": 90, "b": 10}, rng) for _ in range(20_000)]
    assert within_binomial_interval(draws.count("b"), 20_000, 0.10)
    again = [choose_variant("exp", None, {"a": 90, "b": 10}, random.Random(11)) for _ in range(50)]
    assert len(set(again)) == 1  # same seed, same first draw: the RNG is the only source
    assert len(set(draws[:50])) == 2  # and successive draws for the same caller differ


def test_a_single_variant_route_always_answers_it() -> None:
    assert choose_variant("exp", "k", {"only": 0}, random.Random()) == "only"


def test_renaming_the_experiment_redraws_independently() -> None:
    weights = {"a": 50, "b": 50}
    before, after = assign(weights, KEYS[:10_000], "exp-1"), assign(weights, KEYS[:10_000], "exp-2")
    same = sum(x == y for x, y in zip(before, after, strict=True))
    assert within_binomial_interval(same, 10_000, 0.5)


@settings(max_examples=60, deadline=None)
@given(weights=weights_st, key=st.text(max_size=40), experiment=st.text(max_size=20), seed=st.integers())
def test_sticky_keys_never_move_whatever_the_rng_or_the_file_order(
    weights: dict[str, float], key: str, experiment: str, seed: int
) -> None:
    first = choose_variant(experiment, key, weights, random.Random(seed))
    assert weights[first] > 0
    assert choose_variant(experiment, key, weights, random.Random(seed + 1)) == first
    assert choose_variant(experiment, key, dict(reversed(weights.items())), random.Random()) == first


@settings(max_examples=80, deadline=None)
@given(weights=weights_st, data=st.data())
def test_changing_one_weight_moves_only_that_variants_users(weights: dict[str, float], data: st.DataObject) -> None:
    name = data.draw(st.sampled_from(sorted(weights)))
    new = data.draw(st.sampled_from([0, 1, 5, 10, 50, 100, 400]))
    changed = {**weights, name: new}
    if sum(changed.values()) <= 0:
        return
    before, after = assign(weights, SAMPLE), assign(changed, SAMPLE)
    for old, now in zip(before, after, strict=True):
        if old != now:
            assert (now == name) if new > weights[name] else (old == name)
    # drained to 0 and back: exactly the same users come back
    assert assign({**changed, name: weights[name]}, SAMPLE) == before


@settings(max_examples=60, deadline=None)
@given(weights=weights_st, data=st.data())
def test_moving_weight_from_a_to_b_moves_nobody_to_a_and_nobody_off_b(
    weights: dict[str, float], data: st.DataObject
) -> None:
    a, b = data.draw(st.lists(st.sampled_from(sorted(weights)), min_size=2, max_size=2, unique=True))
    delta = data.draw(st.floats(min_value=0.0, max_value=1.0)) * weights[a]
    moved = {**weights, a: weights[a] - delta, b: weights[b] + delta}
    if sum(v for v in moved.values() if v > 0) <= 0:
        return
    for old, now in zip(assign(weights, SAMPLE), assign(moved, SAMPLE), strict=True):
        if old != now:
            assert old == a or now == b, (old, now)
            assert now != a and old != b
            if len(weights) == 2:
                assert (old, now) == (a, b)


def test_moving_weight_between_two_of_three_bounds_bystander_churn() -> None:
    before = assign({"prod": 80, "v4": 10, "v5": 10}, KEYS)
    after = assign({"prod": 70, "v4": 10, "v5": 20}, KEYS)
    moves = Counter((old, now) for old, now in zip(before, after, strict=True) if old != now)
    assert set(moves) <= {("prod", "v5"), ("prod", "v4"), ("v4", "v5")}
    n = len(KEYS)
    # prod loses exactly its 10 points (nobody joins it); at most as many bystanders move on to v5
    assert within_binomial_interval(moves["prod", "v5"] + moves["prod", "v4"], n, 0.10)
    assert moves["v4", "v5"] <= 0.02 * n and moves["prod", "v4"] <= 0.02 * n  # about delta * share(v4) = 1 %
    assert abs(moves["v4", "v5"] - moves["prod", "v4"]) <= Z_999 * math.sqrt(2 * n * 0.01)


def test_draining_an_end_variant_of_three_keeps_the_others_users() -> None:
    before = assign({"prod": 90, "v4": 5, "v5": 5}, KEYS)
    after = assign({"prod": 90, "v4": 5, "v5": 0}, KEYS)
    for old, now in zip(before, after, strict=True):
        assert old == now or old == "v5"
