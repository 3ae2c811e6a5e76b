"""The retraining loop's scheduled jobs (evals, dataset builds, rollouts, drift checks) and the runner that
runs each on exactly one process across every replica and worker.

A job has a name, a ``Schedule`` (``every: 6h`` or a cron line) and an async ``run(ctx)`` that raises to fail.
The runner (``run_jobs``, inside the jobs child of ``turnout serve``: ``gateway/jobs_child.py``) looks at the
stored state of every job once a second; a job is due when it never ran or its next tick after the last start
has passed, so a job whose ticks were missed while everything was down runs once at start, not once per tick.
A due job is run under a lease row in the store (``collectors.job_state``), renewed while it runs; the due
check is repeated under the lease, so two replicas never run the same tick.

Usage::

    jobs = jobs_for(config)                    # the jobs this config asks for
    await run_jobs(load, store, holder="host:pid", stop=stop_event)
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from collectors import job_state
from collectors.store.base import Store, StoreUnavailable
from gateway.config import Config, Loaded
from gateway.datasets import dataset_jobs
from gateway.drift import drift_jobs
from gateway.eval_schedule import eval_jobs
from gateway.rollouts import rollout_jobs
from gateway.schedule import Job, JobContext, Schedule

__all__ = ["Job", "JobContext", "Schedule", "jobs_for", "run_jobs"]  # Job & co. live in gateway/schedule.py

log = logging.getLogger(__name__)

LEASE_S = 30.0  # a holder that stops renewing (killed) loses its job this long after its last renewal
POLL_S = 1.0


def jobs_for(config: Config) -> list[Job]:
    """Every job the config asks for; each feature of the retraining loop adds its own here."""
    found: list[Job] = []
    found += drift_jobs(config)
    found += rollout_jobs(config)
    found += dataset_jobs(config)
    found += eval_jobs(config)
    return found


@dataclass
class _Runner:
    load: Callable[[], Loaded]
    store: Store
    holder: str
    lease_s: float
    clock: Callable[[], float]
    jobs: Callable[[Config], list[Job]]
    running: dict[str, asyncio.Task[None]] = field(default_factory=dict)

    async def tick(self) -> None:
        loaded = self.load()
        jobs = [job for job in self.jobs(loaded.config) if job.name not in self.running]
        if not jobs:
            return
        states = {s.job: s for s in await job_state.job_states(self.store)}
        for job in jobs:
            state = states.get(job.name)
            if job.schedule.due(state.last_started if state else None, self.clock()):
                await self._try(job, loaded)

    async def _try(self, job: Job, loaded: Loaded) -> None:
        now = self.clock()
        if not await job_state.take_lease(self.store, job.name, holder=self.holder, until=now + self.lease_s, now=now):
            return
        state = await job_state.job_state(self.store, job.name)  # again, under the lease
        if not job.schedule.due(state.last_started if state else None, now):
            await job_state.release(self.store, job.name, self.holder)
            return
        await job_state.started(self.store, job.name, now)
        ctx = JobContext(loaded.config, loaded.path, self.store, self.clock)
        self.running[job.name] = asyncio.create_task(self._run(job, ctx), name=f"job:{job.name}")

    async def _run(self, job: Job, ctx: JobContext) -> None:
        renew = asyncio.create_task(self._renew(job.name))
        ok, error = True, None
        log.info("job %s: started", job.name)
        try:
            await job.run(ctx)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            ok, error = False, f"{type(exc).__name__}: {exc}"
            log.exception("job %s failed", job.name)
        finally:
            renew.cancel()
            self.running.pop(job.name, None)
        log.info("job %s: %s", job.name, "done" if ok else "failed")
        try:
            await job_state.finished(self.store, job.name, self.holder, ok=ok, error=error, now=self.clock())
        except StoreUnavailable as exc:  # the lease lapses; the next tick runs it again
            log.error("job %s: could not record its result: %s", job.name, exc)

    async def _renew(self, name: str) -> None:
        while True:
            await asyncio.sleep(self.lease_s / 3)
            now = self.clock()
            try:
                await job_state.take_lease(self.store, name, holder=self.holder, until=now + self.lease_s, now=now)
            except StoreUnavailable as exc:
                log.warning("job %s: could not renew its lease: %s", name, exc)


async def run_jobs(
    load: Callable[[], Loaded],
    store: Store,
    *,
    holder: str,
    stop: asyncio.Event,
    poll_s: float = POLL_S,
    lease_s: float = LEASE_S,
    clock: Callable[[], float] = time.time,
    jobs: Callable[[Config], list[Job]] = jobs_for,
) -> None:
    """Run due jobs until ``stop`` is set; ``load()`` gives the config generation to use now."""
    runner = _Runner(load, store, holder, lease_s, clock, jobs)
    while not stop.is_set():
        try:
            await runner.tick()
        except StoreUnavailable as exc:
            log.warning("jobs: store unavailable: %s", exc)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), poll_s)
    for task in list(runner.running.values()):
        task.cancel()
    await asyncio.gather(*runner.running.values(), return_exceptions=True)
