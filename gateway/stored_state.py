"""What the serving process reads back from the store every few seconds: the figures the retraining loop's
metrics show (so every replica's ``/metrics`` agrees, whichever process ran the job) and, through the readers
that need it, state that changes what is served (a rollout's weights).

Each feature adds one reader ``async def read(ctx: ReadContext) -> None`` to ``READERS``; a reader puts its
series into ``ctx.out`` (a ``collectors.stored_metrics.Snapshot``) and may act on ``ctx.gateway``. A reader
that fails is logged and the others still publish; a store outage keeps the previous reading whole.

Usage (lifespan): ``state = StoredState(dsn, gw, stored_metrics)``; ``state.start()``; ``await state.close()``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from collectors import job_state
from collectors.store import open_store
from collectors.store.base import Store, StoreUnavailable
from collectors.stored_metrics import Snapshot, StoredMetrics
from gateway.config import Config
from gateway.datasets import read_datasets
from gateway.drift import read_drift
from gateway.eval_schedule import read_evals
from gateway.jobs import jobs_for
from gateway.rollout_state import read_rollouts

if TYPE_CHECKING:
    from gateway.runtime import Gateway

log = logging.getLogger(__name__)

INTERVAL_S = 2.0


@dataclass(frozen=True)
class ReadContext:
    store: Store
    config: Config
    out: Snapshot
    gateway: Gateway
    now: float


async def read_jobs(ctx: ReadContext) -> None:
    """``turnout_job_runs_total{job,result}`` and ``turnout_job_last_success_timestamp_seconds{job}``."""
    configured = {job.name for job in jobs_for(ctx.config)}
    states = {s.job: s for s in await job_state.job_states(ctx.store)}
    for name in sorted(configured | set(states)):
        state = states.get(name)
        ok, failed = (state.runs_ok, state.runs_failed) if state else (0, 0)
        for result, count in (("success", ok), ("failure", failed)):
            ctx.out.counter("job_runs_total", "Scheduled job runs by result", {"job": name, "result": result}, count)
        if state is not None and state.last_success is not None:
            ctx.out.gauge(
                "job_last_success_timestamp_seconds", "When the job last succeeded", {"job": name}, state.last_success
            )


READERS: list[Callable[[ReadContext], Awaitable[None]]] = [
    read_jobs,
    read_drift,
    read_rollouts,
    read_datasets,
    read_evals,
]


def wanted(config: Config) -> bool:
    """Whether this config has anything stored to read back (no store connection is opened otherwise)."""
    return bool(jobs_for(config)) or config.review is not None or bool(config.datasets)


class StoredState:
    def __init__(self, store_dsn: str, gateway: Gateway, stored: StoredMetrics, *, interval: float = INTERVAL_S):
        self._dsn = store_dsn
        self.gateway = gateway
        self.stored = stored
        self.interval = interval
        self.store: Store | None = None
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._loop(), name="stored-state")

    async def read_once(self) -> None:
        config = self.gateway.generation.config
        if not wanted(config):
            return
        if self.store is None:
            self.store = open_store(self._dsn)
        out = Snapshot()
        ctx = ReadContext(self.store, config, out, self.gateway, time.time())
        for reader in READERS:
            try:
                await reader(ctx)
            except StoreUnavailable as exc:
                log.warning("stored state: store unavailable: %s", exc)
                return  # keep the previous figures whole rather than publish a partial reading
            except Exception:
                log.exception("stored state: reader %s failed", reader.__name__)
        self.stored.publish(out)

    async def _loop(self) -> None:
        while True:
            await self.read_once()
            await asyncio.sleep(self.interval)

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        if self.store is not None:
            await self.store.close()
