"""Assertion types, one small module per family, and the table of type -> check function (as promptfoo).

``Assertion`` is the validated spec (a union tagged by ``type``); ``CHECKS[spec.type](spec, answer, ctx)``
returns a ``Result`` with ``score`` in [0, 1], ``passed`` and a ``reason`` a person can read.

Usage: ``result = await check(spec, answer, ctx)``.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Annotated, Any

from pydantic import Field

from collectors.evals.answer import Answer
from collectors.evals.assertions import judge, limits, structured, text
from collectors.evals.assertions.base import Context, Result

Assertion = Annotated[
    text.Equals
    | text.Contains
    | text.Regex
    | text.Similarity
    | structured.IsJson
    | structured.JsonSchema
    | structured.ToolCallSpec
    | judge.LlmJudge
    | limits.LatencyMs
    | limits.Tokens,
    Field(discriminator="type"),
]

CHECKS: dict[str, Callable[[Any, Answer, Context], Awaitable[Result]]] = {
    "equals": text.equals,
    "contains": text.contains,
    "not_contains": text.not_contains,
    "regex": text.regex,
    "not_regex": text.not_regex,
    "similarity": text.similarity,
    "is_json": structured.is_json,
    "json_schema": structured.json_schema,
    "tool_call": structured.tool_call,
    "llm_judge": judge.llm_judge,
    "latency_ms": limits.latency_ms,
    "tokens": limits.tokens,
}


async def check(spec: Any, answer: Answer, ctx: Context) -> Result:
    """Run one assertion; a failed call (no answer) fails every assertion, with the call's error as reason."""
    if answer.error is not None:
        return Result(spec.type, False, 0.0, f"no answer: {answer.error}", spec.weight, error=True)
    return await CHECKS[spec.type](spec, answer, ctx)
