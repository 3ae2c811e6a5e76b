"""Synthetic support traffic for drift tests: month 1 asks short questions about refunds and deliveries,
month 6 asks longer ones about subscriptions and plans (a different vocabulary and length), with answers.

Usage: ``month1(random.Random(1), 200)`` -> list of ``{"request", "response", "usage"}`` dicts;
``month6(...)`` the same shape; ``mixed(rng, n, share)`` draws month 6 with probability ``share``;
``stored_rows(records, route=..., upstream=..., start=..., end=..., rng=...)`` -> store rows.
"""

from __future__ import annotations

import random
from typing import Any

import orjson

from collectors.store.base import InteractionRow

_COMMON = ["order", "account", "help", "support", "email", "today", "question", "website", "team", "number"]
_MONTH1 = ["refund", "return", "shipping", "delivery", "package", "damaged", "tracking", "parcel", "courier",
           "arrived", "broken", "replacement", "exchange", "warehouse", "lost"]  # fmt: skip
_MONTH6 = ["subscription", "cancel", "renewal", "plan", "upgrade", "invoice", "premium", "billing", "trial",
           "downgrade", "annual", "monthly", "charged", "seats", "license"]  # fmt: skip
_OPENERS = ["Hi", "Hello", "Hey there", "Good morning"]
_ANSWERS = [
    "Thanks for reaching out. I have looked into your {w} and it is sorted now.",
    "Sure, here is how the {w} works: open your account page and follow the steps.",
    "I understand. Your {w} request has been forwarded to our team, expect an email today.",
]


def _sentence(rng: random.Random, topical: list[str]) -> str:
    words = [rng.choice(topical) if rng.random() < 0.5 else rng.choice(_COMMON) for _ in range(rng.randint(5, 9))]
    return " ".join(words).capitalize() + rng.choice([".", "?", "!"])


def _interaction(rng: random.Random, topical: list[str], sentences: tuple[int, int], system: str) -> dict[str, Any]:
    text = f"{rng.choice(_OPENERS)}! " + " ".join(_sentence(rng, topical) for _ in range(rng.randint(*sentences)))
    answer = rng.choice(_ANSWERS).format(w=rng.choice(topical))
    return {
        "request": {
            "model": "support-bot",
            "messages": [{"role": "system", "content": system}, {"role": "user", "content": text}],
        },
        "response": {
            "id": "chatcmpl-x",
            "object": "chat.completion",
            "model": "support-v3",
            "choices": [{"index": 0, "message": {"role": "assistant", "content": answer}, "finish_reason": "stop"}],
        },
        "usage": {"prompt_tokens": len(text) // 4, "completion_tokens": len(answer) // 4},
    }


SYSTEM = "You are the support assistant of Acme. Be brief and friendly."


def month1(rng: random.Random, n: int) -> list[dict[str, Any]]:
    return [_interaction(rng, _MONTH1, (1, 2), SYSTEM) for _ in range(n)]


def month6(rng: random.Random, n: int) -> list[dict[str, Any]]:
    return [_interaction(rng, _MONTH6, (3, 5), SYSTEM) for _ in range(n)]


def mixed(rng: random.Random, n: int, share: float) -> list[dict[str, Any]]:
    """Month-1 traffic where each interaction is a month-6 one with probability ``share``."""
    return [month6(rng, 1)[0] if rng.random() < share else month1(rng, 1)[0] for _ in range(n)]


def stored_rows(
    records: list[dict[str, Any]], *, route: str, upstream: str, start: float, end: float, rng: random.Random
) -> list[InteractionRow]:
    """Store rows of ``records`` (primaries of ``route`` answered by ``upstream``) at times spread over
    [start, end), as the capture loader writes them."""
    rows = []
    for i, r in enumerate(records):
        ts = start + (end - start) * i / max(len(records), 1)
        request_id = f"{rng.getrandbits(128):032x}"
        record = {"request_id": request_id, "ts": ts, "route": route, "variant": upstream, "role": "primary",
                  "upstream": upstream, **r}  # fmt: skip
        text = orjson.dumps(record).decode()
        row = (request_id, ts, route, route, upstream, "primary", None, upstream, "chat.completions", 200, "ok")
        rows.append(InteractionRow(*row, 10.0, None, False, None, text))
    return rows
