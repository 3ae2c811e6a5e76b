"""Drift math against independent implementations (scipy) and by simulation: the chi-square p-values are
uniform under the null, Holm keeps the family-wise error rate, and PSI / JS have their textbook properties."""

from __future__ import annotations

import math
import random

import pytest
from hypothesis import given
from hypothesis import strategies as st
from scipy import stats
from scipy.spatial.distance import jensenshannon

from policies.drift import (
    chi2_sf,
    histogram,
    holm,
    homogeneity_p,
    js_divergence,
    js_on_psi_scale,
    psi,
    quantile_edges,
)

counts = st.lists(st.integers(0, 500), min_size=2, max_size=30)


def _pair(draw: st.DrawFn) -> tuple[list[int], list[int]]:
    a = draw(counts.filter(lambda c: sum(c) > 0))
    b = draw(st.lists(st.integers(0, 500), min_size=len(a), max_size=len(a)).filter(lambda c: sum(c) > 0))
    return a, b


pairs = st.composite(_pair)()


@given(pairs)
def test_psi_is_the_symmetric_kl_of_the_smoothed_shares(pair: tuple[list[int], list[int]]) -> None:
    a, b = pair
    p = [(x + 0.5) / (sum(a) + 0.5 * len(a)) for x in a]
    q = [(x + 0.5) / (sum(b) + 0.5 * len(b)) for x in b]
    assert psi(a, b) == pytest.approx(stats.entropy(p, q) + stats.entropy(q, p), rel=1e-9, abs=1e-12)
    assert psi(a, b) == pytest.approx(psi(b, a))
    assert psi(a, a) == pytest.approx(0.0, abs=1e-12)


@given(pairs)
def test_js_matches_scipy_and_is_bounded(pair: tuple[list[int], list[int]]) -> None:
    a, b = pair
    assert js_divergence(a, b) == pytest.approx(jensenshannon(a, b) ** 2, rel=1e-7, abs=1e-12)
    assert 0.0 <= js_divergence(a, b) <= math.log(2) + 1e-12
    assert js_on_psi_scale(a, b) == pytest.approx(8 * js_divergence(a, b))


def test_js_on_the_psi_scale_equals_psi_for_small_shifts() -> None:
    a = [1000, 2000, 3000, 4000]
    b = [1030, 1980, 3010, 3980]
    assert js_on_psi_scale(a, b) == pytest.approx(psi(a, b, smoothing=0.0), rel=0.01)


@pytest.mark.parametrize("df", [1, 2, 3, 7, 10, 30, 255])
def test_chi2_sf_matches_scipy(df: int) -> None:
    for x in [0.01, 0.5, 1, 2, 5, 10, 20, 50, 100, 300, 600]:
        assert chi2_sf(x, df) == pytest.approx(stats.chi2.sf(x, df), rel=1e-8, abs=1e-15)


def test_homogeneity_p_matches_scipy_when_no_bin_is_merged() -> None:
    rng = random.Random(3)
    for _ in range(50):
        k = rng.randint(2, 10)
        a = [rng.randint(20, 200) for _ in range(k)]
        b = [rng.randint(20, 200) for _ in range(k)]
        expected = stats.chi2_contingency([a, b], correction=False).pvalue
        assert homogeneity_p(a, b) == pytest.approx(expected, rel=1e-8)


def test_homogeneity_p_merges_sparse_bins_and_divides_by_the_design_effect() -> None:
    a, b = [100, 100, 1, 0, 2], [60, 140, 0, 1, 1]
    merged_a, merged_b = [103, 100], [62, 140]  # the three sparse bins pooled with the smallest full one
    assert homogeneity_p(a, b) == pytest.approx(stats.chi2_contingency([merged_a, merged_b], correction=False).pvalue)
    stat = stats.chi2_contingency([merged_a, merged_b], correction=False).statistic
    assert homogeneity_p(a, b, design_effect=4.0) == pytest.approx(stats.chi2.sf(stat / 4.0, 1))
    assert homogeneity_p([50, 0], [0, 50]) < 1e-10
    assert homogeneity_p([5, 0], [0, 5]) == 1.0  # too few for the approximation: nothing is claimed
    assert homogeneity_p([3], [4]) == 1.0


def test_homogeneity_p_is_uniform_under_the_null() -> None:
    """Two samples of one multinomial: P(p < alpha) is about alpha (Kolmogorov-Smirnov against uniform)."""
    rng = random.Random(11)
    weights = [0.3, 0.2, 0.15, 0.1, 0.1, 0.05, 0.05, 0.03, 0.02]
    p_values = []
    for _ in range(2000):
        a = histogram(rng.choices(range(9), weights, k=80), [0.5 + i for i in range(8)])
        b = histogram(rng.choices(range(9), weights, k=120), [0.5 + i for i in range(8)])
        p_values.append(homogeneity_p(a, b))
    assert stats.kstest(p_values, "uniform").pvalue > 0.001
    assert sum(p < 0.05 for p in p_values) / len(p_values) < 0.07


def test_holm_matches_its_definition_and_keeps_the_family_wise_error() -> None:
    assert holm([0.01, 0.04, 0.03, 0.005]) == pytest.approx([0.03, 0.06, 0.06, 0.02])
    assert holm([0.5, 0.9]) == pytest.approx([1.0, 1.0])
    rng = random.Random(5)
    rejections = sum(min(holm([rng.random() for _ in range(15)])) < 0.05 for _ in range(20000))
    assert rejections / 20000 < 0.05 + 0.005


def test_quantile_edges_cut_the_reference_into_equal_bins() -> None:
    values = list(range(1000))
    edges = quantile_edges(values, 10)
    assert edges == [100, 200, 300, 400, 500, 600, 700, 800, 900]
    assert histogram(values, edges) == [100] * 10
    assert quantile_edges([5] * 100, 10) == []  # a constant: one bin
    assert histogram([4, 5, 6], []) == [3]
    assert quantile_edges([0] * 80 + [1] * 20, 10) == [1]
    assert quantile_edges([], 10) == []
