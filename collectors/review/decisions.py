"""A person's decisions on queued items: every decision is kept (who, when, what), the latest one wins.

``approve`` and ``edit`` make an item approved (``edit`` with a new answer, which becomes the training answer;
a later ``approve`` keeps it), ``reject`` makes it rejected, ``score`` records a score in [0, 1] (an item nobody
approved or rejected yet becomes ``scored``). Any action may carry a score.

Usage::

    item = await decide(store, item_id, Decision("edit", reviewer="ana", answer="Within 30 days."), now=time.time())
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Any

from collectors.store.base import Store

ACTIONS = ("approve", "reject", "edit", "score")
MAX_ANSWER = 100_000  # characters
MAX_REVIEWER = 100

_RECORD = (
    "INSERT INTO review_decisions (decision_id, item_id, action, answer, score, reviewer, ts) "
    "SELECT CAST($1 AS TEXT), id, CAST($3 AS TEXT), CAST($4 AS TEXT), CAST($5 AS DOUBLE PRECISION), "
    "CAST($6 AS TEXT), CAST($7 AS DOUBLE PRECISION) FROM review_items WHERE id = $2"
)
# the latest decision wins: status from the action, answer only from an edit, score from whichever carried one
_APPLY = (
    "UPDATE review_items SET "
    "status = CASE WHEN $2 IN ('approve', 'edit') THEN 'approved' WHEN $2 = 'reject' THEN 'rejected' "
    "WHEN status = 'pending' THEN 'scored' ELSE status END, "
    "answer = CASE WHEN $2 = 'edit' THEN $3 ELSE answer END, "
    "score = COALESCE($4, score), reviewer = $5, decided_at = $6 WHERE id = $1"
)


class InvalidDecision(ValueError):
    """A decision that cannot be applied (unknown action, a missing answer, a score out of range)."""


@dataclass(frozen=True)
class Decision:
    action: str
    reviewer: str
    answer: str | None = None
    score: float | None = None

    def checked(self) -> Decision:
        """This decision, validated; raises ``InvalidDecision`` with a message a person can act on."""
        if self.action not in ACTIONS:
            raise InvalidDecision(f"action: expected one of {', '.join(ACTIONS)}, got {self.action!r}")
        reviewer = self.reviewer.strip()
        if not reviewer or len(reviewer) > MAX_REVIEWER:
            raise InvalidDecision(f"reviewer: a name of 1 to {MAX_REVIEWER} characters is required")
        if self.action == "edit" and (not isinstance(self.answer, str) or not self.answer.strip()):
            raise InvalidDecision("answer: edit needs the new answer text")
        if self.answer is not None and len(self.answer) > MAX_ANSWER:
            raise InvalidDecision(f"answer: longer than {MAX_ANSWER} characters")
        if self.score is not None and (isinstance(self.score, bool) or not 0 <= self.score <= 1):
            raise InvalidDecision(f"score: expected a number from 0 to 1, got {self.score!r}")
        if self.action == "score" and self.score is None:
            raise InvalidDecision("score: the score action needs a score from 0 to 1")
        answer = self.answer if self.action == "edit" else None
        score = None if self.score is None else float(self.score)
        return Decision(self.action, reviewer, answer, score)


async def decide(store: Store, item_id: str, decision: Decision, *, now: float) -> bool:
    """Record ``decision`` on ``item_id`` and make it the item's current state; False for an unknown item."""
    d = decision.checked()
    changed = await store.transact(
        [
            (_APPLY, (item_id, d.action, d.answer, d.score, d.reviewer, now)),
            (_RECORD, (uuid.uuid4().hex, item_id, d.action, d.answer, d.score, d.reviewer, now)),
        ]
    )
    return changed[0] > 0


async def history(store: Store, item_ids: list[str]) -> dict[str, list[dict[str, Any]]]:
    """Every decision on each item, oldest first."""
    if not item_ids:
        return {}
    marks = ", ".join(f"${i + 1}" for i in range(len(item_ids)))
    rows = await store.fetch(
        f"SELECT item_id, action, answer, score, reviewer, ts FROM review_decisions WHERE item_id IN ({marks}) "
        "ORDER BY ts, decision_id",
        *item_ids,
    )
    found: dict[str, list[dict[str, Any]]] = {}
    for item_id, action, answer, score, reviewer, ts in rows:
        entry = {"action": action, "answer": answer, "score": score, "reviewer": reviewer, "ts": float(ts)}
        found.setdefault(str(item_id), []).append(entry)
    return found
