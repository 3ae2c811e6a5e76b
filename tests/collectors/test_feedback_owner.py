"""Feedback ownership in the store (security finding 2), on SQLite and PostgreSQL: feedback joins an interaction
(in the metrics claim and in every read: export, datasets) only from the caller that made it or from the admin
key ("*"); by response id, the latest of that caller's interactions. Stores written by the previous release
(no caller column) are migrated: their feedback keeps joining their interactions, and new feedback on them
joins only from the admin key (their ids came from a predictable generator)."""

from __future__ import annotations

import sqlite3
import time

import asyncpg
import orjson

from collectors.store import open_store
from collectors.store.base import Claimed, Store
from collectors.store.migrations import MIGRATIONS, TRACKING
from tests.collectors.pg import pg_dsn, postgres_server  # noqa: F401
from tests.collectors.test_store import all_rows, feedback, row, store, store_url  # noqa: F401

CORRECTION = {"role": "assistant", "content": "the attacker's answer"}


async def test_feedback_joins_only_from_its_caller_or_the_admin(store: Store) -> None:  # noqa: F811
    claimed = await store.write(
        [
            row("a", ts=10.0, caller="alice", response_id="same"),
            row("b", ts=11.0, caller="bob", response_id="same"),
        ],
        [
            feedback("f1", 20.0, request_id="a", caller="mallory", label="good", correction=CORRECTION),
            feedback("f2", 21.0, request_id="a", caller="alice", label="bad"),
            feedback("f3", 22.0, request_id="b", caller="*", score=0.5),
            feedback("f4", 23.0, response_id="same", caller="alice", label="good"),  # alice's "same" is a, not b
            feedback("f5", 24.0, response_id="same", caller="mallory", label="good"),
        ],
    )
    want = [Claimed("bot", "v1", "bad", None), Claimed("bot", "v1", None, 0.5), Claimed("bot", "v1", "good", None)]
    assert sorted(claimed, key=str) == sorted(want, key=str)
    # feedback first, its interaction later: still only the owner's counts
    assert await store.write([], [feedback("f6", 30.0, request_id="c", caller="mallory", label="good")]) == []
    assert await store.write([row("c", ts=31.0, caller="carol")], []) == []
    got = {r["request_id"]: [f["feedback_id"] for f in r["feedback"]] for r in await all_rows(store)}
    assert got == {"a": ["f2", "f4"], "b": ["f3"], "c": []}


def _legacy_sqlite(path: str) -> None:
    with sqlite3.connect(path) as db:
        db.execute(TRACKING["sqlite"])
        for version, name, statements in MIGRATIONS[:1]:
            for statement in statements["sqlite"]:
                db.execute(statement)
            db.execute("INSERT INTO schema_migrations VALUES (?, ?, ?)", (version, name, time.time()))
        db.execute(_LEGACY_INTERACTION.format(*"?" * 16), _legacy_values())
        db.execute(_LEGACY_FEEDBACK)
    db.close()


async def _legacy_postgres(dsn: str) -> None:
    conn = await asyncpg.connect(dsn)
    try:
        await conn.execute(TRACKING["postgres"])
        for version, name, statements in MIGRATIONS[:1]:
            for statement in statements["postgres"]:
                await conn.execute(statement)
            await conn.execute("INSERT INTO schema_migrations VALUES ($1, $2, $3)", version, name, time.time())
        await conn.execute(_LEGACY_INTERACTION.format(*(f"${i + 1}" for i in range(16))), *_legacy_values())
        await conn.execute(_LEGACY_FEEDBACK)
    finally:
        await conn.close()


_LEGACY_INTERACTION = (
    "INSERT INTO interactions (request_id, ts, route, experiment, variant, role, parent_id, upstream, endpoint, "
    "status, outcome, latency_ms, ttft_ms, stream, response_id, record) "
    "VALUES ({}, {}, {}, {}, {}, {}, {}, {}, {}, {}, {}, {}, {}, {}, {}, {})"
)
_LEGACY_FEEDBACK = (
    "INSERT INTO feedback (feedback_id, ts, request_id, response_id, score, label, record) "
    'VALUES (\'old-f\', 1.0, \'old\', NULL, NULL, \'good\', \'{"k": "f", "feedback_id": "old-f", "label": "good", '
    '"request_id": "old", "ts": 1.0}\')'
)


def _legacy_values() -> tuple[object, ...]:
    record = orjson.loads(row("old", ts=5.0).record)
    record.pop("caller", None)
    text = orjson.dumps(record).decode()
    return ("old", 5.0, "bot", "bot", "v1", "primary", None, "v1", "chat.completions", 200, "ok", 12.5, None, False,
            "chatcmpl-old", text)  # fmt: skip


async def test_a_store_of_the_previous_release_keeps_its_joins(store_url: str) -> None:  # noqa: F811
    if store_url.startswith("sqlite"):
        _legacy_sqlite(store_url.removeprefix("sqlite:///"))
    else:
        await _legacy_postgres(store_url)
    s = open_store(store_url)
    await s.open()
    try:
        claimed = await s.write(
            [],
            [
                feedback("new-f", 50.0, request_id="old", caller="mallory", label="good", correction=CORRECTION),
                feedback("admin-f", 51.0, request_id="old", caller="*", label="bad"),
            ],
        )
        assert claimed == [Claimed("bot", "v1", "bad", None)]
        (old,) = await all_rows(s)
        assert [f["feedback_id"] for f in old["feedback"]] == ["old-f", "admin-f"]
    finally:
        await s.close()
