"""What every assertion shares: its spec's base model, the context it runs in, and its result.

Usage: a family module defines ``class Contains(Spec)`` with ``type: Literal["contains"]`` and
``async def contains(spec, answer, ctx) -> Result``; ``assertions/__init__.py`` lists both in its table.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

from pydantic import BaseModel, ConfigDict, Field

from collectors.evals.answer import Answer


class Spec(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    needs_expected: ClassVar[bool] = False  # True on types whose ``value`` defaults to the case's ``expected``

    weight: float = Field(1.0, ge=0.0)


@dataclass(frozen=True)
class Context:
    """What an assertion may use besides the answer: the case's request and expected answer, the judge."""

    request: dict[str, Any]
    expected: Any
    suite_dir: Path
    judge: Callable[[str | None, dict[str, Any]], Awaitable[Answer]] | None = None  # (upstream or None, body)


@dataclass(frozen=True)
class Result:
    type: str
    passed: bool
    score: float  # in [0, 1]
    reason: str  # for a person
    weight: float = 1.0
    error: bool = False  # the assertion could not be evaluated (malformed judge answer, timeout, ...)
    counted: bool = True  # False: left out of the case's score (an uncalibrated judge)

    def to_dict(self) -> dict[str, Any]:
        return {
            "type": self.type,
            "pass": self.passed,
            "score": round(self.score, 6),
            "reason": self.reason,
            "weight": self.weight,
            "error": self.error,
            "counted": self.counted,
        }


def result(spec: Any, passed: bool, score: float, reason: str, *, error: bool = False) -> Result:
    return Result(spec.type, passed, min(1.0, max(0.0, score)), reason, spec.weight, error)


def expected_text(spec: Any, ctx: Context) -> str:
    value = spec.value if getattr(spec, "value", None) is not None else ctx.expected
    return value if isinstance(value, str) else str(value)


def clip(text: str, limit: int = 80) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"
