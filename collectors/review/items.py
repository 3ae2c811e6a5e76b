"""Reading the review queue: pages of items with filters, whole items (conversation, answer, feedback, shadow,
decisions), what is left per route, and the stored records behind a list of ids (for the dataset build).

Usage::

    page = await list_items(store, Filters(status="pending", route="support-bot"), limit=50)
    items = await load_items(store, [s.id for s in page])     # the JSON API's item objects
    left = await backlog(store)                                # {"support-bot": 12}
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import orjson

from collectors.review.decisions import history
from collectors.store.base import Store, same_caller

CHUNK = 500  # ids per IN (...) list
STATUSES = ("pending", "done", "approved", "rejected", "scored")


@dataclass(frozen=True)
class Filters:
    status: str = "pending"  # pending | done (anything decided) | approved | rejected | scored
    route: str | None = None
    variant: str | None = None
    reason: str | None = None
    since: float | None = None  # interaction time, unix seconds
    until: float | None = None


@dataclass(frozen=True)
class Summary:
    id: str
    route: str
    variant: str
    reason: str
    ts: float
    status: str
    answer: str | None
    score: float | None
    reviewer: str | None
    decided_at: float | None


_COLUMNS = "id, route, variant, reason, ts, status, answer, score, reviewer, decided_at"


def _where(filters: Filters, after: tuple[float, str] | None) -> tuple[str, list[Any]]:
    if filters.status not in STATUSES:
        raise ValueError(f"status: expected one of {', '.join(STATUSES)}, got {filters.status!r}")
    clauses, args = [], []

    def add(sql: str, value: Any) -> None:
        args.append(value)
        clauses.append(sql.replace("?", f"${len(args)}"))

    if filters.status == "done":
        clauses.append("status <> 'pending'")
    else:
        add("status = ?", filters.status)
    for column in ("route", "variant", "reason"):
        if (value := getattr(filters, column)) is not None:
            add(f"{column} = ?", value)
    if filters.since is not None:
        add("ts >= ?", filters.since)
    if filters.until is not None:
        add("ts < ?", filters.until)
    if after is not None:
        add("ts >= ?", after[0])
        args.append(after[1])
        clauses[-1] = f"(ts > ${len(args) - 1} OR (ts = ${len(args) - 1} AND id > ${len(args)}))"
    return " AND ".join(clauses), args


async def list_items(
    store: Store, filters: Filters, *, after: tuple[float, str] | None = None, limit: int = 50
) -> list[Summary]:
    """Items matching ``filters``, oldest interaction first, strictly after ``after`` (ts, id)."""
    where, args = _where(filters, after)
    rows = await store.fetch(
        f"SELECT {_COLUMNS} FROM review_items WHERE {where} ORDER BY ts, id LIMIT {int(limit)}", *args
    )
    return [Summary(*(*row[:4], float(row[4]), *row[5:])) for row in rows]


async def count_items(store: Store, filters: Filters) -> int:
    """Items matching ``filters``: from the kept counts when only status and route filter, else counted."""
    if filters.variant is None and filters.reason is None and filters.since is None and filters.until is None:
        counts = await status_counts(store)
        return sum(
            n
            for (route, status), n in counts.items()
            if filters.route in (None, route)
            and (status == filters.status or (filters.status == "done" and status != "pending"))
        )
    where, args = _where(filters, None)
    rows = await store.fetch(f"SELECT COUNT(*) FROM review_items WHERE {where}", *args)
    return int(rows[0][0])


async def status_counts(store: Store) -> dict[tuple[str, str], int]:
    """(route, status) -> items, from the counts the store's triggers keep (no scan of the queue)."""
    rows = await store.fetch("SELECT route, status, n FROM review_counts WHERE n > 0")
    return {(str(route), str(status)): int(n) for route, status, n in rows}


async def backlog(store: Store) -> dict[str, int]:
    """Pending items per route."""
    return {route: n for (route, status), n in (await status_counts(store)).items() if status == "pending"}


def _marks(n: int, start: int = 1) -> str:
    return ", ".join(f"${i}" for i in range(start, start + n))


