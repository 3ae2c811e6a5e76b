"""Eval statistics against independent implementations (scikit-learn, scipy) and by simulation.

Oracles: ``sklearn.metrics.cohen_kappa_score`` for kappa, ``scipy.stats.binomtest`` for the exact McNemar
test (McNemar's exact test is the binomial test on the discordant pairs), ``scipy.stats.ttest_rel`` and
``scipy.stats.t`` for the paired t-test. Simulations check the false "worse" rate of A/A comparisons and the
power against a candidate 10 points worse on 200 cases.
"""

from __future__ import annotations

import math
import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import stats
from sklearn.metrics import cohen_kappa_score

from policies.evals import (
    binomial_tail,
    cohen_kappa,
    compare,
    mcnemar_exact,
    paired_t,
    paired_t_interval,
    t_quantile,
    t_sf,
)

labels_st = st.lists(st.tuples(st.sampled_from("abc"), st.sampled_from("abc")), min_size=2, max_size=200)


@settings(max_examples=300, deadline=None)
@given(labels_st)
def test_kappa_matches_scikit_learn(pairs: list[tuple[str, str]]) -> None:
    a, b = [x for x, _ in pairs], [y for _, y in pairs]
    if len(set(a) | set(b)) == 1:  # one label throughout: scikit-learn warns and says NaN; perfect agreement here
        assert cohen_kappa(a, b) == 1.0
        return
    assert cohen_kappa(a, b) == pytest.approx(cohen_kappa_score(a, b), abs=1e-12)


def test_kappa_known_values() -> None:
    assert cohen_kappa(["p", "f", "p", "f"], ["p", "f", "p", "f"]) == 1.0
    assert cohen_kappa(["p", "f", "p", "f"], ["f", "p", "f", "p"]) == -1.0
    with pytest.raises(ValueError):
        cohen_kappa(["p"], ["p", "f"])


@settings(max_examples=300, deadline=None)
@given(st.integers(0, 120), st.integers(0, 120))
def test_mcnemar_exact_matches_scipy_binomial_test(b: int, c: int) -> None:
    expected = stats.binomtest(b, b + c, 0.5).pvalue if b + c else 1.0
    assert mcnemar_exact(b, c) == pytest.approx(expected, rel=1e-9, abs=1e-15)
    if b + c:
        one_sided = stats.binomtest(b, b + c, 0.5, alternative="greater").pvalue
        assert binomial_tail(b, b + c) == pytest.approx(one_sided, rel=1e-9, abs=1e-15)


@settings(max_examples=200, deadline=None)
@given(st.floats(-8, 8), st.integers(1, 400))
def test_t_distribution_matches_scipy(t: float, df: int) -> None:
    assert t_sf(t, df) == pytest.approx(stats.t.sf(t, df), rel=1e-8, abs=1e-8)  # p-values: 1e-8 is ample


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(st.floats(0, 1), st.floats(0, 1)), min_size=3, max_size=200))
def test_paired_t_matches_scipy(pairs: list[tuple[float, float]]) -> None:
    base, cand = [x for x, _ in pairs], [y for _, y in pairs]
    diffs = [y - x for x, y in pairs]
    mean = sum(diffs) / len(diffs)
    if sum((d - mean) ** 2 for d in diffs) < 1e-18:
        return  # scipy's answer is NaN for zero variance; ours is the limit (covered below)
    ours = paired_t(base, cand)
    oracle = stats.ttest_rel(cand, base, alternative="less")
    assert ours.t == pytest.approx(oracle.statistic, rel=1e-7, abs=1e-9)
    assert ours.p_worse == pytest.approx(oracle.pvalue, rel=1e-6, abs=1e-12)


def test_constant_differences() -> None:
    assert paired_t([1.0] * 5, [0.5] * 5).p_worse == 0.0
    assert paired_t([0.5] * 5, [0.5] * 5).p_worse == 1.0


