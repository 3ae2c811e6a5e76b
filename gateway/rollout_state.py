"""Rollouts as the serving process sees them: stored rows <-> the state machine's values, and the overlay that
turns the active rollouts into the effective config (weights, the candidate mirrored during the shadow gate).

The serving process's stored-state reader (``read_rollouts``) reads every rollout row every 2 s, hands the
overlay to the gateway, which applies it as a new config generation exactly like a file edit when it
changed, and publishes ``turnout_rollout_step``, ``turnout_rollout_transitions_total`` and friends.

Usage::

    effective = overlay(file_config, await rollouts.load_all(store))
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict
from typing import Any, Protocol

from collectors import rollouts
from collectors.store.base import Store
from collectors.stored_metrics import Snapshot
from gateway.config import Config, Shadow
from policies.rollout import (
    ACTIVE,
    FINAL,
    Plan,
    ShadowGate,
    State,
    candidate_percent,
    effective_weights,
    mirrors_candidate,
)


class _Serving(Protocol):
    def set_overrides(self, rollouts: tuple[rollouts.RolloutRow, ...]) -> None: ...


class ReadContext(Protocol):
    """What ``gateway.stored_state`` hands its readers."""

    @property
    def store(self) -> Store: ...
    @property
    def out(self) -> Snapshot: ...
    @property
    def gateway(self) -> _Serving: ...


def plan_from_config(config: Config, route: str) -> Plan:
    r = config.routes[route]
    ro, a = r.rollout, r.analysis
    if ro is None or a is None:
        raise ValueError(f"routes.{route}: no rollout configured (routes.{route}.rollout and .analysis)")
    g = ro.gates.shadow
    shadow = ShadowGate(g.min_samples, g.min_agreement, g.max_error_rate) if g else None
    return Plan(ro.candidate, a.control, tuple(ro.steps), ro.interval, ro.on_failure, ro.gates.eval is not None,
                shadow, ro.gates.manual)  # fmt: skip


def plan_to_json(plan: Plan) -> dict[str, Any]:
    return asdict(plan)


def plan_of(row: rollouts.RolloutRow) -> Plan:
    p = dict(row.plan)
    shadow = ShadowGate(**p["shadow"]) if p.get("shadow") else None
    return Plan(p["candidate"], p["control"], tuple(p["steps"]), float(p["interval_s"]), p["on_failure"],
                bool(p["eval_gate"]), shadow, bool(p.get("manual_gate", False)))  # fmt: skip


def state_of(row: rollouts.RolloutRow) -> State:
    return State(row.phase, row.step, row.since, row.started_at, row.resume, row.reason)


def row_of(route: str, plan: Plan, state: State, now: float) -> rollouts.RolloutRow:
    return rollouts.RolloutRow(route, plan_to_json(plan), state.phase, state.step, state.since, state.started_at,
                               state.resume, state.reason, now)  # fmt: skip


def overlay(config: Config, rows: Sequence[rollouts.RolloutRow]) -> Config:
    """``config`` with every stored rollout's weights (and shadow-gate mirror) applied to its route."""
    routes = dict(config.routes)
    changed = False
    for row in rows:
        route = routes.get(row.route)
        if route is None:
            continue
        plan, state = plan_of(row), state_of(row)
        if plan.candidate not in route.variants or candidate_percent(plan, state) is None:
            continue
        update: dict[str, Any] = {"variants": effective_weights(route.variants, plan, state)}
        if mirrors_candidate(state) and all(s.upstream != plan.candidate for s in route.shadows):
            update["shadows"] = [*route.shadows, Shadow(upstream=plan.candidate, sample=1.0)]
        routes[row.route] = route.model_copy(update=update)
        changed = True
    return config.model_copy(update={"routes": routes}) if changed else config


async def read_rollouts(ctx: ReadContext) -> None:
    """Apply the stored rollouts to this serving process and export their figures."""
    rows = await rollouts.load_all(ctx.store)
    ctx.gateway.set_overrides(tuple(rows))
    for row in rows:
        plan, state = plan_of(row), state_of(row)
        pct = candidate_percent(plan, state)
        labels = {"route": row.route}
        ctx.out.gauge("rollout_step", "Percent of users on the rollout's candidate now", labels, pct or 0)
        ctx.out.gauge("rollout_active", "1 while a rollout is in a gate, on a step or paused", labels,
                      1.0 if state.phase in ACTIVE else 0.0)  # fmt: skip
        ctx.out.gauge("rollout_awaiting_approval", "1 while the rollout waits for `turnout rollout approve`",
                      labels, 1.0 if state.phase == "awaiting_approval" else 0.0)  # fmt: skip
        ctx.out.gauge("rollout_rolled_back", "1 while the rollout stands rolled back (until the file is rewritten)",
                      labels, 1.0 if state.phase == "rolled_back" else 0.0)  # fmt: skip
        ctx.out.gauge("rollout_last_transition_timestamp_seconds", "When the rollout last changed phase or step",
                      labels, row.updated_at)  # fmt: skip
        ctx.out.gauge("rollout_interval_seconds", "The rollout's step interval", labels, plan.interval_s)
    counts = {(row.route, to): 0 for row in rows for to in (*ACTIVE, *FINAL)}  # known labels start at 0
    counts |= {(route, to): n for route, to, n in await rollouts.transition_counts(ctx.store)}
    for (route, to), count in sorted(counts.items()):
        ctx.out.counter("rollout_transitions_total", "Rollout transitions by the phase they went to",
                        {"route": route, "to": to}, count)  # fmt: skip