async def feedback_by_owner(
    store: Store, owners: Sequence[tuple[str, str | None, str | None]]
) -> dict[str, list[dict[str, Any]]]:
    """request id -> its feedback objects, oldest first, for (request id, response id, caller) of primaries: only
    feedback from that caller or from the admin key (same_caller); by response id, it goes to the latest primary
    with that id among those its caller may rate."""
    response_ids = sorted({rid for _, rid, _ in owners if rid})
    found = await store.feedback_for([i for i, _, _ in owners], response_ids) if owners else []
    callers = {request_id: caller for request_id, _, caller in owners}
    keyed = sorted({fb.response_id for fb in found if fb.request_id is None and fb.response_id})
    carriers: dict[str, list[tuple[str, str | None]]] = {}
    for rid, req, caller in await store.primaries_for(keyed) if keyed else ():
        carriers.setdefault(rid, []).append((req, caller))
    attached: dict[str, list[Any]] = {}
    for fb in found:
        if fb.request_id is not None:
            owner = fb.request_id if same_caller(fb.caller, callers.get(fb.request_id)) else None
        else:
            mine = [req for req, caller in carriers.get(fb.response_id or "", ()) if same_caller(fb.caller, caller)]
            owner = mine[-1] if mine else None
        if owner is not None and owner in callers:
            attached.setdefault(owner, []).append(fb)
    return {
        owner: [orjson.loads(fb.record) for fb in sorted(fbs, key=lambda fb: (fb.ts, fb.feedback_id))]
        for owner, fbs in attached.items()
    }


async def records_for(store: Store, ids: Sequence[str]) -> dict[str, dict[str, Any]]:
    """request id -> the stored interaction with its ``feedback`` (oldest first), for primaries among ``ids``."""
    found: dict[str, dict[str, Any]] = {}
    for start in range(0, len(ids), CHUNK):
        chunk = list(ids[start : start + CHUNK])
        rows = await store.fetch(
            f"SELECT request_id, response_id, record, caller FROM interactions "
            f"WHERE request_id IN ({_marks(len(chunk))})",
            *chunk,
        )
        feedback = await feedback_by_owner(store, [(str(r[0]), r[1], r[3]) for r in rows])
        for request_id, _, record, _ in rows:
            data = orjson.loads(record)
            data["feedback"] = feedback.get(str(request_id), [])
            found[str(request_id)] = data
    return found


async def shadows_for(store: Store, ids: Sequence[str]) -> dict[str, dict[str, Any]]:
    """primary request id -> its latest shadow's stored interaction."""
    found: dict[str, dict[str, Any]] = {}
    if not ids:
        return found
    rows = await store.fetch(
        f"SELECT parent_id, record FROM interactions WHERE parent_id IN ({_marks(len(ids))}) ORDER BY ts, request_id",
        *ids,
    )
    for parent_id, record in rows:
        found[str(parent_id)] = orjson.loads(record)  # later rows overwrite: the latest shadow
    return found


async def load_items(store: Store, ids: Sequence[str]) -> list[dict[str, Any]]:
    """The JSON API's item objects for ``ids`` (in that order; unknown ids are left out)."""
    if not ids:
        return []
    rows = await store.fetch(f"SELECT {_COLUMNS} FROM review_items WHERE id IN ({_marks(len(ids))})", *ids)
    summaries = {str(r[0]): Summary(*(*r[:4], float(r[4]), *r[5:])) for r in rows}
    present = [i for i in ids if i in summaries]
    records = await records_for(store, present)
    shadows = await shadows_for(store, present)
    decisions = await history(store, present)
    items = []
    for item_id in present:
        s = summaries[item_id]
        record = records.get(item_id, {})
        shadow = shadows.get(item_id)
        items.append(
            {
                "id": s.id,
                "request_id": s.id,
                "route": s.route,
                "variant": s.variant,
                "reason": s.reason,
                "ts": s.ts,
                "status": s.status,
                "request": record.get("request"),
                "response": record.get("response"),
                "feedback": record.get("feedback", []),
                "shadow": None
                if shadow is None
                else {
                    "upstream": shadow.get("upstream"),
                    "response": shadow.get("response"),
                    "comparison": (shadow.get("extra") or {}).get("comparison"),
                },
                "decision": None
                if s.status == "pending"
                else {
                    "status": s.status,
                    "answer": s.answer,
                    "score": s.score,
                    "reviewer": s.reviewer,
                    "ts": s.decided_at,
                },
                "history": decisions.get(item_id, []),
            }
        )
    return items
