"""The Store interface both backends implement, the row shapes, and the feedback join done on read.

A store keeps two tables: ``interactions`` (one row per request id, idempotent inserts so replaying a
journal gives exactly-once) and ``feedback`` (one row per feedback id, keyed to an interaction by
``request_id`` or by the upstream ``response_id``; joined when read, so feedback may land first).

Usage::

    store = open_store("sqlite:///turnout.db")   # collectors.store.open_store
    await store.open()                            # connects and applies migrations
    claimed = await store.write(rows, feedback)   # one transaction; raises StoreUnavailable on outage
    async for it in joined(store, Query(route="support-bot")): ...
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple, Protocol

import orjson


class StoreUnavailable(Exception):
    """The store cannot be reached or refuses writes as a whole (down, locked, read-only, disk full)."""


class InteractionRow(NamedTuple):
    request_id: str
    ts: float
    route: str
    experiment: str
    variant: str
    role: str
    parent_id: str | None
    upstream: str
    endpoint: str
    status: int
    outcome: str
    latency_ms: float
    ttft_ms: float | None
    stream: bool
    response_id: str | None  # a primary's upstream answer id (feedback by response id); None for a shadow
    record: str  # the whole interaction as JSON text
    # read out of the record by the writer, for the experiment analysis's SQL (migration 6)
    unit: str | None = None  # the experiment unit: a hash of the sticky key, else the request id
    tokens: float | None = None  # usage.total_tokens
    similarity: float | None = None  # a shadow's agreement with its primary
    client: str | None = None  # the named client that sent it
    tags: str | None = None  # its tags as a JSON array (x-turnout-tags)
    cost_usd: float | None = None
    caller: str | None = None  # keyed hash of who made the request, "*" for the admin key, None before release 2


class FeedbackRow(NamedTuple):
    feedback_id: str
    ts: float
    request_id: str | None
    response_id: str | None
    score: float | None
    label: str | None
    record: str  # the whole feedback object as JSON text
    task_completed: int | None = None  # 1, 0 or not said
    caller: str | None = None  # keyed hash of who gave it, "*" for the admin key, None before release 2


class Claimed(NamedTuple):
    """Feedback joined to its interaction for the first time (counted once in the feedback metrics)."""

    route: str
    variant: str
    label: str | None
    score: float | None


@dataclass(frozen=True)
class Query:
    route: str | None = None
    since: float | None = None  # unix seconds
    role: str | None = None
    client: str | None = None  # only this named client's
    tag: str | None = None  # only rows carrying this tag


class Store(Protocol):
    name: str  # for logs: the backend and where, never a password

    async def open(self) -> None: ...

    async def close(self) -> None: ...

    async def write(self, interactions: Sequence[InteractionRow], feedback: Sequence[FeedbackRow]) -> list[Claimed]:
        """Insert both lists in one transaction (existing ids are left alone) and claim joinable feedback."""
        ...

    async def page(self, query: Query, after: tuple[float, str] | None, limit: int) -> list[InteractionRow]:
        """Interactions matching ``query`` ordered by (ts, request_id), strictly after ``after``."""
        ...

    async def feedback_for(self, request_ids: Sequence[str], response_ids: Sequence[str]) -> list[FeedbackRow]:
        """Feedback keyed by one of the request ids, or by one of the response ids without a request id."""
        ...

    async def latest_for(self, response_ids: Sequence[str]) -> dict[str, str]:
        """response_id -> request_id of the latest primary interaction carrying it (whoever made it)."""
        ...

    async def primaries_for(self, response_ids: Sequence[str]) -> list[tuple[str, str, str | None]]:
        """(response_id, request_id, caller) of every primary interaction carrying one of them, oldest first."""
        ...

    async def delete_expired(self, cutoff: float, route: str | None, keep_routes: Sequence[str], limit: int) -> int:
        """Delete up to ``limit`` interactions older than ``cutoff`` (of ``route``, or of every route not in
        ``keep_routes`` when ``route`` is None) with their feedback; returns how many were deleted."""
        ...

    async def delete_orphan_feedback(self, cutoff: float, limit: int) -> int: ...

    # The SQL seam for the retraining loop's own tables (evals, review, datasets, rollouts, jobs, drift):
    # statements are written once with ``$1, $2, ...`` placeholders and run on either backend.
    async def fetch(self, sql: str, *args: Any) -> list[tuple[Any, ...]]:
        """Rows of one query, as tuples."""
        ...

    async def execute(self, sql: str, *args: Any) -> int:
        """Run one statement in its own transaction; returns the rows it changed."""
        ...

    async def executemany(self, sql: str, rows: Sequence[Sequence[Any]]) -> None:
        """Run one statement for each of ``rows``, all in one transaction."""
        ...

    async def transact(self, statements: Sequence[tuple[str, Sequence[Any]]]) -> list[int]:
        """Run several statements in one transaction; returns the rows each changed."""
        ...


ADMIN_CALLER = "*"
# the SQL form of ``same_caller`` (feedback f, interaction i), the same on both backends
SAME_CALLER_SQL = "(f.caller = '*' OR COALESCE(f.caller, '') = COALESCE(i.caller, ''))"


def same_caller(feedback_caller: str | None, interaction_caller: str | None) -> bool:
    """Feedback joins an interaction only from the caller that made it, or from the admin key; feedback and
    interactions stored before callers were recorded (both None) keep joining each other."""
    return feedback_caller == ADMIN_CALLER or feedback_caller == interaction_caller


def feedback_summary(feedback: list[dict[str, Any]]) -> tuple[str | None, float | None, dict[str, Any] | None]:
    """The latest label, the latest score and the latest correction (feedback is oldest first)."""
    label = score = correction = None
    for fb in feedback:
        label = fb.get("label") or label
        score = fb["score"] if fb.get("score") is not None else score
        correction = fb.get("correction") or correction
    return label, score, correction


async def joined(store: Store, query: Query, page_size: int = 500) -> AsyncIterator[dict[str, Any]]:
    """Every interaction matching ``query`` as a dict with its ``feedback`` list, oldest first, in pages."""
    after: tuple[float, str] | None = None
    while True:
        rows = await store.page(query, after, page_size)
        if not rows:
            return
        after = (rows[-1].ts, rows[-1].request_id)
        ids = [r.request_id for r in rows]
        response_ids = sorted({r.response_id for r in rows if r.response_id and r.role == "primary"})
        found = await store.feedback_for(ids, response_ids)
        by_request: dict[str, list[FeedbackRow]] = {}
        by_response: dict[str, list[FeedbackRow]] = {}
        for fb in found:
            if fb.request_id is not None:
                by_request.setdefault(fb.request_id, []).append(fb)
            elif fb.response_id is not None:
                by_response.setdefault(fb.response_id, []).append(fb)
        owners: dict[str, list[tuple[str, str | None]]] = {}
        for rid, req, caller in await store.primaries_for(sorted(by_response)) if by_response else ():
            owners.setdefault(rid, []).append((req, caller))
        for row in rows:
            attached = [fb for fb in by_request.get(row.request_id, ()) if same_caller(fb.caller, row.caller)]
            for fb in by_response.get(row.response_id or "", ()) if row.role == "primary" else ():
                # by response id: the latest primary with that id among those this caller may rate
                mine = [req for req, caller in owners.get(fb.response_id or "", ()) if same_caller(fb.caller, caller)]
                if mine and mine[-1] == row.request_id:
                    attached.append(fb)
            attached.sort(key=lambda fb: (fb.ts, fb.feedback_id))
            record = orjson.loads(row.record)
            record["feedback"] = [orjson.loads(fb.record) for fb in attached]
            yield record
        if len(rows) < page_size:
            return
