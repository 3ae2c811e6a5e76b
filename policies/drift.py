"""Distances between two binned distributions, and whether a difference is more than sampling noise.

Pure: stdlib only, deterministic. A drift *score* is the Population Stability Index of the binned descriptor
(reference vs current); for sparse bins (hashed terms) it is the Jensen-Shannon divergence put on the PSI
scale (8 x JS in nats, which equals PSI for small shifts), so one ``max_psi`` threshold covers every signal.
A score only counts once a chi-square test of homogeneity says the two samples differ beyond chance
(Holm-adjusted across a route's signals), because at 50 interactions a side plain PSI of unchanged traffic
is often above 0.2.

Usage::

    edges = quantile_edges(reference_values, 10)
    ref, cur = histogram(reference_values, edges), histogram(current_values, edges)
    psi(ref, cur); js_divergence(ref, cur); homogeneity_p(ref, cur)
    holm([0.001, 0.2, 0.04])  # -> adjusted p-values, same order
"""

from __future__ import annotations

import bisect
import math
from collections.abc import Sequence

MIN_SAMPLES = 50  # interactions on each side before any score is published
ALPHA = 0.01  # family-wise error rate of one route's check
PSI_SMOOTHING = 0.5  # pseudo-count per bin: an empty bin on one side stays finite


def quantile_edges(values: Sequence[float], bins: int) -> list[float]:
    """Cut points at the reference's quantiles (1/bins, 2/bins, ...), duplicates merged: at most ``bins`` bins."""
    if not values:
        return []
    ordered = sorted(values)
    edges: list[float] = []
    for i in range(1, bins):
        cut = ordered[min(len(ordered) - 1, (i * len(ordered)) // bins)]
        if not edges or cut > edges[-1]:
            edges.append(cut)
    if edges and edges[0] <= ordered[0]:
        edges = edges[1:]  # no empty first bin below the minimum
    return edges


def histogram(values: Sequence[float], edges: Sequence[float]) -> list[int]:
    """Counts per bin; bin i holds edges[i-1] <= v < edges[i] (bin 0 below the first edge, the last above all)."""
    counts = [0] * (len(edges) + 1)
    for v in values:
        counts[bisect.bisect_right(edges, v)] += 1
    return counts


def _shares(counts: Sequence[float], smoothing: float) -> list[float]:
    total = sum(counts) + smoothing * len(counts)
    if total <= 0:
        raise ValueError("a distribution needs at least one observation")
    return [(c + smoothing) / total for c in counts]


def psi(reference: Sequence[float], current: Sequence[float], smoothing: float = PSI_SMOOTHING) -> float:
    """Population Stability Index: sum of (cur - ref) * ln(cur / ref) over bins of shares (>= 0, symmetric)."""
    if len(reference) != len(current):
        raise ValueError("both distributions need the same bins")
    p, q = _shares(reference, smoothing), _shares(current, smoothing)
    return sum((b - a) * math.log(b / a) for a, b in zip(p, q, strict=True))


def js_divergence(reference: Sequence[float], current: Sequence[float]) -> float:
    """Jensen-Shannon divergence in nats (0 .. ln 2); empty bins need no smoothing."""
    if len(reference) != len(current):
        raise ValueError("both distributions need the same bins")
    p, q = _shares(reference, 0.0), _shares(current, 0.0)
    total = 0.0
    for a, b in zip(p, q, strict=True):
        m = (a + b) / 2
        if a > 0:
            total += a * math.log(a / m) / 2
        if b > 0:
            total += b * math.log(b / m) / 2
    return max(total, 0.0)


def js_on_psi_scale(reference: Sequence[float], current: Sequence[float]) -> float:
    """8 x JS (nats): equal to PSI to second order for small shifts, bounded (8 ln 2) for disjoint ones."""
    return 8.0 * js_divergence(reference, current)


def homogeneity_p(
    reference: Sequence[float], current: Sequence[float], *, design_effect: float = 1.0, min_expected: float = 5.0
) -> float:
    """p-value of Pearson's chi-square test that both samples come from one distribution over these bins.

    Bins whose pooled count is too small for the chi-square approximation (expected count below
    ``min_expected`` on a side) are merged, smallest first. ``design_effect`` divides the statistic when one
    unit of observation holds several counts (terms of one prompt): a prompt of m terms carries at most m
    times the information of one term, so dividing by the mean m keeps the test conservative."""
    n_ref, n_cur = float(sum(reference)), float(sum(current))
    if n_ref <= 0 or n_cur <= 0:
        return 1.0
    pooled = sorted(zip(reference, current, strict=True), key=lambda rc: rc[0] + rc[1])
    need = min_expected * (n_ref + n_cur) / min(n_ref, n_cur)  # pooled count giving min_expected on the smaller side
    merged: list[list[float]] = []
    pending = [0.0, 0.0]
    for r, c in pooled:
        if r + c == 0:
            continue
        pending = [pending[0] + r, pending[1] + c]
        if sum(pending) >= need:
            merged.append(pending)
            pending = [0.0, 0.0]
    if sum(pending) > 0:
        if merged:
            merged[-1] = [merged[-1][0] + pending[0], merged[-1][1] + pending[1]]
        else:
            merged.append(pending)
    if len(merged) < 2:
        return 1.0
    n = n_ref + n_cur
    statistic = 0.0
    for r, c in merged:
        total = r + c
        for observed, side in ((r, n_ref), (c, n_cur)):
            expected = total * side / n
            statistic += (observed - expected) ** 2 / expected
    return chi2_sf(statistic / max(design_effect, 1.0), len(merged) - 1)


def holm(p_values: Sequence[float]) -> list[float]:
    """Holm's step-down adjustment: reject where adjusted p < alpha keeps the family-wise error rate at alpha."""
    order = sorted(range(len(p_values)), key=lambda i: p_values[i])
    adjusted = [1.0] * len(p_values)
    running = 0.0
    for rank, i in enumerate(order):
        running = max(running, min(1.0, (len(p_values) - rank) * p_values[i]))
        adjusted[i] = running
    return adjusted


def chi2_sf(x: float, df: int) -> float:
    """P(X > x) for X ~ chi-square(df): the regularized upper incomplete gamma Q(df/2, x/2)."""
    if df <= 0:
        raise ValueError("degrees of freedom must be positive")
    if x <= 0:
        return 1.0
    return _gamma_q(df / 2.0, x / 2.0)


def _gamma_q(a: float, x: float) -> float:
    log_front = a * math.log(x) - x - math.lgamma(a)
    if x < a + 1.0:  # series for P, converges fast here
        term = total = 1.0 / a
        ap = a
        for _ in range(1000):
            ap += 1.0
            term *= x / ap
            total += term
            if abs(term) < abs(total) * 1e-15:
                break
        return max(0.0, 1.0 - total * math.exp(log_front))
    # continued fraction for Q (modified Lentz)
    tiny = 1e-300
    b = x + 1.0 - a
    c = 1.0 / tiny
    d = 1.0 / b
    h = d
    for i in range(1, 1000):
        an = -i * (i - a)
        b += 2.0
        d = an * d + b
        d = tiny if abs(d) < tiny else d
        c = b + an / c
        c = tiny if abs(c) < tiny else c
        d = 1.0 / d
        delta = d * c
        h *= delta
        if abs(delta - 1.0) < 1e-15:
            break
    return min(1.0, math.exp(log_front) * h)
