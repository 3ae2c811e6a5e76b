"""The rollout controller (a job: one runner across replicas) and the actions people take from the CLI.

Each check reads the route's stored state, measures what the current phase needs (the eval gate's
comparison, the shadow comparisons since the gate began, the A/B analysis over the current step) and feeds
it to ``policies.rollout.advance``; a transition is stored with its audit row (who, when, from, to, why, the
figures) in one transaction, so the serving processes pick up the new weights at their next read (2 s) and a
controller killed at any point resumes from the stored state on whichever replica runs the next check. The
check runs every ``min(interval, 10 s)``; one that holds a shadow gate or step logs what holds it, with the
figures (``waiting``: what ``turnout rollout status`` prints too).

Usage::

    rollout_jobs(config)   # the controller jobs, for gateway/jobs.py
    await start(store, config, "support-bot", actor="alice", now=time.time())
"""

from __future__ import annotations

import logging
import os
import socket
from collections.abc import Awaitable, Callable, Mapping
from pathlib import Path
from typing import Any

from collectors import rollouts
from collectors.experiment_data import shadow_stats
from collectors.store.base import Store
from gateway.analysis import SETTLE_S, build_report
from gateway.config import Config
from gateway.rollout_config import Analysis
from gateway.rollout_state import plan_from_config, plan_of, row_of, state_of
from gateway.schedule import Job, JobContext, Schedule
from policies.experiments import SRM_ALPHA
from policies.rollout import (
    ACTIVE,
    Observation,
    Plan,
    ShadowStats,
    State,
    Verdict,
    abort,
    advance,
    approve,
    candidate_percent,
    pause,
)
from policies.rollout import (
    start as start_state,
)

log = logging.getLogger(__name__)

MAX_CHECK_S = 10.0
WAITS_IN = ("shadow", "step")  # the phases whose measurements hold them (logged at each check, shown by status)


class RolloutError(Exception):
    """A rollout action that cannot be taken (nothing to approve, no rollout configured, a race lost)."""


def rollout_jobs(config: Config) -> list[Job]:
    """One controller job per route with a ``rollout``, every ``min(interval, 10 s)``."""
    out = []
    for name, route in config.routes.items():
        if route.rollout is not None and route.analysis is not None:
            every = min(route.rollout.interval, MAX_CHECK_S)
            out.append(Job(f"rollout:{name}", Schedule(every_s=every), _checker(name)))
    return out


def _checker(route: str) -> Callable[[JobContext], Awaitable[None]]:
    async def run(ctx: JobContext) -> None:
        await check(ctx.store, ctx.config, route, now=ctx.now(), config_path=ctx.config_path)

    return run


async def _observe(
    store: Store, config: Config, route: str, plan: Plan, state: State, now: float, config_path: Path | None
) -> tuple[Observation, list[str]]:
    """What the current phase needs measured, and what holds it there (empty when nothing does)."""
    if state.phase == "eval":
        ro = config.routes[route].rollout
        if ro is None or ro.gates.eval is None or config_path is None:
            return Observation(now, eval="skip", eval_reason="no eval suite to run"), []
        from gateway.evals import compare_upstreams  # here: the evals' imports cost every serving process ~50 ms

        suite = config_path.parent / ro.gates.eval
        cmp = await compare_upstreams(config, suite, plan.control, plan.candidate, store, source="rollout")
        return Observation(now, eval="pass" if cmp.not_worse else "fail", eval_reason=cmp.summary), []
    if state.phase == "shadow":
        n, agreement, errors = await shadow_stats(store, route, plan.candidate, state.since)
        need = plan.shadow.min_samples if plan.shadow else 0
        waits = [f"{n} of the {need} shadow comparisons needed"] if n < need else []
        return Observation(now, shadow=ShadowStats(n, agreement, errors)), waits
    report = await build_report(store, config, route, now=now)
    if report["window"]["since"] >= now:  # the window opens SETTLE_S into the step
        waits = [f"the analysis window opens {SETTLE_S:.0f} s into the step, once every replica serves its weights"]
    else:
        waits = step_waits(report, plan, config.routes[route].analysis)
        waits += await _stale(store, route, report["window"]["since"], now) if waits else []
    if now - state.since < plan.interval_s:
        waits.insert(0, f"the step has run {now - state.since:.0f} of its {plan.interval_s:.0f} s")
    breach = report["decision"] == "rollback"
    return Observation(now, analysis=Verdict(breach, not waits and not breach, tuple(report["reasons"]))), waits


async def _stale(store: Store, route: str, since: float, now: float) -> list[str]:
    """A hint when nothing was stored since the window opened: no traffic, or the capture is behind (the
    controller judges only what is stored; a loader that lags the traffic holds every step by its lag)."""
    rows = await store.fetch("SELECT MAX(ts) FROM interactions WHERE route = $1 AND role = 'primary'", route)
    newest = rows[0][0] if rows else None
    if newest is not None and float(newest) >= since:
        return []
    age = "none stored yet" if newest is None else f"the newest is {now - float(newest):.0f} s old"
    return [f"no interaction of the route stored since the window opened ({age}): no traffic, or the capture is "
            "behind (turnout_capture_queue_depth)"]  # fmt: skip


async def waiting(store: Store, config: Config, route: str, *, now: float) -> list[str]:
    """What holds the route's rollout in its shadow gate or current step now (empty when nothing does or
    there is no such phase), as the controller's next check would measure it: for ``turnout rollout status``."""
    row = await rollouts.load(store, route)
    if row is None or row.phase not in WAITS_IN or route not in config.routes:
        return []
    return (await _observe(store, config, route, plan_of(row), state_of(row), now, None))[1]


