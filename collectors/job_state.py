"""Stored state of the scheduled jobs: a lease row per job (one runner across replicas and workers) and the
outcome of its last runs, read back for ``turnout_job_*`` metrics by every replica.

A lease is a row whose ``lease_until`` is in the future; taking it is one atomic upsert, so two processes
racing for a job cannot both win, on SQLite or PostgreSQL. A holder that dies stops renewing and its lease
lapses after its time to live.

Usage::

    if await take_lease(store, "eval:support", holder="host:123", until=now + 30, now=now):
        state = await job_state(store, "eval:support")
        await started(store, "eval:support", now)
        ...
        await finished(store, "eval:support", "host:123", ok=True, error=None, now=time.time())
"""

from __future__ import annotations

from dataclasses import dataclass

from collectors.store.base import Store

_TAKE = (
    "INSERT INTO job_state (job, holder, lease_until) VALUES ($1, $2, $3) "
    "ON CONFLICT (job) DO UPDATE SET holder = excluded.holder, lease_until = excluded.lease_until "
    "WHERE job_state.lease_until IS NULL OR job_state.lease_until < $4 OR job_state.holder = $2"
)
_COLUMNS = "job, last_started, last_finished, last_success, last_result, last_error, runs_ok, runs_failed"


@dataclass(frozen=True)
class JobState:
    job: str
    last_started: float | None
    last_finished: float | None
    last_success: float | None
    last_result: str | None  # success | failure | None (never finished)
    last_error: str | None
    runs_ok: int
    runs_failed: int


async def take_lease(store: Store, job: str, *, holder: str, until: float, now: float) -> bool:
    """Take (or renew) the job's lease until ``until``; False when another live holder has it."""
    return await store.execute(_TAKE, job, holder, until, now) == 1


async def release(store: Store, job: str, holder: str) -> None:
    await store.execute("UPDATE job_state SET lease_until = NULL WHERE job = $1 AND holder = $2", job, holder)


async def started(store: Store, job: str, now: float) -> None:
    """Mark the tick as taken: a run killed half-way is not reported complete, and is not re-run at once."""
    await store.execute("UPDATE job_state SET last_started = $2 WHERE job = $1", job, now)


async def finished(store: Store, job: str, holder: str, *, ok: bool, error: str | None, now: float) -> None:
    if ok:
        sql = (
            "UPDATE job_state SET last_finished = $2, last_success = $2, last_result = 'success', last_error = NULL,"
            " runs_ok = runs_ok + 1, lease_until = NULL WHERE job = $1 AND holder = $3"
        )
        await store.execute(sql, job, now, holder)
    else:
        sql = (
            "UPDATE job_state SET last_finished = $2, last_result = 'failure', last_error = $4,"
            " runs_failed = runs_failed + 1, lease_until = NULL WHERE job = $1 AND holder = $3"
        )
        await store.execute(sql, job, now, holder, (error or "")[:2000])


async def job_states(store: Store) -> list[JobState]:
    rows = await store.fetch(f"SELECT {_COLUMNS} FROM job_state ORDER BY job")
    return [JobState(*row) for row in rows]


async def job_state(store: Store, job: str) -> JobState | None:
    rows = await store.fetch(f"SELECT {_COLUMNS} FROM job_state WHERE job = $1", job)
    return JobState(*rows[0]) if rows else None
