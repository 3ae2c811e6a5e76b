"""Retention: deletes interactions older than ``store_retention`` (top level, or the route's own) in the
background, in bounded batches with a pause between them so the store keeps serving writes. Their review items
and decisions go with them (an item holds a reviewer's corrected answer: it is kept no longer than its prompt).

Usage: ``task = asyncio.create_task(retention_loop(store, lambda: policy, interval=600))``; or
``await expire(store, route_retention={"r": 86400.0}, default=None)`` once.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import time
from collections.abc import Awaitable, Callable, Mapping

from collectors.store.base import Store, StoreUnavailable

log = logging.getLogger(__name__)

BATCH = 1000
PAUSE_S = 0.05


async def _drain(step: Callable[[], Awaitable[int]]) -> int:
    total = 0
    while True:
        n = await step()
        total += n
        if n < BATCH:
            return total
        await asyncio.sleep(PAUSE_S)


async def expire(
    store: Store, *, route_retention: Mapping[str, float], default: float | None, now: float | None = None
) -> int:
    """Delete everything past its retention; returns how many interactions were deleted."""
    now = time.time() if now is None else now
    total = 0
    for route, seconds in route_retention.items():
        total += await _drain(functools.partial(store.delete_expired, now - seconds, route, (), BATCH))
        await _drain(functools.partial(_expire_review, store, now - seconds, route, ()))
    if default is not None:
        keep = tuple(route_retention)
        total += await _drain(lambda: store.delete_expired(now - default, None, keep, BATCH))
        await _drain(functools.partial(_expire_review, store, now - default, None, keep))
    longest = max([*route_retention.values(), *([default] if default is not None else [])], default=None)
    if longest is not None and default is not None:
        # feedback older than every retention can only belong to interactions already gone
        await _drain(lambda: store.delete_orphan_feedback(now - longest, BATCH))
    if total:
        log.info("retention deleted %d interactions", total)
    return total


async def _expire_review(store: Store, cutoff: float, route: str | None, keep_routes: tuple[str, ...]) -> int:
    """Delete one batch of review items (and their decisions) of ``route`` (or of every route but ``keep_routes``)
    whose interaction is older than ``cutoff``; returns how many items were deleted."""
    if route is not None:
        where, args = "route = $2", [route]
    else:
        marks = ", ".join(f"${i}" for i in range(2, len(keep_routes) + 2))
        where, args = (f"route NOT IN ({marks})" if keep_routes else "1 = 1"), list(keep_routes)
    found = await store.fetch(f"SELECT id FROM review_items WHERE ts < $1 AND {where} LIMIT {BATCH}", cutoff, *args)
    ids = [str(r[0]) for r in found]
    if not ids:
        return 0
    marks = ", ".join(f"${i}" for i in range(1, len(ids) + 1))
    await store.transact(
        [
            (f"DELETE FROM review_decisions WHERE item_id IN ({marks})", ids),
            (f"DELETE FROM review_items WHERE id IN ({marks})", ids),
        ]
    )
    return len(ids)


async def retention_loop(
    store: Store, policy: Callable[[], tuple[Mapping[str, float], float | None]], *, interval: float
) -> None:
    """Run ``expire`` every ``interval`` seconds with the current policy (``(route_retention, default)``)."""
    while True:
        route_retention, default = policy()
        if route_retention or default is not None:
            try:
                await expire(store, route_retention=route_retention, default=default)
            except StoreUnavailable as exc:
                log.warning("retention skipped, store unavailable: %s", exc)
            except Exception:
                log.exception("retention failed")
        await asyncio.sleep(interval)
