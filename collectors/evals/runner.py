"""Run a suite's cases against one upstream: bounded concurrency, one failed case never aborts the run.

Each case's answer is checked by every assertion; the case *passes* when its call answered and every counted
assertion passed, and its *score* is the weighted mean of the counted assertions' scores (an assertion of
weight 0 is informational: recorded, never counted). An uncalibrated
judge (``judge_counted=False``) still runs and is recorded, but does not count.

Usage::

    results = await run_cases(suite, "prod-v3", call, concurrency=16)
    pass_rate(results)
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from typing import Any

from collectors.evals.answer import Answer, Call, answer_of
from collectors.evals.assertions import check
from collectors.evals.assertions.base import Context, Result
from collectors.evals.assertions.judge import answer_text
from collectors.evals.suite import Case, Suite

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class CaseResult:
    case_id: str
    passed: bool
    score: float
    latency_ms: float
    output: str  # the answer's text and tool calls, as stored
    error: str | None
    assertions: tuple[Result, ...]
    usage: dict[str, int]

    def to_dict(self) -> dict[str, Any]:
        return {
            "case_id": self.case_id,
            "pass": self.passed,
            "score": round(self.score, 6),
            "latency_ms": round(self.latency_ms, 3),
            "output": self.output,
            "error": self.error,
            "assertions": [a.to_dict() for a in self.assertions],
            "usage": self.usage,
        }


def score_case(case_id: str, answer: Answer, results: Sequence[Result]) -> CaseResult:
    counted = [r for r in results if r.counted and r.weight > 0]  # weight 0: shown, never scored
    weight = sum(r.weight for r in counted)
    answered = answer.error is None
    if weight > 0:
        score = sum(r.score * r.weight for r in counted) / weight
    else:
        score = float(answered)
    passed = answered and all(r.passed for r in counted)
    return CaseResult(
        case_id, passed, score, answer.latency_ms, answer_text(answer), answer.error, tuple(results), answer.usage
    )


def pass_rate(results: Sequence[CaseResult]) -> float:
    return sum(r.passed for r in results) / len(results) if results else 0.0


def mean_score(results: Sequence[CaseResult]) -> float:
    return sum(r.score for r in results) / len(results) if results else 0.0


async def run_cases(
    suite: Suite,
    upstream: str,
    call: Call,
    *,
    concurrency: int = 16,
    judge_counted: bool = True,
    on_done: Callable[[CaseResult], None] | None = None,
) -> list[CaseResult]:
    """Every case of ``suite`` against ``upstream``, in the suite's order."""
    gate = asyncio.Semaphore(max(1, concurrency))

    async def judge(name: str | None, body: dict[str, Any]) -> Answer:
        target = name or suite.judge
        if target is None:
            return Answer("", error="no judge upstream")
        return answer_of(await call(target, body))

    async def one(case: Case) -> CaseResult:
        case_id = str(case.id)
        async with gate:
            try:
                outcome = await _run_case(case, upstream, call, judge, suite, judge_counted)
            except Exception as exc:  # one broken case is a failed case, never an aborted run
                log.warning("eval case %s on %s failed: %r", case_id, upstream, exc)
                answer = Answer("", error=f"{type(exc).__name__}: {exc}")
                outcome = score_case(case_id, answer, [])
        if on_done is not None:
            on_done(outcome)
        return outcome

    return list(await asyncio.gather(*(one(c) for c in suite.cases)))


async def _run_case(case: Case, upstream: str, call: Call, judge: Any, suite: Suite, judge_counted: bool) -> CaseResult:
    body = case.body()
    t0 = time.monotonic()
    reply = await call(upstream, body)
    answer = answer_of(reply)
    if not answer.latency_ms:
        answer = replace(answer, latency_ms=(time.monotonic() - t0) * 1000)
    ctx = Context(request=body, expected=case.expected, suite_dir=suite.path.parent, judge=judge)
    results = []
    for spec in case.assertions:
        outcome = await check(spec, answer, ctx)
        if spec.type == "llm_judge" and not judge_counted:
            outcome = replace(outcome, counted=False)
        results.append(outcome)
    return score_case(str(case.id), answer, results)