def _simulate(rng: random.Random, n: int, p_base: float, p_cand: float) -> tuple[list[bool], list[bool]]:
    base = [rng.random() < p_base for _ in range(n)]
    cand = [rng.random() < p_cand for _ in range(n)]
    return base, cand


def test_a_a_comparisons_are_declared_worse_in_at_most_alpha_of_runs() -> None:
    rng = random.Random(7)
    runs, alpha = 1000, 0.05
    worse = 0
    for _ in range(runs):
        base, cand = _simulate(rng, 200, 0.8, 0.8)
        decision = compare(base, cand, [float(x) for x in base], [float(x) for x in cand], confidence=1 - alpha)
        worse += not decision.not_worse
    # the binomial 99.9 % upper bound of alpha over 1,000 runs
    assert worse <= runs * alpha + 3.29 * math.sqrt(runs * alpha * (1 - alpha)), worse


def test_identical_answers_always_pass() -> None:
    passes = [True] * 150 + [False] * 50
    decision = compare(passes, passes, [0.7] * 200, [0.7] * 200)
    assert decision.not_worse
    assert decision.only_baseline_passed == decision.only_candidate_passed == 0


def _regressed(rng: random.Random, n: int, p_base: float, lost: float, gained: float) -> tuple[list[bool], list[bool]]:
    """A candidate that fails the baseline's hard cases too, loses ``lost`` of all cases and fixes ``gained``."""
    base = [rng.random() < p_base for _ in range(n)]
    cand = []
    for passed in base:
        flip = rng.random() < (lost / p_base if passed else gained / (1 - p_base))
        cand.append(passed != flip)
    return base, cand


def test_ten_points_worse_on_200_cases_fails() -> None:
    rng = random.Random(11)
    runs = 300
    caught = caught_independent = 0
    for _ in range(runs):
        base, cand = _regressed(rng, 200, 0.85, lost=0.12, gained=0.02)  # net 10 points worse
        caught += not compare(base, cand, [float(x) for x in base], [float(x) for x in cand]).not_worse
        # the least favourable case: outcomes independent across the two models (every difference is noise)
        base, cand = _simulate(rng, 200, 0.85, 0.75)
        caught_independent += not compare(base, cand, [float(x) for x in base], [float(x) for x in cand]).not_worse
    assert caught >= 0.95 * runs, caught
    assert caught_independent >= 0.5 * runs, caught_independent


def test_better_candidate_is_not_worse() -> None:
    base = [i % 10 < 7 for i in range(200)]
    cand = [i % 10 < 9 for i in range(200)]
    decision = compare(base, cand, [float(x) for x in base], [float(x) for x in cand])
    assert decision.not_worse and decision.only_candidate_passed == 40


@settings(max_examples=200, deadline=None)
@given(st.floats(0.0005, 0.9995), st.integers(1, 500))
def test_t_quantile_matches_scipy(p: float, df: int) -> None:
    assert t_quantile(p, df) == pytest.approx(stats.t.ppf(p, df), rel=1e-8, abs=1e-8)


@settings(max_examples=100, deadline=None)
@given(st.lists(st.tuples(st.floats(0, 1), st.floats(0, 1)), min_size=2, max_size=80), st.floats(0.001, 0.2))
def test_paired_t_interval_matches_scipy(pairs: list[tuple[float, float]], alpha: float) -> None:
    base, cand = [b for b, _ in pairs], [c for _, c in pairs]
    found = paired_t_interval(base, cand, alpha)
    assert found is not None
    mean, low, high = found
    diffs = [c - b for b, c in pairs]
    if max(diffs) - min(diffs) < 1e-9:  # scipy's interval is NaN without variance; ours is the point
        assert low == pytest.approx(mean, abs=1e-9) and high == pytest.approx(mean, abs=1e-9)
        return
    oracle = stats.ttest_rel(cand, base).confidence_interval(confidence_level=1 - alpha)
    assert (low, high) == (pytest.approx(oracle.low, abs=1e-9), pytest.approx(oracle.high, abs=1e-9))
    assert paired_t_interval([0.5], [0.7], alpha) is None
