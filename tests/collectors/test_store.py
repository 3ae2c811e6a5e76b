"""Both store backends against a real SQLite file and a real PostgreSQL server."""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import AsyncIterator
from pathlib import Path

import asyncpg
import orjson
import pytest

from collectors.capture import encode, interaction_payload
from collectors.redact import Redactor
from collectors.spool.writer import decode
from collectors.store import open_store
from collectors.store.base import Claimed, FeedbackRow, Query, Store, joined
from collectors.store.migrations import LATEST
from tests.collectors.pg import pg_dsn, postgres_server  # noqa: F401
from tests.collectors.records import interaction


@pytest.fixture(params=["sqlite", "postgres"])
def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path}/store.db"
    return str(request.getfixturevalue("pg_dsn"))


@pytest.fixture
async def store(store_url: str) -> AsyncIterator[Store]:
    s = open_store(store_url)
    await s.open()
    try:
        yield s
    finally:
        await s.close()


def row(request_id: str, **kw: object):  # type: ignore[no-untyped-def]
    return decode(encode(interaction_payload(interaction(request_id, **kw)), Redactor()).rstrip(b"\n"))  # type: ignore[arg-type]


def feedback(fid: str, ts: float, *, request_id: str | None = None, response_id: str | None = None, **kw: object):  # type: ignore[no-untyped-def]
    payload = {"k": "f", "feedback_id": fid, "ts": ts, "request_id": request_id, "response_id": response_id, **kw}
    return decode(orjson.dumps(payload))


async def all_rows(store: Store, query: Query | None = None) -> list[dict]:  # type: ignore[type-arg]
    return [r async for r in joined(store, query or Query(), page_size=3)]


async def test_migrations_apply_once(store_url: str) -> None:
    for _ in range(2):
        s = open_store(store_url)
        await s.open()
        assert await s.schema_version() == LATEST  # type: ignore[attr-defined]
        await s.close()


async def test_inserts_are_idempotent_on_request_id(store: Store) -> None:
    rows = [row(f"r{i}", ts=1000.0 + i) for i in range(7)]
    await store.write(rows, [])
    await store.write(rows[3:], [])  # a journal replayed after a crash
    got = await all_rows(store)
    assert [r["request_id"] for r in got] == [f"r{i}" for i in range(7)]  # paged in threes, ordered by ts


async def test_feedback_joins_by_request_and_latest_response_id(store: Store) -> None:
    fb_early = feedback("f1", 1.0, request_id="a", label="good", score=0.9)
    claimed = await store.write([], [fb_early])  # before its interaction
    assert claimed == []
    claimed = await store.write(
        [row("a", ts=10.0), row("b", ts=11.0, response_id="same"), row("c", ts=12.0, response_id="same")],
        [feedback("f2", 20.0, response_id="same", label="bad"), feedback("f3", 21.0, request_id="a", score=0.2)],
    )
    assert sorted(claimed, key=str) == sorted(
        [Claimed("bot", "v1", "good", 0.9), Claimed("bot", "v1", "bad", None), Claimed("bot", "v1", None, 0.2)],
        key=str,
    )
    assert await store.write([], [feedback("f4", 22.0, request_id="nobody")]) == []
    got = {r["request_id"]: r["feedback"] for r in await all_rows(store)}
    assert [f["feedback_id"] for f in got["a"]] == ["f1", "f3"]  # oldest first
    assert got["b"] == []
    assert [f["feedback_id"] for f in got["c"]] == ["f2"]  # the latest interaction with that upstream id
    assert await store.write([row("a", ts=10.0)], []) == []  # counted once, replay or not


async def test_query_filters(store: Store) -> None:
    await store.write(
        [
            row("p1", ts=100.0),
            row("s1", ts=101.0, role="shadow", parent_id="p1", variant="cand"),
            row("o1", ts=200.0, route="other"),
        ],
        [],
    )
    assert [r["request_id"] for r in await all_rows(store, Query(role="shadow"))] == ["s1"]
    assert [r["request_id"] for r in await all_rows(store, Query(route="other"))] == ["o1"]
    assert [r["request_id"] for r in await all_rows(store, Query(since=150.0))] == ["o1"]


async def test_delete_expired_takes_feedback_along(store: Store) -> None:
    await store.write(
        [row("old", ts=10.0), row("new", ts=1000.0), row("kept", ts=10.0, route="long")],
        [feedback("f1", 11.0, request_id="old"), feedback("f2", 1001.0, request_id="new")],
    )
    assert await store.delete_expired(500.0, None, ["long"], 1000) == 1
    assert await store.delete_expired(5.0, "long", [], 1000) == 0
    got = {r["request_id"]: r["feedback"] for r in await all_rows(store)}
    assert set(got) == {"new", "kept"}
    assert len(await store.feedback_for(["old", "new"], [])) == 1


async def test_a_rejected_row_raises_a_row_error_not_an_outage(tmp_path: Path) -> None:
    path = tmp_path / "s.db"
    s = open_store(f"sqlite:///{path}")
    await s.open()
    with sqlite3.connect(path) as db:
        db.execute(
            "CREATE TRIGGER poison BEFORE INSERT ON interactions WHEN NEW.request_id = 'bad' "
            "BEGIN SELECT RAISE(ABORT, 'rejected'); END"
        )
    with pytest.raises(sqlite3.IntegrityError):
        await s.write([row("ok"), row("bad")], [])
    await s.write([row("ok")], [])
    assert [r["request_id"] for r in await all_rows(s)] == ["ok"]
    await s.close()


async def test_postgres_rejected_row_is_a_row_error(pg_dsn: str) -> None:  # noqa: F811

    s = open_store(pg_dsn)
    await s.open()
    conn = await asyncpg.connect(pg_dsn)
    try:
        await conn.execute(
            "CREATE FUNCTION poison() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN "
            "IF NEW.request_id = 'bad' THEN RAISE EXCEPTION 'rejected'; END IF; RETURN NEW; END $$"
        )
        await conn.execute("CREATE TRIGGER poison BEFORE INSERT ON interactions FOR EACH ROW EXECUTE FUNCTION poison()")
    finally:
        await conn.close()
    with pytest.raises(asyncpg.RaiseError):
        await s.write([row("ok"), row("bad")], [])
    await s.write([row("ok")], [])
    assert [r["request_id"] for r in await all_rows(s)] == ["ok"]
    await s.close()


def test_feedback_row_shape() -> None:
    fb = feedback("f", 1.0, request_id="r", score=1, label="good")
    assert isinstance(fb, FeedbackRow) and fb.score == 1.0


async def test_feedback_and_its_interaction_committed_at_once_by_two_replicas_count_once(store_url: str) -> None:
    replicas = [open_store(store_url), open_store(store_url)]
    for s in replicas:
        await s.open()
    try:
        claimed: list[Claimed] = []
        for i in range(100):  # one replica stores the interaction while the other stores its feedback
            got = await asyncio.gather(
                replicas[i % 2].write([row(f"r{i}", ts=float(i))], []),
                replicas[1 - i % 2].write([], [feedback(f"f{i}", float(i), request_id=f"r{i}", label="good")]),
            )
            claimed += got[0] + got[1]
        rows = await all_rows(replicas[0])
    finally:
        for s in replicas:
            await s.close()
    assert all(len(r["feedback"]) == 1 for r in rows) and len(rows) == 100
    assert len(claimed) == 100  # the feedback metric counts every one, exactly once
