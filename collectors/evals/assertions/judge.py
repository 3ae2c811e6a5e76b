"""``llm_judge``: a rubric sent to a judge upstream at temperature 0, answered as strict JSON.

The judge must answer with one JSON object: ``{"pass": true|false, "reason": "..."}`` for ``output: boolean``
or ``{"score": 0.0..1.0, "reason": "..."}`` for ``output: score`` (passing at ``threshold``). Anything else
(prose, a missing or mistyped key, a score outside [0, 1]) is an *error* result that fails, never a pass;
so is a judge that times out or answers with an error.

Usage: ``prompt = judge_request(rubric, "boolean", request, answer_text, expected)``; ``verdict(spec, answer)``.
"""

from __future__ import annotations

from typing import Any, Literal

import orjson
from pydantic import Field

from collectors.evals.answer import Answer
from collectors.evals.assertions.base import Context, Result, Spec, clip, result

INSTRUCTIONS = {
    "boolean": 'Reply with only a JSON object {"pass": true or false, "reason": "<one sentence>"}.',
    "score": 'Reply with only a JSON object {"score": <a number from 0 to 1>, "reason": "<one sentence>"}.',
}


class LlmJudge(Spec):
    type: Literal["llm_judge"]
    rubric: str = Field(min_length=1)
    output: Literal["boolean", "score"] = "boolean"
    threshold: float = Field(0.5, ge=0.0, le=1.0)  # for output: score
    upstream: str | None = None  # default: the suite's judge


def _conversation(request: dict[str, Any]) -> str:
    lines = []
    for message in request.get("messages") or []:
        content = message.get("content") if isinstance(message, dict) else None
        text = content if isinstance(content, str) else orjson.dumps(content).decode()
        lines.append(f"{message.get('role', 'user') if isinstance(message, dict) else 'user'}: {text}")
    return "\n".join(lines)


def answer_text(answer: Answer) -> str:
    calls = [f"tool call {c.name}({c.arguments})" for c in answer.tool_calls]
    return "\n".join([answer.text, *calls]).strip()


def judge_request(rubric: str, output: str, request: dict[str, Any], answer: str, expected: Any) -> dict[str, Any]:
    """The chat request sent to the judge for one answer."""
    parts = [f"Rubric:\n{rubric}", f"Conversation:\n{_conversation(request)}", f"Answer to grade:\n{answer}"]
    if expected is not None:
        parts.append(f"Reference answer:\n{expected}")
    system = "You grade an AI assistant's answer against a rubric. " + INSTRUCTIONS[output]
    return {
        "messages": [{"role": "system", "content": system}, {"role": "user", "content": "\n\n".join(parts)}],
        "temperature": 0,
        "response_format": {"type": "json_object"},
    }


def parse_verdict(output: str, text: str) -> tuple[float, str]:
    """(score in [0, 1], reason) from the judge's text; raises ValueError when it is not the promised JSON."""
    try:
        data = orjson.loads(text.strip())
    except orjson.JSONDecodeError:
        raise ValueError(f"not a JSON object: {clip(text, 60)!r}") from None
    if not isinstance(data, dict):
        raise ValueError(f"not a JSON object: {clip(text, 60)!r}")
    reason = data.get("reason", "")
    if not isinstance(reason, str):
        raise ValueError("reason is not a string")
    if output == "boolean":
        verdict = data.get("pass")
        if not isinstance(verdict, bool):
            raise ValueError(f'"pass" must be true or false, got {clip(repr(verdict), 40)}')
        return float(verdict), reason
    score = data.get("score")
    if isinstance(score, bool) or not isinstance(score, int | float) or not 0.0 <= score <= 1.0:
        raise ValueError(f'"score" must be a number from 0 to 1, got {clip(repr(score), 40)}')
    return float(score), reason


async def llm_judge(spec: LlmJudge, answer: Answer, ctx: Context) -> Result:
    if ctx.judge is None:
        return result(spec, False, 0.0, "no judge upstream configured", error=True)
    body = judge_request(spec.rubric, spec.output, ctx.request, answer_text(answer), ctx.expected)
    said = await ctx.judge(spec.upstream, body)
    if said.error is not None:
        return result(spec, False, 0.0, f"judge failed: {said.error}", error=True)
    try:
        score, reason = parse_verdict(spec.output, said.text)
    except ValueError as exc:
        return result(spec, False, 0.0, f"judge answer malformed: {exc}", error=True)
    passed = score >= 1.0 if spec.output == "boolean" else score >= spec.threshold
    prefix = "judge: pass" if passed else "judge: fail"
    detail = f" ({score:.2f})" if spec.output == "score" else ""
    return result(spec, passed, score, f"{prefix}{detail}" + (f": {clip(reason, 160)}" if reason else ""))
