"""Which captured interactions go to a person, and putting them in the review queue (in the capture loader).

An interaction is queued when the ``review`` policy flags it (a feedback label, a low feedback score, a shadow
that disagreed with it) or when its id falls in the random sample. Every decision is a function of the rows
alone (the sample is a hash of the request id, not a random draw), and an item's key is its request id, so the
loader may replay a batch after a crash (its journal checkpoint moves only after this ran) and the queue still
holds each interaction once: queueing is exactly-once without a claim of its own.

Feedback may come before or long after its interaction: a batch's interactions are checked against feedback
already stored, and a batch's feedback against interactions already stored. A flag arriving for an item queued
earlier (for the sample) leaves it as it is; so does one for an item a person already decided.

Usage (the loader's writer calls it after each committed batch)::

    policy = ReviewPolicy(sample=0.02, label="bad", max_score=0.5)
    queued = await enqueue(store, interactions, feedback, policy, now=time.time())
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

import orjson

from collectors.store.base import FeedbackRow, InteractionRow, Store

# one reason per item, the first that applies in this order
REASONS = ("label", "score", "shadow", "sample")
REVIEWABLE = "chat.completions"  # the endpoint whose answers become fine-tuning examples

_QUEUE = (
    "INSERT INTO review_items (id, route, variant, reason, ts, queued_at, status) "
    "SELECT request_id, route, variant, CAST($2 AS TEXT), ts, CAST($3 AS DOUBLE PRECISION), 'pending' "
    "FROM interactions "
    f"WHERE request_id = $1 AND role = 'primary' AND endpoint = '{REVIEWABLE}' "
    "ON CONFLICT (id) DO NOTHING"
)


@dataclass(frozen=True)
class ReviewPolicy:
    sample: float = 0.0
    label: str | None = None
    max_score: float | None = None
    max_shadow_agreement: float | None = None

    @property
    def active(self) -> bool:
        return bool(self.sample or self.label or self.max_score is not None or self.max_shadow_agreement is not None)

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict[str, Any] | None) -> ReviewPolicy:
        return cls(**data) if data else cls()


def sampled(request_id: str, share: float) -> bool:
    """Whether ``request_id`` is in a ``share`` sample: a uniform hash of the id (the same on every replay)."""
    if share <= 0:
        return False
    digest = hashlib.blake2b(request_id.encode(), digest_size=8, person=b"review").digest()
    return int.from_bytes(digest, "big") < share * 2.0**64


def feedback_reason(label: str | None, score: float | None, policy: ReviewPolicy) -> str | None:
    if policy.label is not None and label == policy.label:
        return "label"
    if policy.max_score is not None and score is not None and score <= policy.max_score:
        return "score"
    return None


def _agreement(row: InteractionRow) -> float | None:
    comparison = (orjson.loads(row.record).get("extra") or {}).get("comparison") or {}
    value = comparison.get("similarity")
    return float(value) if isinstance(value, int | float) else None


def _better(found: dict[str, str], request_id: str, reason: str) -> None:
    if request_id not in found or REASONS.index(reason) < REASONS.index(found[request_id]):
        found[request_id] = reason


async def candidates(
    store: Store, interactions: Sequence[InteractionRow], feedback: Sequence[FeedbackRow], policy: ReviewPolicy
) -> dict[str, str]:
    """request id -> reason for every interaction this batch makes reviewable (queued or not yet)."""
    found: dict[str, str] = {}
    primaries = [r for r in interactions if r.role == "primary" and r.endpoint == REVIEWABLE]
    for row in primaries:
        if sampled(row.request_id, policy.sample):
            _better(found, row.request_id, "sample")
    if policy.max_shadow_agreement is not None:
        for row in interactions:
            if row.role == "shadow" and row.parent_id:
                agreement = _agreement(row)
                if agreement is not None and agreement < policy.max_shadow_agreement:
                    _better(found, row.parent_id, "shadow")
    if policy.label is None and policy.max_score is None:
        return found
    # feedback stored before its interaction, plus this batch's own feedback
    known = (
        await store.feedback_for(
            [r.request_id for r in primaries], sorted({r.response_id for r in primaries if r.response_id})
        )
        if primaries
        else []
    )
    by_response: dict[str, str] = {}
    for fb in [*known, *feedback]:
        reason = feedback_reason(fb.label, fb.score, policy)
        if reason is None:
            continue
        if fb.request_id is not None:
            _better(found, fb.request_id, reason)
        elif fb.response_id is not None:
            by_response[fb.response_id] = reason
    if by_response:
        owners = await store.latest_for(sorted(by_response))
        for response_id, reason in by_response.items():
            if response_id in owners:
                _better(found, owners[response_id], reason)
    return found


async def enqueue(
    store: Store,
    interactions: Sequence[InteractionRow],
    feedback: Sequence[FeedbackRow],
    policy: ReviewPolicy,
    *,
    now: float,
) -> int:
    """Queue what this (already committed) batch makes reviewable; returns how many items were new."""
    if not policy.active:
        return 0
    found = await candidates(store, interactions, feedback, policy)
    if not found:
        return 0
    statements: list[tuple[str, Sequence[Any]]] = [
        (_QUEUE, (request_id, reason, now)) for request_id, reason in sorted(found.items())
    ]
    locked = store.name.startswith("postgres")
    if locked:
        # one batch may touch the counts of several routes (review_counts): loaders queue one at a time, so two
        # never lock those rows in opposite orders (a deadlock); SQLite's write lock does this already
        statements.insert(0, ("SELECT pg_advisory_xact_lock(7215103)", ()))
    changed = await store.transact(statements)
    return sum(changed[1:] if locked else changed)
