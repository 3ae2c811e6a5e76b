"""Scheduled jobs: the schedule, the store's SQL seam, and one run per tick across competing runners (two
connections to one SQLite file, to one PostgreSQL, and a runner killed with SIGKILL half-way)."""

from __future__ import annotations

import asyncio
import datetime as dt
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from collectors import job_state
from collectors.store import open_store
from collectors.store.base import Store
from gateway.config import Config, Loaded, load_config
from gateway.jobs import Job, JobContext, Schedule, run_jobs
from tests.collectors.pg import pg_dsn, postgres_server  # noqa: F401

ROOT = Path(__file__).resolve().parents[2]


def test_schedule_every_and_cron() -> None:
    every = Schedule.parse("6h")
    assert every.next_after(1000.0) == 1000.0 + 6 * 3600
    assert every.due(None, 0.0) and not every.due(1000.0, 1000.0 + 3600) and every.due(1000.0, 1000.0 + 6 * 3600)
    cron = Schedule.parse("0 */6 * * *")
    start = dt.datetime(2026, 12, 5, 7, 30, tzinfo=dt.UTC).timestamp()
    assert cron.next_after(start) == dt.datetime(2026, 12, 5, 12, 0, tzinfo=dt.UTC).timestamp()
    # a missed tick runs once: due, and after that start the next tick is in the future again
    assert cron.due(start - 3 * 86400, start) and not cron.due(start, start + 60)
    for bad in ("soon", "0s", "61 * * * *", "* * *"):
        with pytest.raises(ValueError):
            Schedule.parse(bad)


@pytest.fixture(params=["sqlite", "postgres"])
def dsn(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path}/turnout.db"
    return str(request.getfixturevalue("pg_dsn"))


async def test_sql_seam(dsn: str) -> None:
    store = open_store(dsn)
    try:
        await store.execute("CREATE TABLE t (k TEXT PRIMARY KEY, v INTEGER NOT NULL)")
        await store.executemany("INSERT INTO t (k, v) VALUES ($1, $2)", [("a", 1), ("b", 2), ("c", 3)])
        assert await store.execute("UPDATE t SET v = v + $1 WHERE v >= $2", 10, 2) == 2
        assert await store.fetch("SELECT k, v FROM t WHERE v > $1 ORDER BY k", 5) == [("b", 12), ("c", 13)]
        changed = await store.transact(
            [("DELETE FROM t WHERE k = $1", ("a",)), ("INSERT INTO t (k, v) VALUES ($1, $2)", ("d", 4))]
        )
        assert changed == [1, 1]
        with pytest.raises(Exception, match=r"(?i)unique|duplicate"):  # the whole transaction is rolled back
            await store.transact([("DELETE FROM t WHERE k = $1", ("b",)), ("INSERT INTO t VALUES ($1, $2)", ("c", 0))])
        assert [r[0] for r in await store.fetch("SELECT k FROM t ORDER BY k")] == ["b", "c", "d"]
    finally:
        await store.close()


def _loaded(tmp_path: Path, dsn: str) -> Loaded:
    path = tmp_path / "turnout.yaml"
    path.write_text(
        f"store: {dsn}\nupstreams: {{a: {{provider: dummy, model: m}}}}\nroutes: {{r: {{variants: {{a: 1}}}}}}\n"
    )
    return load_config(path)


async def test_one_run_per_tick_across_runners(dsn: str, tmp_path: Path) -> None:
    loaded = _loaded(tmp_path, dsn)
    runs: list[str] = []

    def jobs(config: Config) -> list[Job]:
        async def run(ctx: JobContext) -> None:
            runs.append(ctx.config_path.name)
            await asyncio.sleep(0.3)  # long enough that the other runners look while it runs

        return [Job("tick", Schedule.parse("2s"), run)]

    stores: list[Store] = [open_store(dsn) for _ in range(3)]
    stop = asyncio.Event()
    runners = [
        asyncio.create_task(run_jobs(lambda: loaded, s, holder=f"h{i}", stop=stop, poll_s=0.05, jobs=jobs))
        for i, s in enumerate(stores)
    ]
    await asyncio.sleep(5.0)  # ticks at 0, 2 and 4 s
    stop.set()
    await asyncio.gather(*runners)
    state = await job_state.job_state(stores[0], "tick")
    for s in stores:
        await s.close()
    assert len(runs) == 3, runs
    assert state is not None and state.runs_ok == 3 and state.runs_failed == 0 and state.last_result == "success"


