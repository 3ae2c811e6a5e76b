"""Statistics for eval suites: judge agreement (Cohen's kappa) and the paired "not worse" decision.

Pure functions over summary numbers (stdlib only). ``compare`` is the gate a training pipeline calls: the
candidate is *worse* when either paired test rejects "no difference" one-sided at its share of alpha:

- exact McNemar on pass/fail: among the discordant cases (one passed, the other failed), the count the
  baseline alone passed is Binomial(n, 1/2) under "no difference";
- a paired t-test on the per-case scores (scores are in [0, 1], so their differences are bounded and the
  t-test is the usual, robust choice at suite sizes of 30+; below that it is conservative enough for a gate).

Alpha (``1 - confidence``) is split evenly between the two tests (Bonferroni), so an A/A comparison is
declared worse in at most alpha of runs. "Not worse" is therefore the absence of evidence of harm at the
stated confidence, which is what a small suite can show; it is not a proof of equivalence within a margin.

Usage: ``compare(base_pass, cand_pass, base_scores, cand_scores, confidence=0.95).not_worse``.
"""

from __future__ import annotations

import math
from collections.abc import Hashable, Sequence
from dataclasses import dataclass


def cohen_kappa(a: Sequence[Hashable], b: Sequence[Hashable]) -> float:
    """Cohen's kappa of two raters over the same items: (observed - chance agreement) / (1 - chance).

    1.0 when both raters agree perfectly, also when they only ever use one label (no disagreement is possible
    to explain away; scikit-learn returns NaN there, a judge that matches the gold exactly is trustworthy)."""
    if len(a) != len(b):
        raise ValueError(f"raters labelled different numbers of items ({len(a)} and {len(b)})")
    if not a:
        raise ValueError("kappa needs at least one labelled item")
    n = len(a)
    observed = sum(x == y for x, y in zip(a, b, strict=True)) / n
    labels = set(a) | set(b)
    chance = sum((sum(x == label for x in a) / n) * (sum(y == label for y in b) / n) for label in labels)
    if chance >= 1.0:
        return 1.0
    return (observed - chance) / (1.0 - chance)


def binomial_tail(k: int, n: int) -> float:
    """P(X >= k) for X ~ Binomial(n, 1/2), exact."""
    if k <= 0:
        return 1.0
    if k > n:
        return 0.0
    return sum(math.comb(n, i) for i in range(k, n + 1)) / 2.0**n


def mcnemar_exact(b: int, c: int) -> float:
    """Two-sided exact McNemar p-value for ``b`` and ``c`` discordant pairs (as statsmodels' ``exact=True``)."""
    n = b + c
    if n == 0:
        return 1.0
    return min(1.0, 2.0 * binomial_tail(max(b, c), n))


def _betacf(a: float, b: float, x: float) -> float:
    """Continued fraction of the regularized incomplete beta function (modified Lentz)."""
    tiny = 1e-300
    qab, qap, qam = a + b, a + 1.0, a - 1.0
    c, d = 1.0, 1.0 - qab * x / qap
    d = 1.0 / (d if abs(d) > tiny else tiny)
    h = d
    for m in range(1, 300):
        m2 = 2 * m
        aa = m * (b - m) * x / ((qam + m2) * (a + m2))
        d = 1.0 + aa * d
        d = 1.0 / (d if abs(d) > tiny else tiny)
        c = 1.0 + aa / c if abs(1.0 + aa / c) > tiny else tiny
        h *= d * c
        aa = -(a + m) * (qab + m) * x / ((a + m2) * (qap + m2))
        d = 1.0 + aa * d
        d = 1.0 / (d if abs(d) > tiny else tiny)
        c = 1.0 + aa / c if abs(1.0 + aa / c) > tiny else tiny
        delta = d * c
        h *= delta
        if abs(delta - 1.0) < 1e-15:
            break
    return h


def _beta_inc(a: float, b: float, x: float, y: float) -> float:
    """The regularized incomplete beta function I_x(a, b), given x and y = 1 - x (each exact)."""
    if x <= 0.0:
        return 0.0
    if y <= 0.0:
        return 1.0
    log_front = math.lgamma(a + b) - math.lgamma(a) - math.lgamma(b) + a * math.log(x) + b * math.log(y)
    if x < (a + 1.0) / (a + b + 2.0):
        return math.exp(log_front) * _betacf(a, b, x) / a
    return 1.0 - math.exp(log_front) * _betacf(b, a, y) / b


def t_sf(t: float, df: float) -> float:
    """P(T > t) for Student's t with ``df`` degrees of freedom."""
    tail = 0.5 * _beta_inc(df / 2.0, 0.5, df / (df + t * t), t * t / (df + t * t))
    return tail if t >= 0 else 1.0 - tail


@dataclass(frozen=True)
class PairedT:
    mean_diff: float  # candidate minus baseline
    t: float
    df: int
    p_worse: float  # one-sided: evidence that the candidate's scores are lower


