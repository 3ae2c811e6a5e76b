"""The cost of one answer from its usage and its upstream's price (USD per million tokens).

Usage: ``cost_usd({"prompt_tokens": 10, "completion_tokens": 20}, Price(0.15, 0.6))`` → 1.35e-05; None when
there is no price or no usage. Chat and completions count ``prompt_tokens``/``completion_tokens``, the
Responses API ``input_tokens``/``output_tokens``.
"""

from __future__ import annotations

from typing import Any, NamedTuple


class Price(NamedTuple):
    input_per_1m: float
    output_per_1m: float


def _count(usage: dict[str, Any], *keys: str) -> int:
    for key in keys:
        value = usage.get(key)
        if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
            return value
    return 0


def cost_usd(usage: dict[str, Any] | None, price: Price | None) -> float | None:
    if price is None or not usage:
        return None
    prompt = _count(usage, "prompt_tokens", "input_tokens")
    completion = _count(usage, "completion_tokens", "output_tokens")
    return (prompt * price.input_per_1m + completion * price.output_per_1m) / 1e6
