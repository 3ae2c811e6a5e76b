"""Retention: deletes interactions older than ``store_retention`` (top level, or the route's own) in the
background, in bounded batches with a pause between them so the store keeps serving writes.

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
    if default is not None:
        keep = tuple(route_retention)
        total += await _drain(lambda: store.delete_expired(now - default, None, keep, BATCH))
    longest = max([*route_retention.values(), *([default] if default is not None else [])], default=None)
    if longest is not None and default is not None:
        # feedback older than every retention can only belong to interactions already gone
        await _drain(lambda: store.delete_orphan_feedback(now - longest, BATCH))
    if total:
        log.info("retention deleted %d interactions", total)
    return total


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
