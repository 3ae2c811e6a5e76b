"""Judge calibration: run the judge on human-labelled examples and pair its verdicts with the people's.

The gold file (JSONL, one example a line): ``messages`` (the conversation), ``output`` (the answer graded),
``rubric``, ``label`` (the person's verdict: true/false, "pass"/"fail", or a score in [0, 1] read as pass at
0.5), optional ``expected`` and ``output_mode`` (``boolean`` or ``score``). The gateway turns the pairs into
Cohen's kappa (``policies.evals``); a malformed or failed judge answer counts as its own label ``error``,
which agrees with no person.

Usage: ``pairs = await judge_pairs(read_gold(path), judge_call, concurrency=8)``.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson

from collectors.evals.answer import Answer
from collectors.evals.assertions.judge import judge_request, parse_verdict


@dataclass(frozen=True)
class GoldExample:
    request: dict[str, Any]
    output: str
    rubric: str
    human: str  # "pass" | "fail"
    mode: str
    expected: Any = None


def _label(value: Any) -> str:
    if isinstance(value, bool):
        return "pass" if value else "fail"
    if isinstance(value, str) and value.lower() in ("pass", "fail"):
        return value.lower()
    if isinstance(value, int | float) and 0 <= value <= 1:
        return "pass" if value >= 0.5 else "fail"
    raise ValueError(f"label must be true/false, pass/fail or a score from 0 to 1, got {value!r}")


def read_gold(path: Path) -> list[GoldExample]:
    """Parse the gold file; raises ValueError naming the line of the first bad example."""
    examples = []
    for number, line in enumerate(path.read_bytes().splitlines(), 1):
        if not line.strip():
            continue
        try:
            data = orjson.loads(line)
            if not isinstance(data, dict):
                raise ValueError("expected a JSON object")
            for key in ("messages", "output", "rubric", "label"):
                if key not in data:
                    raise ValueError(f"missing {key}")
            mode = data.get("output_mode", "boolean")
            if mode not in ("boolean", "score"):
                raise ValueError(f"output_mode must be boolean or score, got {mode!r}")
            examples.append(
                GoldExample(
                    {"messages": data["messages"]},
                    str(data["output"]),
                    str(data["rubric"]),
                    _label(data["label"]),
                    mode,
                    data.get("expected"),
                )
            )
        except (orjson.JSONDecodeError, ValueError) as exc:
            raise ValueError(f"{path} line {number}: {exc}") from None
    if not examples:
        raise ValueError(f"{path}: no labelled examples")
    return examples


async def judge_pairs(
    examples: list[GoldExample], judge: Callable[[dict[str, Any]], Awaitable[Answer]], *, concurrency: int = 8
) -> list[tuple[str, str]]:
    """(human label, judge label) per example, in order; the judge label is ``error`` when it did not say."""
    gate = asyncio.Semaphore(max(1, concurrency))

    async def one(example: GoldExample) -> tuple[str, str]:
        body = judge_request(example.rubric, example.mode, example.request, example.output, example.expected)
        async with gate:
            said = await judge(body)
        if said.error is not None:
            return example.human, "error"
        try:
            score, _ = parse_verdict(example.mode, said.text)
        except ValueError:
            return example.human, "error"
        return example.human, "pass" if score >= (1.0 if example.mode == "boolean" else 0.5) else "fail"

    return list(await asyncio.gather(*(one(e) for e in examples)))
