"""The rollout state machine: gates in order, steps held and advanced only when the analysis allows, failure
handling, pause/approve/abort, and the weights it serves (users stay in the candidate as its share grows)."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from policies.rollout import (
    Observation,
    Plan,
    ShadowGate,
    ShadowStats,
    State,
    Verdict,
    abort,
    advance,
    approve,
    candidate_percent,
    effective_weights,
    mirrors_candidate,
    pause,
    start,
)
from policies.routing import sticky_variant

OK = Verdict(breach=False, advance=True)
WAIT = Verdict(breach=False, advance=False, reasons=("40 users of 200",))
BREACH = Verdict(breach=True, advance=False, reasons=("error_rate +0.2000 [+0.15, +0.25]",))
FULL = Plan("cand", "prod", (1, 10, 50, 100), 60.0, "rollback", eval_gate=True, shadow=ShadowGate(100, 0.8, 0.05))


def test_a_good_candidate_goes_through_the_gates_in_order_to_100_percent() -> None:
    s = start(FULL, 0.0)
    assert s.phase == "eval" and candidate_percent(FULL, s) == 0
    s, why = advance(FULL, s, Observation(1.0))
    assert why is None and s.phase == "eval"  # the eval has not reported yet
    s, why = advance(FULL, s, Observation(2.0, eval="pass", eval_reason="pass rate 0.91 vs 0.88"))
    assert s.phase == "shadow" and mirrors_candidate(s) and "eval gate passed" in (why or "")
    s, why = advance(FULL, s, Observation(3.0, shadow=ShadowStats(99, 1.0, 0.0)))
    assert why is None and s.phase == "shadow"  # not enough comparisons yet
    s, why = advance(FULL, s, Observation(4.0, shadow=ShadowStats(100, 0.9, 0.01)))
    assert (s.phase, s.step, candidate_percent(FULL, s)) == ("step", 0, 1)
    seen = [candidate_percent(FULL, s)]
    now = 4.0
    for _ in range(3):
        s2, why = advance(FULL, s, Observation(now + 30, analysis=OK))
        assert why is None and s2 == s  # held: the interval has not passed
        s2, why = advance(FULL, s, Observation(now + 61, analysis=WAIT))
        assert why is None and s2 == s  # interval passed, but the analysis does not allow it yet
        now += 62
        s, why = advance(FULL, s, Observation(now, analysis=OK))
        assert why is not None
        seen.append(candidate_percent(FULL, s))
    assert seen == [1, 10, 50, 100]
    assert s.phase == "succeeded" and s.started_at == 0.0
    assert advance(FULL, s, Observation(now + 1000, analysis=BREACH)) == (s, None)  # final


def test_a_breach_rolls_back_at_once_even_inside_the_interval() -> None:
    plan = Plan("cand", "prod", (10, 50, 100), 3600.0)
    s = start(plan, 0.0)
    s, _ = advance(plan, s, Observation(3601.0, analysis=OK))
    assert candidate_percent(plan, s) == 50
    s, why = advance(plan, s, Observation(3602.0, analysis=BREACH))
    assert s.phase == "rolled_back" and candidate_percent(plan, s) == 0
    assert why is not None and "guardrail breach" in why and "error_rate" in why
    assert effective_weights({"prod": 100, "cand": 0}, plan, s) == {"prod": 100.0, "cand": 0.0}


def test_on_failure_pause_holds_the_weight_until_approved() -> None:
    plan = Plan("cand", "prod", (10, 50, 100), 10.0, on_failure="pause")
    s = start(plan, 0.0)
    s, _ = advance(plan, s, Observation(5.0, analysis=BREACH))
    assert s.phase == "paused" and s.resume == "step" and candidate_percent(plan, s) == 10
    assert advance(plan, s, Observation(100.0, analysis=OK)) == (s, None)  # nothing advances while paused
    s = approve(plan, s, 200.0, "looked at it: a flaky upstream, fixed")
    assert (s.phase, s.since, candidate_percent(plan, s)) == ("step", 200.0, 10)
    s, _ = advance(plan, s, Observation(205.0, analysis=OK))
    assert candidate_percent(plan, s) == 10  # the step timer restarted at approval
    s, _ = advance(plan, s, Observation(211.0, analysis=OK))
    assert candidate_percent(plan, s) == 50


def test_a_manual_gate_holds_the_last_step_until_a_person_approves() -> None:
    plan = Plan("cand", "prod", (10, 50, 100), 10.0, manual_gate=True)
    s = start(plan, 0.0)
    s, _ = advance(plan, s, Observation(11.0, analysis=OK))
    assert (s.phase, candidate_percent(plan, s)) == ("step", 50)
    s, why = advance(plan, s, Observation(22.0, analysis=OK))
    assert (s.phase, candidate_percent(plan, s), s.since) == ("awaiting_approval", 50, 11.0)  # the step's window
    assert why is not None and "waiting for approval" in why
    for t in (30.0, 1000.0, 10**6):  # however long and however good the figures: it waits for a person
        assert advance(plan, s, Observation(t, analysis=OK)) == (s, None)
    approved = approve(plan, s, 2000.0, "approve by alice")
    assert (approved.phase, candidate_percent(plan, approved)) == ("succeeded", 100)
    assert approved.reason.startswith("approve by alice")
    # a breach while waiting fails as on any step; a pause while waiting comes back to the gate
    failed, why = advance(plan, s, Observation(40.0, analysis=BREACH))
    assert failed.phase == "rolled_back" and "awaiting approval" in (why or "")
    paused = approve(plan, pause(s, 50.0, "by bob"), 60.0, "resume by bob")
    assert (paused.phase, candidate_percent(plan, paused)) == ("awaiting_approval", 50)
    # without 100 in the steps the gate sits before "succeeded" (which serves everyone)
    short = Plan("cand", "prod", (10, 50), 10.0, manual_gate=True)
    s = State("step", 1, 0.0, 0.0)
    s, _ = advance(short, s, Observation(11.0, analysis=OK))
    assert (s.phase, candidate_percent(short, s)) == ("awaiting_approval", 50)
    assert approve(short, s, 12.0, "ok").phase == "succeeded"
    # nothing to approve on an ordinary step
    on_step = State("step", 0, 0.0, 0.0)
    assert approve(plan, on_step, 1.0, "too early") == on_step


def test_failed_gates_follow_on_failure() -> None:
    s = start(FULL, 0.0)
    s, why = advance(FULL, s, Observation(1.0, eval="fail", eval_reason="pass rate 0.70 vs 0.88"))
    assert s.phase == "rolled_back" and "eval gate failed" in (why or "")
    s = State("shadow", -1, 0.0, 0.0)
    low, _ = advance(FULL, s, Observation(1.0, shadow=ShadowStats(100, 0.5, 0.0)))
    assert low.phase == "rolled_back" and "agreement" in low.reason
    errs, _ = advance(FULL, s, Observation(1.0, shadow=ShadowStats(100, 0.95, 0.2)))
    assert errs.phase == "rolled_back" and "error rate" in errs.reason
    skipped, why = advance(FULL, start(FULL, 0.0), Observation(1.0, eval="skip", eval_reason="no evals"))
    assert skipped.phase == "shadow" and "skipped" in (why or "")


def test_gates_not_configured_are_skipped_and_abort_hands_back_the_file() -> None:
    plan = Plan("cand", "prod", (50, 100), 1.0)
    s = start(plan, 0.0)
    assert (s.phase, candidate_percent(plan, s)) == ("step", 50)
    p = pause(s, 1.0, "by alice")
    assert p.phase == "paused"
    a = abort(p, 2.0, "by alice")
    assert a.phase == "aborted" and candidate_percent(plan, a) is None
    assert effective_weights({"prod": 90, "cand": 10}, plan, a) == {"prod": 90, "cand": 10}
    assert abort(a, 3.0, "again") == a


@settings(max_examples=200, deadline=None)
@given(
    st.lists(st.sampled_from(["ok", "wait", "breach", "tick"]), max_size=30),
    st.sampled_from(["rollback", "pause"]),
)
def test_weights_only_grow_until_a_failure_and_always_sum_to_100(events: list[str], on_failure: str) -> None:
    plan = Plan("cand", "prod", (1, 10, 50, 100), 10.0, on_failure)
    s = start(plan, 0.0)
    now, last = 0.0, 1
    for e in events:
        now += 11.0 if e == "tick" else 1.0
        s, _ = advance(plan, s, Observation(now, analysis={"ok": OK, "wait": WAIT, "breach": BREACH}.get(e)))
        pct = candidate_percent(plan, s)
        assert pct is not None
        w = effective_weights({"prod": 100, "cand": 0, "other": 0}, plan, s)
        assert abs(sum(w.values()) - 100) < 1e-9 and w["cand"] == pct
        if s.phase == "rolled_back":
            assert pct == 0
            break
        assert pct >= last
        last = pct


def test_candidate_users_stay_in_the_candidate_as_its_share_grows() -> None:
    plan = Plan("cand", "prod", (1, 10, 50, 100), 1.0)
    users = [f"user-{i}" for i in range(20_000)]
    groups = []
    for i in range(3):
        w = effective_weights({"prod": 100, "cand": 0}, plan, State("step", i, 0.0, 0.0))
        groups.append({u for u in users if sticky_variant("v4-ab", u, w) == "cand"})
    assert groups[0] <= groups[1] <= groups[2]
    assert 100 < len(groups[0]) < 300 and 1700 < len(groups[1]) < 2300 and 9600 < len(groups[2]) < 10_400
    # a rollback returns exactly the candidate's users to the control; nobody else moves
    back = effective_weights({"prod": 100, "cand": 0}, plan, State("rolled_back", 2, 0.0, 0.0))
    assert all(sticky_variant("v4-ab", u, back) == "prod" for u in users)
