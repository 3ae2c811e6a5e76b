"""A/B analysis over summary numbers: always-valid intervals, the sample-ratio check and the decision rule.

Pure functions over per-variant sums (like GrowthBook's gbstats), so the store aggregates in SQL and this
module never sees a row. The randomisation unit is the user (the sticky key), so every metric is a *ratio of
per-user sums* and its variance comes from the delta method: for user i, ``x_i`` is the metric's numerator
(errors, thumbs up, the sum of scores, the sum of log-latencies) and ``y_i`` its denominator (requests, rated
requests); the estimate is ``sum(x) / sum(y)`` and its variance is the delta-method variance of that ratio
over n independent users. This counts a heavy user's requests as the correlated observations they are.

Each difference from the control gets an asymptotic confidence sequence (Waudby-Smith, Arbour, Sinha,
Kennedy and Ramdas, "Time-uniform central limit theory and asymptotic confidence sequences", Ann. Statist.
2024, Theorem 2.2, the Gaussian-mixture boundary, as GrowthBook uses it): with t the users of both arms,
``estimate +- sqrt(V t) * sqrt(2 (t rho^2 + 1) / (t^2 rho^2) * ln(sqrt(t rho^2 + 1) / alpha))``, where V is the
variance of the difference and rho is tuned to be tightest at ``tuning`` users. It holds at every t at once,
so the report may be read after every user without inflating false decisions.

alpha is split by Bonferroni: half to the primary metric, half shared equally by the guardrails, each share
divided again by the number of candidates compared with the control. A wrong promote needs the primary's
interval to miss the truth, a wrong rollback needs the primary's or a guardrail's to, so together they stay
within alpha. Latency is compared on the mean of log(latency) (the difference is a relative change of the
geometric mean), never on raw means, which a few slow requests dominate.

``primary: eval_score`` takes its evidence from the eval suite instead of traffic: the paired t-interval of the
mean case score, candidate minus control, over the same cases of their newest runs on one suite, at the
primary's share of alpha. It is a fixed-sample interval (the suite does not grow with traffic; a new pair of
runs replaces the old one), so it is combined with the guardrails' always-valid intervals by the same
Bonferroni split: a wrong promote needs it to miss (at most alpha/2), a wrong rollback it or a guardrail's.

Usage::

    d = decide(Settings(control="prod", primary="thumbs_up", guardrails={"error_rate": 0.01}),
               {"prod": {...metric: Sums}, "cand": {...}}, weights={"prod": 50, "cand": 50}, elapsed_s=3600)
    d.decision, d.reasons
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from policies.evals import paired_t_interval

# metric -> +1 when higher is better, -1 when lower is better
METRICS: dict[str, int] = {
    "feedback_score": 1,
    "thumbs_up": 1,
    "task_completed": 1,
    "error_rate": -1,
    "latency": -1,
    "eval_score": 1,  # from the eval suite's paired comparison, not from traffic
}
LATENCY_KEYS = ("latency", "latency_p95")  # guardrail keys compared on log-latency, tolerance relative
SRM_ALPHA = 0.001  # GrowthBook's default: an SRM check that cries wolf blocks good experiments


@dataclass(frozen=True)
class Sums:
    """One metric of one variant: users and the per-user sums of x (numerator) and y (denominator)."""

    users: int
    x: float = 0.0
    y: float = 0.0
    xx: float = 0.0
    yy: float = 0.0
    xy: float = 0.0

    @property
    def mean(self) -> float | None:
        return self.x / self.y if self.y > 0 else None

    def variance_of_mean(self) -> float:
        """Delta-method variance of sum(x)/sum(y) over independent users (sample covariances, n - 1)."""
        n = self.users
        if n < 2 or self.y <= 0:
            return math.inf
        mx, my = self.x / n, self.y / n
        vx = (self.xx - n * mx * mx) / (n - 1)
        vy = (self.yy - n * my * my) / (n - 1)
        cxy = (self.xy - n * mx * my) / (n - 1)
        r = mx / my
        return max((vx - 2 * r * cxy + r * r * vy) / (my * my * n), 0.0)


@dataclass(frozen=True)
class Interval:
    estimate: float  # candidate minus control (log scale for latency)
    low: float
    high: float
    alpha: float


def rho(alpha: float, tuning: float) -> float:
    """The mixture parameter that makes the sequence tightest at ``tuning`` observations (the paper's rule)."""
    a = -2 * math.log(alpha)
    return math.sqrt((a + math.log(a + 1)) / tuning)


def cs_halfwidth(variance: float, t: int, alpha: float, tuning: float) -> float:
    """Half-width at t observations of the two-sided asymptotic CS for a mean whose variance is ``variance``."""
    if t < 1 or not math.isfinite(variance):
        return math.inf
    r2 = rho(alpha, tuning) ** 2
    sigma = math.sqrt(variance * t)  # the per-observation standard deviation
    return sigma * math.sqrt(2 * (t * r2 + 1) / (t * t * r2) * math.log(math.sqrt(t * r2 + 1) / alpha))


def difference(control: Sums, candidate: Sums, alpha: float, tuning: float) -> Interval | None:
    """Always-valid interval for mean(candidate) - mean(control); None while either mean is undefined."""
    mc, mt = control.mean, candidate.mean
    if mc is None or mt is None:
        return None
    est = mt - mc
    half = cs_halfwidth(
        control.variance_of_mean() + candidate.variance_of_mean(), control.users + candidate.users, alpha, tuning
    )
    return Interval(est, est - half, est + half, alpha)


def chi2_sf(x: float, df: int) -> float:
    """P(X > x) for chi-square with ``df`` degrees of freedom (regularised upper incomplete gamma)."""
    if x <= 0:
        return 1.0
    a, z = df / 2, x / 2
    if z < a + 1:  # series for the lower part
        term = total = 1 / a
        k = a
        while abs(term) > abs(total) * 1e-15:
            k += 1
            term *= z / k
            total += term
        return max(0.0, 1 - total * math.exp(-z + a * math.log(z) - math.lgamma(a)))
    # Lentz's continued fraction for the upper part
    b = z + 1 - a
    c, d = 1 / 1e-300, 1 / b
    h = d
    for i in range(1, 10_000):
        an = -i * (i - a)
        b += 2
        d = an * d + b
        d = 1e-300 if abs(d) < 1e-300 else d
        c = b + an / c
        c = 1e-300 if abs(c) < 1e-300 else c
        d = 1 / d
        step = d * c
        h *= step
        if abs(step - 1) < 1e-15:
            break
    return math.exp(-z + a * math.log(z) - math.lgamma(a)) * h


def srm_p_value(users: Mapping[str, int], weights: Mapping[str, float]) -> float:
    """Chi-square goodness of fit of users per variant against the weights (variants with weight > 0)."""
    names = [v for v, w in weights.items() if w > 0]
    total_w = sum(weights[v] for v in names)
    total = sum(users.get(v, 0) for v in names)
    if len(names) < 2 or total == 0:
        return 1.0
    stat = sum((users.get(v, 0) - total * weights[v] / total_w) ** 2 / (total * weights[v] / total_w) for v in names)
    return chi2_sf(stat, len(names) - 1)


@dataclass(frozen=True)
class Settings:
    control: str
    primary: str = "feedback_score"
    guardrails: Mapping[str, float] = field(default_factory=dict)  # metric -> most harm tolerated
    alpha: float = 0.05
    min_users: int = 200  # per variant
    min_duration_s: float = 7 * 86400
    max_duration_s: float = 28 * 86400
    tuning: float = 0.0  # users (both arms) where intervals are tightest; 0: 2 * min_users


@dataclass(frozen=True)
class Comparison:
    variant: str
    metric: str
    role: str  # primary | guardrail
    interval: Interval | None
    tolerance: float  # harm tolerated, on the compared scale (0 for the primary)
    verdict: str  # better | worse | unclear (primary); safe | breach | unclear (guardrail)


@dataclass(frozen=True)
class Decision:
    decision: str  # promote | rollback | continue | inconclusive
    reasons: list[str]
    comparisons: list[Comparison]
    srm_p: float
    winner: str | None = None  # the candidate to promote
    non_inferior: dict[str, bool] = field(default_factory=dict)  # candidate -> safe to send more users


def metric_of(key: str) -> str:
    return "latency" if key in LATENCY_KEYS else key


def _compare(
    variant: str, key: str, role: str, tol: float, c: Sums, t: Sums, alpha: float, tuning: float
) -> Comparison:
    metric = metric_of(key)
    sign = METRICS[metric]
    harm = math.log1p(tol) if metric == "latency" else tol
    iv = difference(c, t, alpha, tuning)
    if iv is None:
        verdict = "unclear"
    else:
        lo, hi = (iv.low, iv.high) if sign > 0 else (-iv.high, -iv.low)  # the improvement's interval
        if role == "primary":
            verdict = "better" if lo > 0 else ("worse" if hi < 0 else "unclear")
        else:
            verdict = "breach" if hi < -harm else ("safe" if lo > -harm else "unclear")
    return Comparison(variant, metric, role, iv, harm if role == "guardrail" else 0.0, verdict)


def _eval_compare(variant: str, pairs: Sequence[tuple[float, float]] | None, alpha: float) -> Comparison:
    """The eval suite's paired comparison (control, candidate case scores) as the primary's comparison."""
    found = paired_t_interval([b for b, _ in pairs], [c for _, c in pairs], alpha) if pairs else None
    if found is None:
        return Comparison(variant, "eval_score", "primary", None, 0.0, "unclear")
    mean, low, high = found
    verdict = "better" if low > 0 else ("worse" if high < 0 else "unclear")
    return Comparison(variant, "eval_score", "primary", Interval(mean, low, high, alpha), 0.0, verdict)


def _describe(c: Comparison) -> str:
    iv = c.interval
    assert iv is not None
    if c.metric == "latency":
        return f"{c.metric} {math.expm1(iv.estimate):+.1%} [{math.expm1(iv.low):+.1%}, {math.expm1(iv.high):+.1%}]"
    return f"{c.metric} {iv.estimate:+.4f} [{iv.low:+.4f}, {iv.high:+.4f}]"


def decide(
    settings: Settings,
    sums: Mapping[str, Mapping[str, Sums]],
    weights: Mapping[str, float],
    elapsed_s: float,
    evals: Mapping[str, Sequence[tuple[float, float]]] | None = None,
) -> Decision:
    """The decision for this experiment now. ``sums[variant][metric]``; users per variant come from the sums;
    with ``primary: eval_score``, ``evals[candidate]`` holds the (control, candidate) score of every case."""
    s = settings
    candidates = [v for v in sums if v != s.control and weights.get(v, 0) > 0]
    users = {v: max((m.users for m in sums[v].values()), default=0) for v in sums}
    srm_p = srm_p_value(users, weights)
    if s.control not in sums or not candidates:
        return Decision(
            "continue", ["no traffic to compare yet: the control and a candidate both need users"], [], srm_p
        )
    tuning = s.tuning or 2 * s.min_users
    k = len(candidates)
    a_primary = s.alpha / 2 / k
    a_guard = s.alpha / 2 / k / max(len(s.guardrails), 1)
    control = sums[s.control]
    comparisons: list[Comparison] = []
    for v in candidates:
        if s.primary == "eval_score":
            comparisons.append(_eval_compare(v, (evals or {}).get(v), a_primary))
        else:
            comparisons.append(
                _compare(
                    v,
                    s.primary,
                    "primary",
                    0.0,
                    control.get(s.primary, Sums(0)),
                    sums[v].get(s.primary, Sums(0)),
                    a_primary,
                    tuning,
                )
            )
        for key, tol in s.guardrails.items():
            m = metric_of(key)
            comparisons.append(
                _compare(v, key, "guardrail", tol, control.get(m, Sums(0)), sums[v].get(m, Sums(0)), a_guard, tuning)
            )
    non_inferior = {
        v: all(c.verdict == "safe" for c in comparisons if c.variant == v and c.role == "guardrail")
        and not any(c.verdict == "worse" for c in comparisons if c.variant == v)
        for v in candidates
    }
    if srm_p < SRM_ALPHA:
        shares = ", ".join(f"{v} {users.get(v, 0)}" for v in weights if weights[v] > 0)
        return Decision(
            "continue",
            [
                f"sample ratio mismatch (p = {srm_p:.2g}; users {shares} against weights "
                f"{dict(weights)}): assignment or logging is broken, no decision until fixed"
            ],
            comparisons,
            srm_p,
            non_inferior={v: False for v in candidates},
        )
    bad = [c for c in comparisons if c.verdict in ("breach", "worse")]
    if bad:
        reasons = [
            f"{c.variant}: {c.metric} is worse than {s.control} beyond what is tolerated: {_describe(c)}" for c in bad
        ]
        return Decision("rollback", reasons, comparisons, srm_p, non_inferior=non_inferior)
    enough = {v: users.get(v, 0) >= s.min_users and users[s.control] >= s.min_users for v in candidates}
    winners = [c for c in comparisons if c.role == "primary" and c.verdict == "better" and non_inferior[c.variant]]
    reasons = []
    if winners and elapsed_s >= s.min_duration_s and any(enough[c.variant] for c in winners):
        best = max(
            (c for c in winners if enough[c.variant]),
            key=lambda c: METRICS[c.metric] * (c.interval.estimate if c.interval else 0),
        )
        return Decision(
            "promote",
            [f"{best.variant}: {_describe(best)} better than {s.control}, every guardrail within its tolerance"],
            comparisons,
            srm_p,
            best.variant,
            non_inferior,
        )
    for v in candidates:
        if not enough[v]:
            reasons.append(
                f"{v}: {users.get(v, 0)} users, {users.get(s.control, 0)} on {s.control}; {s.min_users} each needed"
            )
    if winners and elapsed_s < s.min_duration_s:
        reasons.append(f"ran {elapsed_s / 86400:.1f} of the {s.min_duration_s / 86400:.1f} days required")
    for c in comparisons:
        if c.verdict == "unclear":
            reasons.append(
                f"{c.variant}: {c.metric} not yet "
                + ("shown better or worse" if c.role == "primary" else "shown within its tolerance")
            )
    if elapsed_s >= s.max_duration_s:
        return Decision(
            "inconclusive",
            [f"the maximum duration of {s.max_duration_s / 86400:.1f} days passed without a decision", *reasons],
            comparisons,
            srm_p,
            None,
            non_inferior,
        )
    return Decision("continue", reasons or ["collecting data"], comparisons, srm_p, None, non_inferior)


def users_needed(effect: float, sd: float, alpha: float, tuning: float) -> int:
    """Users per arm (equal split) until the interval's half-width falls below ``effect``: the smallest
    sample at which a true difference of ``effect`` can be declared when the estimate lands on it."""
    lo, hi = 2, 2
    while cs_halfwidth(2 * sd * sd / hi, 2 * hi, alpha, tuning) > effect:
        lo, hi = hi, hi * 2
    while lo < hi:
        mid = (lo + hi) // 2
        if cs_halfwidth(2 * sd * sd / mid, 2 * mid, alpha, tuning) > effect:
            lo = mid + 1
        else:
            hi = mid
    return hi
