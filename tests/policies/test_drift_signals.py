"""A route's drift check on synthetic traffic: month 6 against month 1 is flagged at the minimum sample size
with the shifted terms named; month 1 resampled 200 times stays quiet (false-alarm rate under 2%)."""

from __future__ import annotations

import random
from typing import Any

import pytest

from collectors.drift.descriptors import describe
from policies.drift import MIN_SAMPLES
from policies.drift_signals import SIGNALS, compare
from tests.drift_traffic import month1, month6

MAX_PSI = 0.2


def _described(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [describe(r["request"], r["response"], r["usage"]) for r in records]


@pytest.fixture(scope="module")
def pool() -> list[dict[str, Any]]:
    return _described(month1(random.Random(1), 3000))


def test_month_six_against_month_one_moves_input_and_names_the_terms(pool: list[dict[str, Any]]) -> None:
    current = _described(month6(random.Random(2), MIN_SAMPLES))
    result = compare(pool[:1000], current, max_psi=MAX_PSI)
    assert result.published and (result.n_reference, result.n_current) == (1000, MIN_SAMPLES)
    moved = {s.signal for s in result.signals if s.moved}
    assert {"prompt_chars", "prompt_tokens", "prompt_terms"} <= moved
    assert result.scores["input"] > MAX_PSI and result.scores["overall"] == result.scores["input"]
    rose, fell = {t.term for t in result.rose}, {t.term for t in result.fell}
    assert {"subscription", "cancel", "premium"} & rose and not rose & {"refund", "shipping", "tracking"}
    assert {"refund", "shipping", "tracking"} & fell and not fell & {"subscription", "cancel", "premium"}
    top = result.rose[0]
    assert top.reference == 0.0 and top.current > 0.4
    chars = next(s for s in result.signals if s.signal == "prompt_chars")
    assert chars.shifts[0].label.startswith("> ") and chars.shifts[0].current > 0.5  # longer than any of month 1


def test_nothing_is_published_below_the_minimum_sample(pool: list[dict[str, Any]]) -> None:
    current = _described(month6(random.Random(3), MIN_SAMPLES - 1))
    result = compare(pool[:1000], current, max_psi=MAX_PSI)
    assert not result.published and result.signals == () and result.scores == {}
    assert compare(pool[: MIN_SAMPLES - 1], pool[:100], max_psi=MAX_PSI).published is False


def test_same_distribution_resampled_false_alarm_rate_under_two_percent(pool: list[dict[str, Any]]) -> None:
    """200 pairs of disjoint samples of month-1 traffic, 50 to 400 interactions a side: an alarm is any
    overall score above max_psi (what TurnoutInputDrift / TurnoutOutputDrift fire on)."""
    rng = random.Random(4)
    alarms = 0
    sizes = [MIN_SAMPLES, 100, 200, 400]
    for i in range(200):
        n_ref, n_cur = sizes[i % 4], sizes[(i // 4) % 4]
        drawn = rng.sample(pool, n_ref + n_cur)
        result = compare(drawn[:n_ref], drawn[n_ref:], max_psi=MAX_PSI)
        assert result.published
        alarms += result.scores["overall"] > MAX_PSI
    assert alarms / 200 < 0.02, alarms


def test_answers_turning_into_refusals_move_the_output_side(pool: list[dict[str, Any]]) -> None:
    records = month1(random.Random(5), 100)
    for r in records[:60]:
        r["response"]["choices"][0]["message"]["content"] = "I'm sorry, but I can't help with that request."
    result = compare(pool[:1000], _described(records), max_psi=MAX_PSI)
    moved = {s.signal for s in result.signals if s.moved}
    assert "answer_refusal" in moved and result.scores["output"] > MAX_PSI
    assert not {name for name in moved if SIGNALS[name][0] == "input"}
    refusal = next(s for s in result.signals if s.signal == "answer_refusal")
    yes = next(b for b in refusal.shifts if b.label == "yes")
    assert yes.reference == 0.0 and yes.current == pytest.approx(0.6)


def test_a_higher_max_psi_keeps_the_same_shift_quiet(pool: list[dict[str, Any]]) -> None:
    current = _described(month6(random.Random(6), 200))
    loud = compare(pool[:1000], current, max_psi=MAX_PSI)
    assert loud.scores["input"] > 3.0
    quiet = compare(pool[:1000], current, max_psi=max(s.score for s in loud.signals) + 0.1)
    assert not any(s.moved for s in quiet.signals) and quiet.scores == loud.scores


def test_a_constant_that_changes_is_seen(pool: list[dict[str, Any]]) -> None:
    """Every month-1 prompt has 2 messages; conversations of 6 land above the reference's maximum."""
    records = month1(random.Random(7), 100)
    for r in records:
        r["request"]["messages"] = r["request"]["messages"] * 3
    result = compare(pool[:1000], _described(records), max_psi=MAX_PSI)
    turns = next(s for s in result.signals if s.signal == "prompt_turns")
    assert turns.moved
    assert {(b.label, b.reference, b.current) for b in turns.shifts} == {("2", 1.0, 0.0), ("> 2", 0.0, 1.0)}
