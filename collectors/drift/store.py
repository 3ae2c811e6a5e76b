"""Stored drift state: descriptors of sampled interactions (computed once, on first use), each check's result,
and the models the upstreams report (``collectors.drift.models``).

A window's sample is its primary interactions in ``request_id`` order up to a limit: ids are random, so that
is a uniform random sample whatever the traffic, and the work of a check is bounded by the limit.

Usage::

    described = await window_descriptors(store, "support-bot", start, end, limit=5000)
    await record_check(store, Check("support-bot", now, since, now, "window:30d", True, True, result_json))
    latest = await latest_published(store)   # {route: Check}
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import orjson

from collectors.drift.descriptors import describe
from collectors.store.base import Store

SAMPLE = 5000  # interactions a side: plenty for deciles and term shares, bounded work
_CHUNK = 200
_SAMPLE = (
    "SELECT i.request_id, i.ts, d.descriptor FROM interactions i "
    "LEFT JOIN drift_descriptors d ON d.request_id = i.request_id "
    "WHERE i.route = $1 AND i.role = 'primary' AND i.ts >= $2 AND i.ts < $3 ORDER BY i.request_id LIMIT $4"
)
_INSERT = (
    "INSERT INTO drift_descriptors (request_id, route, ts, descriptor) VALUES ($1, $2, $3, $4) "
    "ON CONFLICT (request_id) DO NOTHING"
)
_CHECK_COLUMNS = "route, checked_at, window_start, window_end, reference, published, closed, result"


@dataclass(frozen=True)
class Check:
    route: str
    checked_at: float
    window_start: float  # the current window: [window_start, window_end)
    window_end: float
    reference: str  # window:30d, or the dataset version compared with
    published: bool  # both sides had enough interactions
    closed: bool  # the next check's window starts where this one ended (published, or no reference to wait for)
    result: str  # JSON: the comparison (scores, signals, terms) or why nothing was published

    def data(self) -> dict[str, Any]:
        return dict(orjson.loads(self.result))


def describe_record(record: dict[str, Any]) -> dict[str, Any]:
    return describe(record.get("request") or {}, record.get("response"), record.get("usage"))


async def window_descriptors(store: Store, route: str, start: float, end: float, limit: int = SAMPLE) -> list[dict]:
    """Descriptors of a uniform sample of the route's primary interactions in [start, end); describes (and
    stores the descriptors of) those not described yet."""
    rows = await store.fetch(_SAMPLE, route, start, end, limit)
    found = {str(rid): orjson.loads(d) for rid, _, d in rows if d is not None}
    missing = [(str(rid), float(ts)) for rid, ts, d in rows if d is None]
    for i in range(0, len(missing), _CHUNK):
        chunk = missing[i : i + _CHUNK]
        marks = ", ".join(f"${n + 1}" for n in range(len(chunk)))
        records = await store.fetch(
            f"SELECT request_id, record FROM interactions WHERE request_id IN ({marks})", *[rid for rid, _ in chunk]
        )
        made = {str(rid): describe_record(orjson.loads(record)) for rid, record in records}
        await store.executemany(
            _INSERT, [(rid, route, ts, orjson.dumps(made[rid]).decode()) for rid, ts in chunk if rid in made]
        )
        found.update(made)
    return [found[str(rid)] for rid, _, _ in rows if str(rid) in found]


async def forget_descriptors(store: Store, route: str, before: float) -> int:
    """Drop cached descriptors older than any window still compared (retention deletes the interactions)."""
    return await store.execute("DELETE FROM drift_descriptors WHERE route = $1 AND ts < $2", route, before)


async def record_check(store: Store, check: Check, *, keep_s: float) -> None:
    """Store a check; checks older than ``keep_s`` before it are deleted in the same transaction."""
    c = check
    row = (c.route, c.checked_at, c.window_start, c.window_end, c.reference, int(c.published), int(c.closed), c.result)
    await store.transact(
        [
            (f"INSERT INTO drift_checks ({_CHECK_COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8)", row),
            ("DELETE FROM drift_checks WHERE route = $1 AND checked_at < $2", (c.route, c.checked_at - keep_s)),
        ]
    )


def _check(row: Sequence[Any]) -> Check:
    route, checked_at, start, end, reference, published, closed, result = row
    return Check(
        str(route), float(checked_at), float(start), float(end), str(reference), bool(published), bool(closed), result
    )


async def checks(store: Store, route: str, limit: int = 1) -> list[Check]:
    """The route's latest checks, newest first."""
    rows = await store.fetch(
        f"SELECT {_CHECK_COLUMNS} FROM drift_checks WHERE route = $1 ORDER BY checked_at DESC LIMIT $2", route, limit
    )
    return [_check(r) for r in rows]


async def window_start(store: Store, route: str) -> float | None:
    """Where the current window begins: the end of the last check that closed its window, else the start of
    the first check (a check with too few current interactions leaves its window open, so the next sees more)."""
    rows = await store.fetch(
        "SELECT MAX(window_end) FROM drift_checks WHERE route = $1 AND closed = 1 UNION ALL "
        "SELECT MIN(window_start) FROM drift_checks WHERE route = $1",
        route,
    )
    closed, first = rows[0][0], rows[1][0]
    found = closed if closed is not None else first
    return None if found is None else float(found)


async def last_published(store: Store, route: str) -> Check | None:
    rows = await store.fetch(
        f"SELECT {_CHECK_COLUMNS} FROM drift_checks WHERE route = $1 AND published = 1 ORDER BY checked_at DESC "
        "LIMIT 1",
        route,
    )
    return _check(rows[0]) if rows else None


async def latest_published(store: Store) -> dict[str, Check]:
    """Each route's latest published check."""
    rows = await store.fetch(
        f"SELECT {_CHECK_COLUMNS} FROM drift_checks c WHERE published = 1 AND checked_at = "
        "(SELECT MAX(checked_at) FROM drift_checks WHERE route = c.route AND published = 1)"
    )
    return {str(r[0]): _check(r) for r in rows}
