"""Cost and speed assertions: ``latency_ms`` (the call's wall time) and ``tokens`` (from the upstream's usage)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from collectors.evals.answer import Answer
from collectors.evals.assertions.base import Context, Result, Spec, result


class LatencyMs(Spec):
    type: Literal["latency_ms"]
    max: float = Field(gt=0)


async def latency_ms(spec: LatencyMs, answer: Answer, ctx: Context) -> Result:
    took = answer.latency_ms
    ok = took <= spec.max
    score = 1.0 if ok else spec.max / took
    return result(spec, ok, score, f"{took:.0f} ms {'<=' if ok else '>'} {spec.max:g} ms")


class Tokens(Spec):
    type: Literal["tokens"]
    kind: Literal["completion", "prompt", "total"] = "completion"
    max: int | None = Field(None, ge=0)
    min: int | None = Field(None, ge=0)

    @model_validator(mode="after")
    def _bound(self) -> Tokens:
        if self.max is None and self.min is None:
            raise ValueError("give max and/or min")
        return self


async def tokens(spec: Tokens, answer: Answer, ctx: Context) -> Result:
    used = answer.usage.get(f"{spec.kind}_tokens")
    if used is None:
        return result(spec, False, 0.0, f"the upstream reported no {spec.kind}_tokens", error=True)
    if spec.max is not None and used > spec.max:
        return result(spec, False, spec.max / used, f"{used} {spec.kind} tokens > {spec.max}")
    if spec.min is not None and used < spec.min:
        return result(spec, False, used / spec.min if spec.min else 0.0, f"{used} {spec.kind} tokens < {spec.min}")
    return result(spec, True, 1.0, f"{used} {spec.kind} tokens within bounds")
