"""SQLite store through aiosqlite: WAL mode, ``synchronous=NORMAL`` (a committed batch survives a crash of the
process), a busy timeout so several workers can share one file, migrations at open.

Any ``sqlite3.OperationalError`` (locked, read-only, disk full, cannot open) means the store is unavailable
as a whole: the connection is dropped and reopened on the next call. Other errors are about the rows.

Usage: ``store = SQLiteStore("/var/lib/turnout/turnout.db"); await store.open()``.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import re
import sqlite3
import time
from collections.abc import AsyncIterator, Callable, Coroutine, Sequence
from pathlib import Path
from typing import Any, ParamSpec, TypeVar

import aiosqlite
import orjson

from collectors.store.base import SAME_CALLER_SQL, Claimed, FeedbackRow, InteractionRow, Query, StoreUnavailable
from collectors.store.migrations import MIGRATIONS, TRACKING

_INSERT_INTERACTION = (
    f"INSERT INTO interactions ({', '.join(InteractionRow._fields)}) "
    f"VALUES ({', '.join('?' * len(InteractionRow._fields))}) ON CONFLICT (request_id) DO NOTHING"
)
_INSERT_FEEDBACK = (
    f"INSERT INTO feedback ({', '.join(FeedbackRow._fields)}) "
    f"VALUES ({', '.join('?' * len(FeedbackRow._fields))}) ON CONFLICT (feedback_id) DO NOTHING"
)
# feedback is the outer loop (CROSS JOIN keeps it so), each arm found through an index on the keys given
_CLAIM_SELECT = (
    "SELECT f.feedback_id, i.route, i.variant, f.label, f.score, i.ts FROM feedback f CROSS JOIN interactions i"
)
_BY_REQUEST = " ON i.request_id = f.request_id WHERE f.counted = 0 AND f.{key} IN ({marks}) AND " + SAME_CALLER_SQL
_BY_RESPONSE = (
    " ON i.response_id = f.response_id AND i.role = 'primary' WHERE f.counted = 0 AND f.request_id IS NULL"
    " AND f.{key} IN ({marks}) AND " + SAME_CALLER_SQL
)
_PLACEHOLDER = re.compile(r"\$(\d+)")
_BUSY_TIMEOUT_MS = 2000  # several workers share one file; longer means an outage
# Pages in the WAL before a commit copies them into the database (SQLite's default: 1000, 4 MB). The capture
# loader's batches touch a leaf of the request-id index per row (the ids are random): copied every few batches,
# the same leaves were written out again and again. At 10,000 (a 40 MB WAL, kept at that size on disk) a loader's
# inserts into a 100,000-row store cost 38-42 µs a row instead of 46-47 (those inserts are about half of its CPU).
_WAL_CHECKPOINT_PAGES = 10_000
P = ParamSpec("P")
T = TypeVar("T")


def _locked(method: Callable[P, Coroutine[Any, Any, T]]) -> Callable[P, Coroutine[Any, Any, T]]:
    @functools.wraps(method)
    async def run(*args: P.args, **kwargs: P.kwargs) -> T:
        async with args[0]._lock:  # type: ignore[attr-defined]
            return await method(*args, **kwargs)

    return run


def _marks(n: int) -> str:
    return ", ".join("?" * n)


def _claims(found: Sequence[Sequence[object]]) -> dict[str, tuple[float, Claimed]]:
    """One claim per feedback id: the latest interaction wins when a response id is shared."""
    best: dict[str, tuple[float, Claimed]] = {}
    for fid, route, variant, label, score, ts in found:
        key = str(fid)
        if key not in best or float(ts) > best[key][0]:  # type: ignore[arg-type]
            best[key] = (float(ts), Claimed(str(route), str(variant), label, score))  # type: ignore[arg-type]
    return best


def _numbered(sql: str) -> str:
    """``$1`` (PostgreSQL's placeholders, the seam's one spelling) -> ``?1`` (SQLite's numbered form)."""
    return _PLACEHOLDER.sub(r"?\1", sql)


def _interaction(row: Sequence[Any]) -> InteractionRow:
    """A row of ``SELECT <InteractionRow's columns>``: SQLite keeps booleans as integers."""
    read = InteractionRow._make(row)
    return read._replace(stream=bool(read.stream))


def _probe(path: Path) -> None:
    sqlite3.connect(path, timeout=0).close()


class SQLiteStore:
    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.name = f"sqlite:{self.path}"
        self._db: aiosqlite.Connection | None = None
        self._lock = asyncio.Lock()  # one connection: one transaction at a time (writer, retention, reads)

    async def _connect(self) -> aiosqlite.Connection:
        if self._db is not None:
            return self._db
        try:
            # a probe first: aiosqlite leaves its thread finishing after a failed connect, which outlives a
            # short-lived loop (turnout export) and reports into a closed one
            await asyncio.to_thread(_probe, self.path)
            db = await aiosqlite.connect(self.path, isolation_level=None, timeout=_BUSY_TIMEOUT_MS / 1000)
        except sqlite3.Error as exc:
            raise StoreUnavailable(f"{self.name}: {exc}") from exc
        try:
            await db.execute("PRAGMA journal_mode=WAL")
            await db.execute("PRAGMA synchronous=NORMAL")
            await db.execute(f"PRAGMA busy_timeout={_BUSY_TIMEOUT_MS}")
            await db.execute(f"PRAGMA wal_autocheckpoint={_WAL_CHECKPOINT_PAGES}")
            await self._migrate(db)
        except sqlite3.Error as exc:
            await db.close()
            raise StoreUnavailable(f"{self.name}: {exc}") from exc
        self._db = db
        return db

    async def _migrate(self, db: aiosqlite.Connection) -> None:
        await db.execute("BEGIN IMMEDIATE")
        try:
            await db.execute(TRACKING["sqlite"])
            done = {row[0] for row in await db.execute_fetchall("SELECT version FROM schema_migrations")}
            for version, name, statements in MIGRATIONS:
                if version in done:
                    continue
                for statement in statements["sqlite"]:
                    await db.execute(statement)
                await db.execute(
                    "INSERT INTO schema_migrations (version, name, applied_at) VALUES (?, ?, ?)",
                    (version, name, time.time()),
                )
            await db.execute("COMMIT")
        except BaseException:
            await db.execute("ROLLBACK")
            raise

    async def _drop(self) -> None:
        db, self._db = self._db, None
        if db is not None:
            try:
                await db.close()
            except sqlite3.Error:
                pass  # the connection is being abandoned because it failed already

    @_locked
    async def open(self) -> None:
        await self._connect()

    @_locked
    async def close(self) -> None:
        await self._drop()

    @_locked
    async def schema_version(self) -> int:
        db = await self._connect()
        rows = await db.execute_fetchall("SELECT MAX(version) FROM schema_migrations")
        return int(next(iter(rows))[0])

    @_locked
    async def write(self, interactions: Sequence[InteractionRow], feedback: Sequence[FeedbackRow]) -> list[Claimed]:
        db = await self._connect()
        async with self._transaction(db):
            if interactions:
                await db.executemany(_INSERT_INTERACTION, interactions)
            if feedback:
                await db.executemany(_INSERT_FEEDBACK, feedback)
            claimed = await self._claim(db, interactions, feedback)
        return claimed

    @contextlib.asynccontextmanager
    async def _outage(self, db: aiosqlite.Connection) -> AsyncIterator[None]:
        """An ``OperationalError`` (locked, read-only, disk full) becomes ``StoreUnavailable``: an open
        transaction is rolled back and the connection dropped; the next call reopens it."""
        try:
            yield
        except sqlite3.OperationalError as exc:
            await self._rollback(db)
            await self._drop()
            raise StoreUnavailable(f"{self.name}: {exc}") from exc

    @contextlib.asynccontextmanager
    async def _transaction(self, db: aiosqlite.Connection) -> AsyncIterator[None]:
        """``BEGIN IMMEDIATE`` ... ``COMMIT``; rolled back on any error, an outage as in ``_outage``."""
        async with self._outage(db):
            await db.execute("BEGIN IMMEDIATE")
            try:
                yield
                await db.execute("COMMIT")
            except BaseException:
                await self._rollback(db)
                raise

    async def _rollback(self, db: aiosqlite.Connection) -> None:
        if db.in_transaction:
            try:
                await db.execute("ROLLBACK")
            except sqlite3.Error:
                await self._drop()

    async def _claim(
        self, db: aiosqlite.Connection, interactions: Sequence[InteractionRow], feedback: Sequence[FeedbackRow]
    ) -> list[Claimed]:
        fids = [f.feedback_id for f in feedback]
        ids = [i.request_id for i in interactions]
        rids = [i.response_id for i in interactions if i.response_id and i.role == "primary"]
        arms, args = [], []
        for join, key, values in (
            (_BY_REQUEST, "feedback_id", fids),
            (_BY_REQUEST, "request_id", ids),
            (_BY_RESPONSE, "feedback_id", fids),
            (_BY_RESPONSE, "response_id", rids),
        ):
            if values:
                arms.append(_CLAIM_SELECT + join.format(key=key, marks=_marks(len(values))))
                args += values
        found = list(await db.execute_fetchall(" UNION ALL ".join(arms), args)) if arms else []
        best = _claims(found)
        if best:
            await db.execute(f"UPDATE feedback SET counted = 1 WHERE feedback_id IN ({_marks(len(best))})", list(best))
        return [claim for _, claim in best.values()]

    @_locked
    async def page(self, query: Query, after: tuple[float, str] | None, limit: int) -> list[InteractionRow]:
        db = await self._connect()
        where: list[str] = []
        args: list[Any] = []
        if after is not None:
            where.append("(ts, request_id) > (?, ?)")
            args += after
        if query.route is not None:
            where.append("route = ?")
            args.append(query.route)
        if query.since is not None:
            where.append("ts >= ?")
            args.append(query.since)
        if query.role is not None:
            where.append("role = ?")
            args.append(query.role)
        if query.client is not None:
            where.append("client = ?")
            args.append(query.client)
        if query.tag is not None:
            where.append("instr(tags, ?) > 0")  # tags is a JSON array: the quoted tag is one whole element
            args.append(orjson.dumps(query.tag).decode())
        sql = f"SELECT {', '.join(InteractionRow._fields)} FROM interactions"
        if where:
            sql += " WHERE " + " AND ".join(where)
        rows = await db.execute_fetchall(sql + " ORDER BY ts, request_id LIMIT ?", (*args, limit))
        return [_interaction(r) for r in rows]

    @_locked
    async def feedback_for(self, request_ids: Sequence[str], response_ids: Sequence[str]) -> list[FeedbackRow]:
        db = await self._connect()
        cols = ", ".join(FeedbackRow._fields)
        sql = (
            f"SELECT {cols} FROM feedback WHERE request_id IN ({_marks(len(request_ids))}) UNION ALL "
            f"SELECT {cols} FROM feedback WHERE request_id IS NULL AND response_id IN ({_marks(len(response_ids))})"
        )
        return [FeedbackRow(*r) for r in await db.execute_fetchall(sql, (*request_ids, *response_ids))]

    async def latest_for(self, response_ids: Sequence[str]) -> dict[str, str]:
        return {rid: req for rid, req, _ in await self.primaries_for(response_ids)}  # the latest wins

    @_locked
    async def primaries_for(self, response_ids: Sequence[str]) -> list[tuple[str, str, str | None]]:
        db = await self._connect()
        rows = await db.execute_fetchall(
            f"SELECT response_id, request_id, caller FROM interactions WHERE role = 'primary' AND response_id IN "
            f"({_marks(len(response_ids))}) ORDER BY ts, request_id",
            tuple(response_ids),
        )
        return [(str(rid), str(req), caller) for rid, req, caller in rows]

    @_locked
    async def delete_expired(self, cutoff: float, route: str | None, keep_routes: Sequence[str], limit: int) -> int:
        db = await self._connect()
        if route is not None:
            where, args = "route = ? AND ts < ?", [route, cutoff]
        else:
            where, args = f"route NOT IN ({_marks(len(keep_routes))}) AND ts < ?", [*keep_routes, cutoff]
        async with self._transaction(db):
            doomed = await db.execute_fetchall(
                f"SELECT request_id, response_id FROM interactions WHERE {where} LIMIT ?", (*args, limit)
            )
            ids = [r[0] for r in doomed]
            rids = [r[1] for r in doomed if r[1]]
            if ids:
                await db.execute(f"DELETE FROM interactions WHERE request_id IN ({_marks(len(ids))})", ids)
                await db.execute(f"DELETE FROM feedback WHERE request_id IN ({_marks(len(ids))})", ids)
            if rids:
                await db.execute(
                    f"DELETE FROM feedback WHERE request_id IS NULL AND response_id IN ({_marks(len(rids))}) "
                    "AND response_id NOT IN (SELECT response_id FROM interactions WHERE response_id IS NOT NULL "
                    f"AND response_id IN ({_marks(len(rids))}))",
                    (*rids, *rids),
                )
        return len(ids)

    @_locked
    async def delete_orphan_feedback(self, cutoff: float, limit: int) -> int:
        db = await self._connect()
        async with self._outage(db):
            cursor = await db.execute(
                "DELETE FROM feedback WHERE feedback_id IN (SELECT feedback_id FROM feedback WHERE ts < ? LIMIT ?)",
                (cutoff, limit),
            )
        return int(cursor.rowcount)

    @_locked
    async def fetch(self, sql: str, *args: Any) -> list[tuple[Any, ...]]:
        db = await self._connect()
        async with self._outage(db):
            return [tuple(row) for row in await db.execute_fetchall(_numbered(sql), args)]

    async def execute(self, sql: str, *args: Any) -> int:
        return (await self.transact([(sql, args)]))[0]

    async def executemany(self, sql: str, rows: Sequence[Sequence[Any]]) -> None:
        await self.transact([(sql, row) for row in rows])

    @_locked
    async def transact(self, statements: Sequence[tuple[str, Sequence[Any]]]) -> list[int]:
        db = await self._connect()
        changed = []
        async with self._transaction(db):
            for sql, args in statements:
                cursor = await db.execute(_numbered(sql), tuple(args))
                changed.append(max(int(cursor.rowcount), 0))
        return changed