async def test_failures_are_recorded(tmp_path: Path) -> None:
    dsn = f"sqlite:///{tmp_path}/turnout.db"
    loaded = _loaded(tmp_path, dsn)

    async def boom(ctx: JobContext) -> None:
        raise RuntimeError("upstream judge unreachable")

    store = open_store(dsn)
    stop = asyncio.Event()
    task = asyncio.create_task(
        run_jobs(
            lambda: loaded, store, holder="h", stop=stop, poll_s=0.05, jobs=lambda c: [Job("b", Schedule(1.0), boom)]
        )
    )
    await asyncio.sleep(1.5)
    stop.set()
    await task
    state = await job_state.job_state(store, "b")
    await store.close()
    assert state is not None and state.runs_failed == 2 and state.runs_ok == 0
    assert state.last_result == "failure" and "judge unreachable" in (state.last_error or "")


_KILLABLE = textwrap.dedent(
    """
    import asyncio, sys, time
    from pathlib import Path
    from collectors.store import open_store
    from gateway.config import load_config
    from gateway.jobs import Job, Schedule, run_jobs

    marks = Path(sys.argv[2])

    async def run(ctx):
        with marks.open("a") as f:
            f.write(f"start {sys.argv[3]}\\n")
        await asyncio.sleep(float(sys.argv[4]))
        with marks.open("a") as f:
            f.write(f"end {sys.argv[3]}\\n")

    async def main():
        loaded = load_config(sys.argv[1])
        store = open_store(loaded.secrets.store_dsn)
        jobs = lambda config: [Job("slow", Schedule.parse("3s"), run)]
        await run_jobs(lambda: loaded, store, holder=sys.argv[3], stop=asyncio.Event(), poll_s=0.1, lease_s=1.5,
                       jobs=jobs)

    asyncio.run(main())
    """
)


def test_killed_runner_is_not_reported_complete_and_the_next_tick_runs(tmp_path: Path) -> None:
    dsn = f"sqlite:///{tmp_path}/turnout.db"
    config = _loaded(tmp_path, dsn).path
    marks = tmp_path / "marks.txt"
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    first = subprocess.Popen([sys.executable, "-c", _KILLABLE, str(config), str(marks), "first", "60"], env=env)
    deadline = time.monotonic() + 40
    while "start first" not in (marks.read_text() if marks.exists() else ""):
        assert time.monotonic() < deadline and first.poll() is None
        time.sleep(0.05)
    first.send_signal(signal.SIGKILL)
    first.wait()

    async def state() -> job_state.JobState | None:
        store = open_store(dsn)
        try:
            return await job_state.job_state(store, "slow")
        finally:
            await store.close()

    second = subprocess.Popen([sys.executable, "-c", _KILLABLE, str(config), str(marks), "second", "0.1"], env=env)
    try:  # the second runner's run ends, then it records the run: wait for the record, not the mark
        while (found := asyncio.run(state())) is None or found.runs_ok + found.runs_failed == 0:
            assert time.monotonic() < deadline and second.poll() is None
            time.sleep(0.1)
    finally:
        second.kill()
        second.wait()
    assert marks.read_text().splitlines()[:3] == ["start first", "start second", "end second"]
    assert found.runs_ok == 1 and found.runs_failed == 0


async def test_job_metrics_read_back_from_the_store(tmp_path: Path) -> None:
    from prometheus_client import CollectorRegistry, generate_latest

    from collectors.stored_metrics import Snapshot, StoredMetrics
    from gateway.stored_state import ReadContext, read_jobs

    dsn = f"sqlite:///{tmp_path}/turnout.db"
    store = open_store(dsn)
    await job_state.take_lease(store, "eval:s", holder="h", until=10.0, now=0.0)
    await job_state.finished(store, "eval:s", "h", ok=True, error=None, now=1234.0)
    await job_state.take_lease(store, "eval:s", holder="h", until=20.0, now=11.0)
    await job_state.finished(store, "eval:s", "h", ok=False, error="x", now=1240.0)
    snap = Snapshot()
    await read_jobs(ReadContext(store, _loaded(tmp_path, dsn).config, snap, None, 0.0))  # type: ignore[arg-type]
    await store.close()
    stored = StoredMetrics()
    registry = CollectorRegistry()
    registry.register(stored)
    stored.publish(snap)
    text = generate_latest(registry).decode()
    assert 'turnout_job_runs_total{job="eval:s",result="success"} 1.0' in text
    assert 'turnout_job_runs_total{job="eval:s",result="failure"} 1.0' in text
    assert 'turnout_job_last_success_timestamp_seconds{job="eval:s"} 1234.0' in text
    assert "# TYPE turnout_job_runs_total counter" in text
