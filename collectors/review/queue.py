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

from collectors.store.base import FeedbackRow, InteractionRow, Store, same_caller

# one reason per item, the first that applies in this order
REASONS = ("label", "score", "shadow", "sample")
REVIEWABLE = "chat.completions"  # the endpoint whose answers become fine-tuning examples
CHUNK = 500  # ids per IN (...) list

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


async def _callers(store: Store, request_ids: Sequence[str]) -> dict[str, str | None]:
    """request id -> the caller of that reviewable primary interaction, for those stored."""
    found: dict[str, str | None] = {}
    for start in range(0, len(request_ids), CHUNK):
        chunk = request_ids[start : start + CHUNK]
        marks = ", ".join(f"${i}" for i in range(1, len(chunk) + 1))
        rows = await store.fetch(
            "SELECT request_id, caller FROM interactions "
            f"WHERE role = 'primary' AND endpoint = '{REVIEWABLE}' AND request_id IN ({marks})",
            *chunk,
        )
        found.update((str(request_id), caller) for request_id, caller in rows)
    return found


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
    # feedback flags an interaction only from the caller that made it, or from the admin key (same_caller)
    flagged = [(fb, r) for fb in [*known, *feedback] if (r := feedback_reason(fb.label, fb.score, policy))]
    callers = {r.request_id: r.caller for r in primaries}
    asked = {fb.request_id for fb, _ in flagged if fb.request_id is not None} - callers.keys()
    callers.update(await _callers(store, sorted(asked)))
    by_response: dict[str, list[tuple[str | None, str]]] = {}
    for fb, reason in flagged:
        if fb.request_id is not None:
            if fb.request_id in callers and same_caller(fb.caller, callers[fb.request_id]):
                _better(found, fb.request_id, reason)
        elif fb.response_id is not None:
            by_response.setdefault(fb.response_id, []).append((fb.caller, reason))
    if by_response:
        owners: dict[str, list[tuple[str, str | None]]] = {}
        for rid, req, caller in await store.primaries_for(sorted(by_response)):
            owners.setdefault(rid, []).append((req, caller))
        for response_id, given in by_response.items():
            for fb_caller, reason in given:
                # by response id: the latest primary with that id among those this caller may rate
                mine = [req for req, caller in owners.get(response_id, ()) if same_caller(fb_caller, caller)]
                if mine:
                    _better(found, mine[-1], reason)
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
