"""The rollout state machine: state + observation -> next state (and why), like Flagger's scheduler.

Phases in the brief's order: ``eval`` (the suite compares candidate and control) -> ``shadow`` (the candidate
mirrors traffic until ``min_samples`` comparisons, then agreement and error rate are checked) -> ``step``
(A/B at ``steps[i]`` percent of users; each step holds at least ``interval`` and advances only when the
analysis says the candidate is non-inferior with enough users) -> ``succeeded`` at 100 %. With a manual gate
the step that would send everyone to the candidate waits in ``awaiting_approval`` (the step's weight held, its
analysis still watched: a breach fails as on a step) until a person approves. A failed gate or a
guardrail breach goes to ``rolled_back`` (weight 0) or, with ``on_failure: pause``, to ``paused`` (the weight
is held, nothing advances until a person approves, aborts or rolls back). ``aborted`` hands the weights back
to the config file. A gate that is not configured is skipped. Every function is pure: the controller feeds it
what it measured and stores what comes back.

Usage::

    state = start(plan, now)
    state, reason = advance(plan, state, Observation(now, analysis=Verdict(breach=False, advance=True)))
    candidate_percent(plan, state)   # the weight to serve, or None when the file's weights apply
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, replace

ACTIVE = ("eval", "shadow", "step", "awaiting_approval", "paused")
FINAL = ("succeeded", "rolled_back", "aborted")


@dataclass(frozen=True)
class ShadowGate:
    min_samples: int = 200
    min_agreement: float = 0.8
    max_error_rate: float = 0.05


@dataclass(frozen=True)
class Plan:
    candidate: str
    control: str
    steps: tuple[int, ...] = (1, 10, 50, 100)
    interval_s: float = 3600.0
    on_failure: str = "rollback"  # rollback | pause
    eval_gate: bool = False
    shadow: ShadowGate | None = None
    manual_gate: bool = False  # a person approves before the candidate serves everyone


@dataclass(frozen=True)
class State:
    phase: str  # eval | shadow | step | awaiting_approval | paused | succeeded | rolled_back | aborted
    step: int  # index into plan.steps; -1 before the A/B steps
    since: float  # when the current step began (the analysis window starts here; held while awaiting approval)
    started_at: float
    resume: str = ""  # the phase a paused rollout returns to
    reason: str = ""


@dataclass(frozen=True)
class ShadowStats:
    samples: int
    agreement: float
    error_rate: float


@dataclass(frozen=True)
class Verdict:
    """What the A/B analysis says about the candidate over the current step."""

    breach: bool  # a guardrail is beyond its tolerance, or the primary is worse
    advance: bool  # non-inferior on every guardrail, primary not worse, enough users
    reasons: tuple[str, ...] = ()


@dataclass(frozen=True)
class Observation:
    now: float
    eval: str | None = None  # pass | fail | skip (no suite result to read); None: not run yet
    eval_reason: str = ""
    shadow: ShadowStats | None = None
    analysis: Verdict | None = None


def start(plan: Plan, now: float) -> State:
    first = "eval" if plan.eval_gate else ("shadow" if plan.shadow else "step")
    return State(first, 0 if first == "step" else -1, now, now, reason="started")


def _fail(plan: Plan, state: State, now: float, reason: str) -> State:
    if plan.on_failure == "pause":
        return State("paused", state.step, now, state.started_at, resume=state.phase, reason=reason)
    return State("rolled_back", state.step, now, state.started_at, reason=reason)


def _after_eval(plan: Plan, state: State, now: float, reason: str) -> State:
    if plan.shadow:
        return State("shadow", -1, now, state.started_at, reason=reason)
    return State("step", 0, now, state.started_at, reason=reason)


def _eval(plan: Plan, state: State, obs: Observation) -> State:
    if obs.eval is None:
        return state
    if obs.eval == "fail":
        return _fail(plan, state, obs.now, f"eval gate failed: {obs.eval_reason}")
    return _after_eval(
        plan, state, obs.now, f"eval gate {'passed' if obs.eval == 'pass' else 'skipped'}: {obs.eval_reason}"
    )


def _shadow(plan: Plan, state: State, obs: Observation) -> State:
    gate, s = plan.shadow, obs.shadow
    assert gate is not None
    if s is None or s.samples < gate.min_samples:
        return state
    figures = f"{s.samples} comparisons, agreement {s.agreement:.3f}, error rate {s.error_rate:.3f}"
    if s.agreement < gate.min_agreement:
        return _fail(plan, state, obs.now, f"shadow gate failed: agreement below {gate.min_agreement} ({figures})")
    if s.error_rate > gate.max_error_rate:
        return _fail(plan, state, obs.now, f"shadow gate failed: error rate above {gate.max_error_rate} ({figures})")
    return State("step", 0, obs.now, state.started_at, reason=f"shadow gate passed ({figures})")


def _step(plan: Plan, state: State, obs: Observation) -> State:
    a = obs.analysis
    if a is not None and a.breach:
        return _fail(plan, state, obs.now, "guardrail breach: " + "; ".join(a.reasons))
    if obs.now - state.since < plan.interval_s or a is None or not a.advance:
        return state
    why = f"step {plan.steps[state.step]} % passed after {obs.now - state.since:.0f} s"
    if plan.manual_gate and _to_everyone(plan, state.step + 1):
        return replace(state, phase="awaiting_approval", reason=why + "; waiting for approval to serve everyone")
    return _next(plan, state, obs.now, why)


def _to_everyone(plan: Plan, step: int) -> bool:
    return step >= len(plan.steps) or plan.steps[step] >= 100


def _next(plan: Plan, state: State, now: float, why: str) -> State:
    """The step after the current one, or ``succeeded`` when that serves everyone."""
    nxt = state.step + 1
    if nxt >= len(plan.steps):
        return State("succeeded", state.step, now, state.started_at, reason=why + "; every step passed")
    if plan.steps[nxt] >= 100:
        return State("succeeded", nxt, now, state.started_at, reason=why + "; the candidate serves everyone")
    return State("step", nxt, now, state.started_at, reason=why)


def _awaiting(plan: Plan, state: State, obs: Observation) -> State:
    a = obs.analysis
    if a is not None and a.breach:
        return _fail(plan, state, obs.now, "guardrail breach while awaiting approval: " + "; ".join(a.reasons))
    return state


def advance(plan: Plan, state: State, obs: Observation) -> tuple[State, str | None]:
    """The next state for this observation, and the reason when the phase or step changed (else None)."""
    handlers = {"eval": _eval, "shadow": _shadow, "step": _step, "awaiting_approval": _awaiting}
    if state.phase not in handlers:
        return state, None
    nxt = handlers[state.phase](plan, state, obs)
    return (nxt, nxt.reason) if nxt != state else (state, None)


def pause(state: State, now: float, reason: str) -> State:
    if state.phase not in ACTIVE or state.phase == "paused":
        return state
    return State("paused", state.step, now, state.started_at, resume=state.phase, reason=reason)


def approve(plan: Plan, state: State, now: float, reason: str) -> State:
    """Pass the manual gate (the candidate goes on to serve everyone), or resume a paused rollout where it
    stopped (its step timer and analysis window restart)."""
    if state.phase == "awaiting_approval":
        return _next(plan, state, now, reason)
    if state.phase != "paused":
        return state
    return State(state.resume or "step", state.step, now, state.started_at, reason=reason)


def abort(state: State, now: float, reason: str) -> State:
    return state if state.phase in FINAL else replace(state, phase="aborted", since=now, resume="", reason=reason)


def candidate_percent(plan: Plan, state: State) -> int | None:
    """The candidate's share of users now, or None when the config file's weights apply."""
    if state.phase in ("eval", "shadow", "rolled_back"):
        return 0
    if state.phase in ("step", "awaiting_approval", "paused"):
        return plan.steps[state.step] if state.step >= 0 else 0
    if state.phase == "succeeded":
        return 100
    return None


def effective_weights(weights: Mapping[str, float], plan: Plan, state: State) -> dict[str, float]:
    """The file's weights with the candidate at its rollout share; the rest keep their proportions."""
    pct = candidate_percent(plan, state)
    if pct is None or plan.candidate not in weights:
        return dict(weights)
    others = {v: w for v, w in weights.items() if v != plan.candidate}
    total = sum(others.values())
    if total <= 0:  # only the candidate had weight: the control takes the rest
        others = {v: (1.0 if v == plan.control else 0.0) for v in others}
        total = 1.0
    out = {v: (100 - pct) * w / total for v, w in others.items()}
    out[plan.candidate] = float(pct)
    return out


def mirrors_candidate(state: State) -> bool:
    """The candidate is mirrored as a shadow of every request while the shadow gate collects comparisons."""
    return state.phase == "shadow"