def paired_t(baseline: Sequence[float], candidate: Sequence[float]) -> PairedT:
    """Paired t-test of candidate - baseline; ``p_worse`` is the one-sided p-value for "candidate lower"."""
    if len(baseline) != len(candidate):
        raise ValueError("paired scores need the same cases on both sides")
    n = len(baseline)
    diffs = [c - b for b, c in zip(baseline, candidate, strict=True)]
    mean = sum(diffs) / n if n else 0.0
    if n < 2:
        return PairedT(mean, 0.0, max(n - 1, 0), 1.0)
    var = sum((d - mean) ** 2 for d in diffs) / (n - 1)
    if var <= 1e-24:  # every case moved by the same amount (or not at all)
        return PairedT(mean, 0.0 if mean == 0 else math.copysign(math.inf, mean), n - 1, 0.0 if mean < 0 else 1.0)
    t = mean / math.sqrt(var / n)
    return PairedT(mean, t, n - 1, 1.0 - t_sf(t, n - 1))


def t_quantile(p: float, df: float) -> float:
    """The t with P(T <= t) = p for Student's t with ``df`` degrees of freedom (bisection on ``t_sf``)."""
    if not 0.0 < p < 1.0:
        raise ValueError(f"p must be in (0, 1), got {p}")
    lo, hi = -1.0, 1.0
    while t_sf(lo, df) < 1.0 - p:
        lo *= 2
    while t_sf(hi, df) > 1.0 - p:
        hi *= 2
    for _ in range(200):
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if t_sf(mid, df) > 1.0 - p else (lo, mid)
        if hi - lo < 1e-12 * max(1.0, abs(mid)):
            break
    return (lo + hi) / 2


def paired_t_interval(
    baseline: Sequence[float], candidate: Sequence[float], alpha: float
) -> tuple[float, float, float] | None:
    """(mean difference, low, high): the two-sided 1 - alpha paired t-interval of candidate - baseline over the
    same cases; None below two cases. When every case moved by the same amount the interval is that point."""
    if len(baseline) != len(candidate):
        raise ValueError("paired scores need the same cases on both sides")
    n = len(baseline)
    if n < 2:
        return None
    diffs = [c - b for b, c in zip(baseline, candidate, strict=True)]
    mean = sum(diffs) / n
    half = t_quantile(1.0 - alpha / 2, n - 1) * math.sqrt(sum((d - mean) ** 2 for d in diffs) / (n - 1) / n)
    return mean, mean - half, mean + half


@dataclass(frozen=True)
class Decision:
    not_worse: bool
    confidence: float
    cases: int
    baseline_pass_rate: float
    candidate_pass_rate: float
    only_baseline_passed: int  # McNemar b: regressions
    only_candidate_passed: int  # McNemar c: fixes
    mcnemar_p_worse: float  # one-sided exact
    mcnemar_p: float  # two-sided exact, for reporting
    mean_score_diff: float
    t_p_worse: float
    reasons: tuple[str, ...]


def compare(
    base_pass: Sequence[bool],
    cand_pass: Sequence[bool],
    base_scores: Sequence[float],
    cand_scores: Sequence[float],
    *,
    confidence: float = 0.95,
) -> Decision:
    """Paired decision over the same cases: not worse unless a one-sided test at alpha/2 shows harm."""
    if not 0.5 <= confidence < 1.0:
        raise ValueError(f"confidence must be in [0.5, 1), got {confidence}")
    n = len(base_pass)
    if not n or len(cand_pass) != n or len(base_scores) != n or len(cand_scores) != n:
        raise ValueError("a paired comparison needs the same non-empty set of cases on both sides")
    alpha = (1.0 - confidence) / 2.0
    b = sum(1 for x, y in zip(base_pass, cand_pass, strict=True) if x and not y)
    c = sum(1 for x, y in zip(base_pass, cand_pass, strict=True) if y and not x)
    p_mcnemar_worse = binomial_tail(b, b + c) if b + c else 1.0
    t = paired_t(base_scores, cand_scores)
    reasons = []
    if p_mcnemar_worse < alpha:
        reasons.append(
            f"pass/fail: {b} cases regressed and {c} improved (exact McNemar one-sided p={p_mcnemar_worse:.3g}"
            f" < {alpha:.3g})"
        )
    if t.p_worse < alpha:
        reasons.append(f"scores: mean change {t.mean_diff:+.3f} (paired t one-sided p={t.p_worse:.3g} < {alpha:.3g})")
    if not reasons:
        reasons.append(
            f"no evidence the candidate is worse at {confidence:.0%} confidence ({b} regressed, {c} improved,"
            f" mean score change {t.mean_diff:+.3f})"
        )
    return Decision(
        not_worse=p_mcnemar_worse >= alpha and t.p_worse >= alpha,
        confidence=confidence,
        cases=n,
        baseline_pass_rate=sum(map(bool, base_pass)) / n,
        candidate_pass_rate=sum(map(bool, cand_pass)) / n,
        only_baseline_passed=b,
        only_candidate_passed=c,
        mcnemar_p_worse=p_mcnemar_worse,
        mcnemar_p=mcnemar_exact(b, c),
        mean_score_diff=t.mean_diff,
        t_p_worse=t.p_worse,
        reasons=tuple(reasons),
    )
