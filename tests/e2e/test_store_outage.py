"""ST-3: the store read-only, locked, absent at start, or (PostgreSQL) stopped mid-run, then restored: every
request is answered meanwhile, /readyz says "degraded" (still 200), and afterwards every interaction is stored
exactly once without a restart. Two gateway processes share one PostgreSQL (ST-6)."""

from __future__ import annotations

import asyncio
import contextlib
import signal
import sqlite3
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import httpx

from tests.collectors.pg import PostgresServer, pg_dsn, postgres_server  # noqa: F401
from tests.e2e.capture_client import Seen, ask, export
from tests.fakes.openai_server import FakeOpenAI
from tests.harness import GatewayProcess, write_config

CONFIG = """
server: {{state_dir: {state}}}
store: {store}
upstreams:
  prod: {{base_url: "{url}", model: m-ok}}
routes:
  bot: {{variants: {{prod: 1}}}}
"""


def config(tmp_path: Path, fake: FakeOpenAI, store: str, name: str = "turnout.yaml", state: str = "state") -> Path:
    return write_config(tmp_path, CONFIG.format(state=tmp_path / state, store=store, url=fake.url), name)


async def load(client: httpx.AsyncClient, url: str, tag: str, n: int) -> list[Seen]:
    """``n`` requests, eight at a time; every one must be answered."""
    gate = asyncio.Semaphore(8)

    async def one(i: int) -> Seen:
        async with gate:
            seen = await ask(client, url, "bot", f"{tag} {i}", stream=i % 2 == 0)
        assert seen is not None and seen.status == 200, (tag, i)
        return seen

    return list(await asyncio.gather(*(one(i) for i in range(n))))


async def readiness(client: httpx.AsyncClient, url: str, want: str, within: float = 20.0) -> None:
    deadline = time.monotonic() + within
    while True:
        r = await client.get(url + "/readyz")
        assert r.status_code == 200
        if r.json()["status"] == want:
            return
        assert time.monotonic() < deadline, f"/readyz never said {want!r}"
        await asyncio.sleep(0.1)


async def drained(client: httpx.AsyncClient, url: str, within: float = 30.0) -> None:
    """Wait until the gateway's capture queue is empty and its store is back."""
    await readiness(client, url, "ok", within)
    deadline = time.monotonic() + within
    while True:
        text = (await client.get(url + "/metrics")).text
        if "\nturnout_capture_queue_depth 0.0" in text:
            return
        assert time.monotonic() < deadline, "capture queue never drained"
        await asyncio.sleep(0.1)


@contextlib.contextmanager
def immutable(*paths: Path) -> Iterator[None]:
    """The files made read-only even for root (``chattr +i``), restored afterwards whatever happens."""
    existing = [p for p in paths if p.exists()]
    subprocess.run(["chattr", "+i", *map(str, existing)], check=True)
    try:
        yield
    finally:
        subprocess.run(["chattr", "-i", *map(str, existing)], check=True)


def stored_ids(db: Path) -> list[str]:
    with sqlite3.connect(db) as conn:
        return [r[0] for r in conn.execute("SELECT request_id FROM interactions")]


async def test_sqlite_read_only_then_restored(tmp_path: Path, fake_openai: FakeOpenAI) -> None:
    db = tmp_path / "t.db"
    cfg = config(tmp_path, fake_openai, f"sqlite:///{db}")
    with GatewayProcess(cfg) as gw:
        async with httpx.AsyncClient(timeout=30) as client:
            seen = await load(client, gw.url, "before", 10)
            await drained(client, gw.url)
            with immutable(db, db.with_name("t.db-wal")):
                seen += await load(client, gw.url, "during", 20)
                await readiness(client, gw.url, "degraded")
                seen += await load(client, gw.url, "degraded", 20)
            await drained(client, gw.url)
    assert sorted(stored_ids(db)) == sorted(s.request_id for s in seen)


async def test_sqlite_locked_by_another_process(tmp_path: Path, fake_openai: FakeOpenAI) -> None:
    db = tmp_path / "t.db"
    cfg = config(tmp_path, fake_openai, f"sqlite:///{db}")
    with GatewayProcess(cfg) as gw:
        async with httpx.AsyncClient(timeout=30) as client:
            seen = await load(client, gw.url, "before", 10)
            await drained(client, gw.url)
            holder = sqlite3.connect(db, timeout=0)
            holder.execute("BEGIN EXCLUSIVE")
            try:
                seen += await load(client, gw.url, "during", 20)
                await readiness(client, gw.url, "degraded")
            finally:
                holder.rollback()
                holder.close()
            await drained(client, gw.url)
    assert sorted(stored_ids(db)) == sorted(s.request_id for s in seen)


async def test_start_while_the_store_is_down(tmp_path: Path, fake_openai: FakeOpenAI) -> None:
    blocker = tmp_path / "volume"
    blocker.write_text("not a directory yet")
    cfg = config(tmp_path, fake_openai, f"sqlite:///{blocker}/t.db")
    with GatewayProcess(cfg) as gw:
        async with httpx.AsyncClient(timeout=30) as client:
            await readiness(client, gw.url, "degraded")
            seen = await load(client, gw.url, "down", 20)
            blocker.unlink()
            blocker.mkdir()
            await drained(client, gw.url)
    assert sorted(stored_ids(blocker / "t.db")) == sorted(s.request_id for s in seen)


async def test_two_gateways_on_postgres_survive_its_restart(
    tmp_path: Path,
    fake_openai: FakeOpenAI,
    postgres_server: PostgresServer,  # noqa: F811
    pg_dsn: str,  # noqa: F811
) -> None:
    cfg_a = config(tmp_path, fake_openai, pg_dsn, "a.yaml", "state-a")
    cfg_b = config(tmp_path, fake_openai, pg_dsn, "b.yaml", "state-b")
    with GatewayProcess(cfg_a) as a, GatewayProcess(cfg_b) as b:
        async with httpx.AsyncClient(timeout=30) as client:
            parts = await asyncio.gather(load(client, a.url, "a-before", 30), load(client, b.url, "b-before", 30))
            seen = [*parts[0], *parts[1]]
            await asyncio.gather(drained(client, a.url), drained(client, b.url))
            postgres_server.stop()
            try:
                parts = await asyncio.gather(load(client, a.url, "a-down", 20), load(client, b.url, "b-down", 20))
                seen += [*parts[0], *parts[1]]
                await asyncio.gather(readiness(client, a.url, "degraded"), readiness(client, b.url, "degraded"))
            finally:
                postgres_server.start()
            parts = await asyncio.gather(load(client, a.url, "a-after", 10), load(client, b.url, "b-after", 10))
            seen += [*parts[0], *parts[1]]
            await asyncio.gather(drained(client, a.url), drained(client, b.url))
        for gw in (a, b):
            gw.stop(signal.SIGTERM)
    rows = export(cfg_a, "--format", "raw")
    assert sorted(r["request_id"] for r in rows) == sorted(s.request_id for s in seen)
    texts = {s.request_id: s.messages[0]["content"] for s in seen}
    assert all(r["request"]["messages"][0]["content"] == texts[r["request_id"]] for r in rows)
