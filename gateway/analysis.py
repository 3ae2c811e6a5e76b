"""The experiment report: reads the per-user sums from the store, runs the analysis in ``policies.experiments``
and shapes the result for the terminal, ``--json`` and ``--html``.

The window is the whole experiment (its ``experiment`` name on the route) unless a rollout is on a step, whose
weights are then the ones in force since the step began; the window opens ``SETTLE_S`` after the step's start,
once every replica serves the step's weights (they must be constant over the window for the sample-ratio check
to mean anything: a user still sent to the control in the seconds a replica takes to apply the step would be
counted on both sides, and at a few hundred requests a second that alone fails the check).

Usage::

    report = await build_report(store, config, "support-bot", now=time.time())
    report["decision"], report["reasons"]
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from typing import Any

from collectors import rollouts
from collectors.evals.store import Pair, latest_pair
from collectors.experiment_data import VariantData, variant_sums
from collectors.store.base import Store
from gateway.config import Config
from gateway.rollout_state import plan_of, state_of
from policies.experiments import Decision, Settings, Sums, decide, metric_of
from policies.rollout import State, candidate_percent, effective_weights

SETTLE_S = 5.0  # each serving process reads rollout state every 2 s and applies it at once: 5 s covers every replica


def settings_for(config: Config, route: str) -> Settings:
    r = config.routes[route]
    a = r.analysis
    if a is None:
        control = max(r.variants, key=lambda v: r.variants[v])
        return Settings(control=control)
    return Settings(
        a.control,
        a.primary,
        {str(k): v for k, v in a.guardrails.items()},
        a.alpha,
        a.min_users,
        a.min_duration,
        a.max_duration,
    )


def _sums(raw: Mapping[str, Mapping[str, tuple[int, float, float, float, float, float]]]) -> dict[str, dict[str, Sums]]:
    return {v: {m: Sums(*t) for m, t in metrics.items()} for v, metrics in raw.items()}


async def window(store: Store, config: Config, route: str, now: float) -> tuple[float, float, dict[str, float], str]:
    """(since, until, the weights in force, what the window is) for the route now: the current step of a
    rollout, the last step of a finished one (what the controller judged), else the whole experiment."""
    weights = dict(config.routes[route].variants)
    row = await rollouts.load(store, route)
    if row is not None and row.phase not in ("eval", "shadow"):
        plan, state = plan_of(row), state_of(row)
        if row.phase in ("step", "awaiting_approval", "paused") and plan.candidate in weights:
            pct = candidate_percent(plan, state)
            since = min(row.since + SETTLE_S, now)
            return since, now, effective_weights(weights, plan, state), f"rollout step {pct} % (current)"
        # finished (succeeded, rolled back, or ended by promote/rollback): the last step, until what ended it
        trail = [a for a in await rollouts.audit_log(store, route, limit=200) if a.ts >= row.started_at]
        i = next((i for i, a in enumerate(trail) if a.to_phase == "step"), None)  # newest first
        if i is not None and i > 0 and plan.candidate in weights:
            last, ended = trail[i], trail[i - 1]
            at = State("step", plan.steps.index(last.to_percent or 0), last.ts, row.started_at)
            what = f"rollout step {last.to_percent} % (the last one, before {ended.to_phase.replace('_', ' ')})"
            return min(last.ts + SETTLE_S, ended.ts), ended.ts, effective_weights(weights, plan, at), what
    first = await store.fetch(
        "SELECT MIN(ts) FROM interactions WHERE route = $1 AND experiment = $2 AND role = 'primary'",
        route,
        config.experiment(route),
    )
    since = float(first[0][0]) if first and first[0][0] is not None else now
    return since, now, weights, "the whole experiment"


def _figures(sums: Mapping[str, Sums], quantiles: Mapping[str, float], cost: tuple[float, int]) -> dict[str, Any]:
    def mean(m: str) -> float | None:
        s = sums.get(m)
        return None if s is None else s.mean

    lat = mean("latency")
    users = sums["requests"].users if "requests" in sums else 0
    return {
        "users": users,
        "requests": int(sums["requests"].x) if "requests" in sums else 0,
        "error_rate": mean("error_rate"),
        "latency_geomean_ms": None if lat is None else math.exp(lat),
        "latency_p50_ms": quantiles.get("p50"),
        "latency_p95_ms": quantiles.get("p95"),
        "feedback_score": mean("feedback_score"),
        "ratings": int(sums["feedback_score"].y) if "feedback_score" in sums else 0,
        "thumbs_up": mean("thumbs_up"),
        "task_completed": mean("task_completed"),
        "tokens_per_request": mean("tokens"),
        # over the requests whose cost is known (a model without a price has none): None when none is
        "cost_usd": cost[0] if cost[1] else None,
        "cost_per_request_usd": cost[0] / cost[1] if cost[1] else None,
    }


def _comparison(c: Any) -> dict[str, Any]:
    iv = c.interval
    out = {"variant": c.variant, "metric": c.metric, "role": c.role, "verdict": c.verdict, "tolerance": c.tolerance}
    if iv is not None:
        out |= {"difference": iv.estimate, "low": iv.low, "high": iv.high, "alpha": iv.alpha}
    return out


def _series(
    data: VariantData, settings: Settings, weights: Mapping[str, float], since: float, evals: Mapping[str, Pair]
) -> list[dict[str, Any]]:
    """The decision's comparisons at each snapshot in time (for the report's charts)."""
    points = []
    for t, raw in zip(data.times, data.snapshots, strict=True):
        if not raw:
            continue
        d = decide(settings, _sums(raw), weights, t - since, {v: p.scores for v, p in evals.items()})
        users = {v: m["requests"][0] for v, m in raw.items()}
        points.append({"t": t, "users": users, "comparisons": [_comparison(c) for c in d.comparisons]})
    return points


async def build_report(
    store: Store,
    config: Config,
    route: str,
    *,
    now: float,
    series: bool = False,
    client: str | None = None,
    on_query: Callable[[], None] = lambda: None,
) -> dict[str, Any]:
    """The report; ``series`` adds the comparisons at points in time (for charts: a second, heavier query);
    ``client`` limits it to that named client's interactions (the window stays the experiment's);
    ``on_query`` is called as each of the large queries completes (``queries(series)``)."""
    settings = settings_for(config, route)
    since, until, weights, what = await window(store, config, route, now)
    data = await variant_sums(
        store,
        route,
        config.experiment(route),
        since=since,
        until=until + 1e-3,
        series=series,
        client=client,
        on_query=on_query,
    )
    final = _sums(data.final)
    evals = await _eval_pairs(store, settings, weights) if settings.primary == "eval_score" else {}
    decision: Decision = decide(settings, final, weights, until - since, {v: p.scores for v, p in evals.items()})
    reasons = list(decision.reasons)
    for v in sorted(weights):
        if settings.primary == "eval_score" and v != settings.control and weights[v] > 0 and v not in evals:
            reasons.insert(0, f"{v}: no complete eval runs of {v} and {settings.control} on one suite to "
                              "compare (`turnout eval compare`, a rollout's eval gate or an `evals:` schedule "
                              "stores them)")  # fmt: skip
    return {
        "route": route,
        "experiment": config.experiment(route),
        "client": client,
        "window": {"since": since, "until": until, "what": what},
        "weights": weights,
        "settings": {
            "control": settings.control,
            "primary": settings.primary,
            "guardrails": {metric_of(k): v for k, v in settings.guardrails.items()},
            "alpha": settings.alpha,
            "min_users": settings.min_users,
            "min_duration_s": settings.min_duration_s,
            "max_duration_s": settings.max_duration_s,
        },
        "variants": {
            v: _figures(final[v], data.latency_quantiles.get(v, {}), data.cost.get(v, (0.0, 0))) for v in sorted(final)
        },
        "srm_p": decision.srm_p,
        "comparisons": [_comparison(c) for c in decision.comparisons],
        "decision": decision.decision,
        "winner": decision.winner,
        "reasons": reasons,
        "evals": {v: _eval_figures(p) for v, p in evals.items()},
        "series": _series(data, settings, weights, since, evals),
        "series_share": data.series_share,
    }


async def _eval_pairs(store: Store, settings: Settings, weights: Mapping[str, float]) -> dict[str, Pair]:
    """Each candidate's newest eval runs against the control's on one suite (``primary: eval_score``)."""
    out = {}
    for v in sorted(weights):
        if v != settings.control and weights[v] > 0:
            pair = await latest_pair(store, settings.control, v)
            if pair is not None and pair.scores:
                out[v] = pair
    return out


def _eval_figures(pair: Pair) -> dict[str, Any]:
    control, candidate = pair.means
    return {"suite": pair.suite, "cases": len(pair.scores), "control_run": pair.baseline_run,
            "candidate_run": pair.candidate_run, "finished": pair.finished, "control_score": control,
            "candidate_score": candidate}  # fmt: skip


def render_table(report: Mapping[str, Any]) -> str:
    """The report for a terminal."""
    who = f", client {report['client']}" if report.get("client") else ""
    lines = [f"experiment {report['experiment']} on route {report['route']} ({report['window']['what']}{who})", ""]
    head = f"{'variant':<16}{'weight':>8}{'users':>9}{'requests':>10}{'errors':>9}{'p50 ms':>9}{'p95 ms':>9}"
    head += f"{'score':>8}{'thumbs':>8}{'done':>8}{'tokens':>8}{'cost $':>11}{'$/request':>11}"
    lines.append(head)

    def f(x: Any, spec: str) -> str:
        return "-" if x is None else format(x, spec)

    for v, m in report["variants"].items():
        lines.append(
            f"{v:<16}{report['weights'].get(v, 0):>8.1f}{m['users']:>9}{m['requests']:>10}"
            f"{f(m['error_rate'], '.2%'):>9}{f(m['latency_p50_ms'], '.0f'):>9}{f(m['latency_p95_ms'], '.0f'):>9}"
            f"{f(m['feedback_score'], '.3f'):>8}{f(m['thumbs_up'], '.1%'):>8}{f(m['task_completed'], '.1%'):>8}"
            f"{f(m['tokens_per_request'], '.0f'):>8}{f(m['cost_usd'], '.4f'):>11}"
            f"{f(m['cost_per_request_usd'], '.6f'):>11}"
        )
    lines += ["", f"sample ratio check: p = {report['srm_p']:.3g}", ""]
    for v, e in report.get("evals", {}).items():
        lines.append(f"eval_score of {v} vs control on suite {e['suite']} ({e['cases']} cases, runs "
                     f"{e['control_run']} / {e['candidate_run']}): {e['candidate_score']:.3f} vs "
                     f"{e['control_score']:.3f}")  # fmt: skip
    lines += [""] if report.get("evals") else []
    for c in report["comparisons"]:
        if "difference" not in c:
            lines.append(f"{c['variant']} vs control, {c['metric']} ({c['role']}): no data yet")
            continue
        scale = (lambda x: f"{math.expm1(x):+.1%}") if c["metric"] == "latency" else (lambda x: f"{x:+.4f}")
        lines.append(
            f"{c['variant']} vs control, {c['metric']} ({c['role']}): {scale(c['difference'])} "
            f"[{scale(c['low'])}, {scale(c['high'])}] -> {c['verdict']}"
        )
    lines += ["", f"decision: {report['decision'].upper()}" + (f" {report['winner']}" if report["winner"] else "")]
    lines += [f"  - {r}" for r in report["reasons"]]
    return "\n".join(lines) + "\n"