def step_waits(report: Mapping[str, Any], plan: Plan, a: Analysis | None) -> list[str]:
    """Why the analysis does not let the current step advance (empty when it does), with the figures: too few
    users on an arm, a guardrail not shown within its tolerance, the primary shown worse, a sample-ratio
    mismatch."""
    out = []
    need = a.min_users if a is not None else 0
    users = {v: report["variants"].get(v, {"users": 0})["users"] for v in (plan.candidate, plan.control)}
    if a is None or min(users.values()) < need:
        out.append(f"users {plan.candidate} {users[plan.candidate]}, {plan.control} {users[plan.control]}; "
                   f"{need} each needed")  # fmt: skip
    for c in report["comparisons"]:
        ok = ("safe", "better", "unclear") if c["role"] == "primary" else ("safe",)
        if c["variant"] == plan.candidate and c["verdict"] not in ok:
            shown = f" [{c['low']:+.4f}, {c['high']:+.4f}]" if "low" in c else " (no data)"
            out.append(f"{c['role']} {c['metric']} {c['verdict']}{shown}")
    if report["srm_p"] < SRM_ALPHA:
        shares = ", ".join(f"{v} {n} at {report['weights'].get(v, 0):g} %" for v, n in users.items())
        out.append(f"sample ratio mismatch: p = {report['srm_p']:.2g} < {SRM_ALPHA} (users {shares})")
    return out


def _figures(obs: Observation) -> dict[str, Any]:
    out: dict[str, Any] = {}
    if obs.shadow is not None:
        out["shadow"] = {"samples": obs.shadow.samples, "agreement": obs.shadow.agreement,
                         "error_rate": obs.shadow.error_rate}  # fmt: skip
    if obs.analysis is not None:
        out["analysis"] = {"breach": obs.analysis.breach, "advance": obs.analysis.advance,
                           "reasons": list(obs.analysis.reasons)}  # fmt: skip
    if obs.eval is not None:
        out["eval"] = {"result": obs.eval, "reason": obs.eval_reason}
    return out


async def _store(store: Store, route: str, row: rollouts.RolloutRow | None, plan: Plan, new: State, *,
                 actor: str, now: float, figures: dict[str, Any]) -> State:  # fmt: skip
    old_phase = row.phase if row else "none"
    old_pct = candidate_percent(plan, state_of(row)) if row else None
    audit = rollouts.Audit(route, now, actor, old_phase, old_pct, new.phase, candidate_percent(plan, new),
                           new.reason, figures)  # fmt: skip
    if not await rollouts.save(store, row_of(route, plan, new, now), expect=row, audit=audit):
        raise RolloutError(f"rollout {route}: the stored state changed meanwhile; look again")
    log.info("rollout %s: %s %s -> %s %s by %s: %s", route, old_phase, old_pct, new.phase,
             candidate_percent(plan, new), actor, new.reason)  # fmt: skip
    return new


async def check(
    store: Store, config: Config, route: str, *, now: float, config_path: Path | None = None
) -> State | None:
    """One controller check of ``route``: the stored state after it (None when there is no rollout)."""
    row = await rollouts.load(store, route)
    if row is None or row.phase not in ACTIVE or row.phase == "paused":
        return None if row is None else state_of(row)
    plan, state = plan_of(row), state_of(row)
    obs, waits = await _observe(store, config, route, plan, state, now, config_path)
    new, why = advance(plan, state, obs)
    if why is None:
        if waits and state.phase in WAITS_IN:  # awaiting_approval waits for a person, and says so
            log.info("rollout %s: %s %s waits: %s", route, state.phase, candidate_percent(plan, state),
                     "; ".join(waits))  # fmt: skip
        return state
    actor = f"controller@{socket.gethostname()}:{os.getpid()}"  # which replica's job runner moved it
    return await _store(store, route, row, plan, new, actor=actor, now=now, figures=_figures(obs))


async def start(store: Store, config: Config, route: str, *, actor: str, now: float) -> State:
    plan = plan_from_config(config, route)
    row = await rollouts.load(store, route)
    if row is not None and row.phase in ACTIVE:
        raise RolloutError(f"rollout {route} is already {row.phase}; abort it first")
    new = start_state(plan, now)
    new = State(new.phase, new.step, new.since, new.started_at, reason=f"started by {actor}")
    if row is not None:
        await rollouts.delete(store, route)
    return await _store(store, route, None, plan, new, actor=actor, now=now, figures={})


async def act(store: Store, route: str, action: str, *, actor: str, now: float, reason: str = "") -> State:
    """``approve``, ``pause`` or ``abort`` the route's rollout."""
    row = await rollouts.load(store, route)
    if row is None:
        raise RolloutError(f"route {route} has no rollout; start one with `turnout rollout start {route}`")
    plan, state = plan_of(row), state_of(row)
    why = reason or f"{action} by {actor}"
    new = {"approve": lambda: approve(plan, state, now, why), "pause": lambda: pause(state, now, why),
           "abort": lambda: abort(state, now, why)}[action]()  # fmt: skip
    if new == state:
        raise RolloutError(f"rollout {route} is {state.phase}: nothing to {action}")
    return await _store(store, route, row, plan, new, actor=actor, now=now, figures={})


async def end(store: Store, route: str, *, actor: str, now: float, reason: str) -> None:
    """End any rollout of ``route`` (promote / rollback wrote the file): the file's weights apply again."""
    row = await rollouts.load(store, route)
    if row is None or row.phase == "aborted":
        return
    plan, state = plan_of(row), state_of(row)
    ended = State("aborted", state.step, now, state.started_at, reason=reason)
    await _store(store, route, row, plan, ended, actor=actor, now=now, figures={})
