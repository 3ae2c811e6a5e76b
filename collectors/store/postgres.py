"""PostgreSQL store through asyncpg, for several gateway replicas sharing one database.

Batches go in with one ``INSERT ... SELECT FROM unnest(...)`` per table (one round trip whatever the batch
size); migrations run under an advisory lock so replicas starting together apply each exactly once. The
feedback claim at the end of each write runs under another, held until commit, so feedback and its
interaction committed at the same moment by two replicas are still counted once in the feedback metrics.
Connection-level failures (refused, reset, shutting down, read-only, disk full) raise ``StoreUnavailable``
and the pool reconnects on the next call; other errors are about the rows.

Usage: ``store = PostgresStore("postgresql://turnout@db/turnout"); await store.open()``.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import AsyncIterator, Sequence
from typing import Any

import asyncpg
import orjson

from collectors.redact import mask_url
from collectors.store.base import SAME_CALLER_SQL, Claimed, FeedbackRow, InteractionRow, Query, StoreUnavailable
from collectors.store.migrations import MIGRATIONS, TRACKING

_MIGRATION_LOCK = 0x7475726E  # "turn"
_CLAIM_LOCK = 0x7475726E6F7574  # "turnout": orders the feedback claims of every writer
# the array type of each column sent through unnest(); every other column is text
_TYPES = {"ts": "float8", "status": "int4", "latency_ms": "float8", "ttft_ms": "float8", "stream": "bool",
          "tokens": "float8", "similarity": "float8", "cost_usd": "float8", "score": "float8",
          "task_completed": "int4"}  # fmt: skip
_TYPES_I = tuple(_TYPES.get(name, "text") for name in InteractionRow._fields)
_TYPES_F = tuple(_TYPES.get(name, "text") for name in FeedbackRow._fields)
_INSERT_INTERACTIONS = (
    f"INSERT INTO interactions ({', '.join(InteractionRow._fields)}) SELECT * FROM unnest("
    + ", ".join(f"${i + 1}::{t}[]" for i, t in enumerate(_TYPES_I))
    + ") ON CONFLICT (request_id) DO NOTHING"
)
_INSERT_FEEDBACK = (
    f"INSERT INTO feedback ({', '.join(FeedbackRow._fields)}) SELECT * FROM unnest("
    + ", ".join(f"${i + 1}::{t}[]" for i, t in enumerate(_TYPES_F))
    + ") ON CONFLICT (feedback_id) DO NOTHING"
)
_CLAIM_SELECT = "SELECT f.feedback_id, i.route, i.variant, f.label, f.score, i.ts FROM feedback f JOIN interactions i"
_CLAIM = " UNION ALL ".join(
    f"{_CLAIM_SELECT} ON {join} WHERE NOT f.counted AND {where} AND {SAME_CALLER_SQL}"
    for join, where in (
        ("i.request_id = f.request_id", "f.feedback_id = ANY($1::text[])"),
        ("i.request_id = f.request_id", "f.request_id = ANY($2::text[])"),
        (
            "i.response_id = f.response_id AND i.role = 'primary'",
            "f.request_id IS NULL AND f.feedback_id = ANY($1::text[])",
        ),
        (
            "i.response_id = f.response_id AND i.role = 'primary'",
            "f.request_id IS NULL AND f.response_id = ANY($3::text[])",
        ),
    )
)
# SQLSTATE classes meaning "the database as a whole cannot take writes now"
_UNAVAILABLE_STATES = ("08", "53", "57", "58", "25006")


def _unavailable(exc: BaseException) -> bool:
    if isinstance(exc, OSError | TimeoutError | asyncpg.InterfaceError | asyncpg.ConnectionDoesNotExistError):
        return True
    state = getattr(exc, "sqlstate", None) or ""
    return isinstance(exc, asyncpg.PostgresError) and state.startswith(_UNAVAILABLE_STATES)


def _columns(rows: Sequence[tuple[Any, ...]], width: int) -> list[list[Any]]:
    return [[row[i] for row in rows] for i in range(width)]


class PostgresStore:
    def __init__(self, dsn: str) -> None:
        self.dsn = dsn
        self.name = "postgres:" + mask_url(dsn).split("://", 1)[-1]
        self._pool: asyncpg.Pool | None = None

    async def _connect(self) -> asyncpg.Pool:
        if self._pool is not None:
            return self._pool
        try:
            pool = await asyncpg.create_pool(
                self.dsn, min_size=1, max_size=2, timeout=5, command_timeout=30,
                # the experiment report's aggregation: JIT compiling costs more than it saves here, and its
                # per-user hash table (100,000 users: ~20 MB) must not spill to disk. No parallel workers: each
                # would rebuild the feedback hash table the report joins (1,000,000 rows: 4.3 s CPU instead of
                # 3.0); the report runs its queries side by side on the pool's two connections instead
                server_settings={"jit": "off", "work_mem": "64MB", "max_parallel_workers_per_gather": "0"},
            )  # fmt: skip
        except Exception as exc:
            if _unavailable(exc) or isinstance(exc, asyncpg.PostgresError):
                raise StoreUnavailable(f"{self.name}: {type(exc).__name__}: {exc}") from exc
            raise
        try:
            async with pool.acquire() as conn, conn.transaction():
                await conn.execute("SELECT pg_advisory_xact_lock($1)", _MIGRATION_LOCK)
                await conn.execute(TRACKING["postgres"])
                done = {r[0] for r in await conn.fetch("SELECT version FROM schema_migrations")}
                for version, name, statements in MIGRATIONS:
                    if version in done:
                        continue
                    for statement in statements["postgres"]:
                        await conn.execute(statement)
                    await conn.execute(
                        "INSERT INTO schema_migrations (version, name, applied_at) VALUES ($1, $2, $3)",
                        version,
                        name,
                        time.time(),
                    )
        except Exception as exc:
            await pool.close()
            if _unavailable(exc):
                raise StoreUnavailable(f"{self.name}: {type(exc).__name__}: {exc}") from exc
            raise
        self._pool = pool
        return pool

    @contextlib.asynccontextmanager
    async def _outage(self) -> AsyncIterator[None]:
        """A lost or unreachable server becomes ``StoreUnavailable``; the pool is dropped, the next call reconnects."""
        try:
            yield
        except Exception as exc:
            if _unavailable(exc):
                await self._drop()
                raise StoreUnavailable(f"{self.name}: {type(exc).__name__}: {exc}") from exc
            raise

    async def _drop(self) -> None:
        pool, self._pool = self._pool, None
        if pool is not None:
            pool.terminate()

    async def open(self) -> None:
        await self._connect()

    async def close(self) -> None:
        pool, self._pool = self._pool, None
        if pool is not None:
            await pool.close()

    async def schema_version(self) -> int:
        pool = await self._connect()
        return int(await pool.fetchval("SELECT MAX(version) FROM schema_migrations"))

    async def write(self, interactions: Sequence[InteractionRow], feedback: Sequence[FeedbackRow]) -> list[Claimed]:
        pool = await self._connect()
        async with self._outage():
            async with pool.acquire() as conn, conn.transaction():
                if interactions:
                    await conn.execute(_INSERT_INTERACTIONS, *_columns(interactions, len(_TYPES_I)))
                if feedback:
                    await conn.execute(_INSERT_FEEDBACK, *_columns(feedback, len(_TYPES_F)))
                # Claims run one at a time (the lock holds until commit), so each sees what the one before it
                # committed: feedback and its interaction written at once by two replicas are still joined.
                await conn.execute("SELECT pg_advisory_xact_lock($1)", _CLAIM_LOCK)
                found = await conn.fetch(
                    _CLAIM,
                    [f.feedback_id for f in feedback],
                    [i.request_id for i in interactions],
                    [i.response_id for i in interactions if i.response_id and i.role == "primary"],
                )
                best: dict[str, tuple[float, Claimed]] = {}
                for fid, route, variant, label, score, ts in found:
                    if fid not in best or ts > best[fid][0]:
                        best[fid] = (ts, Claimed(route, variant, label, score))
                claimed = await conn.fetch(
                    "UPDATE feedback SET counted = TRUE WHERE NOT counted AND feedback_id = ANY($1::text[]) "
                    "RETURNING feedback_id",
                    list(best),
                )
        return [best[r[0]][1] for r in claimed]

    async def page(self, query: Query, after: tuple[float, str] | None, limit: int) -> list[InteractionRow]:
        pool = await self._connect()
        where, args = [], []

        def arg(value: object) -> str:
            args.append(value)
            return f"${len(args)}"

        if after is not None:
            where.append(f"(ts, request_id) > ({arg(after[0])}::float8, {arg(after[1])}::text)")
        if query.route is not None:
            where.append(f"route = {arg(query.route)}")
        if query.since is not None:
            where.append(f"ts >= {arg(query.since)}")
        if query.role is not None:
            where.append(f"role = {arg(query.role)}")
        if query.client is not None:
            where.append(f"client = {arg(query.client)}")
        if query.tag is not None:  # tags is a JSON array: the quoted tag is one whole element
            where.append(f"strpos(tags, {arg(orjson.dumps(query.tag).decode())}) > 0")
        sql = f"SELECT {', '.join(InteractionRow._fields)} FROM interactions"
        if where:
            sql += " WHERE " + " AND ".join(where)
        sql += f" ORDER BY ts, request_id LIMIT {arg(limit)}"
        return [InteractionRow(*r) for r in await pool.fetch(sql, *args)]

    async def feedback_for(self, request_ids: Sequence[str], response_ids: Sequence[str]) -> list[FeedbackRow]:
        pool = await self._connect()
        cols = ", ".join(FeedbackRow._fields)
        rows = await pool.fetch(
            f"SELECT {cols} FROM feedback WHERE request_id = ANY($1::text[]) UNION ALL "
            f"SELECT {cols} FROM feedback WHERE request_id IS NULL AND response_id = ANY($2::text[])",
            list(request_ids),
            list(response_ids),
        )
        return [FeedbackRow(*r) for r in rows]

    async def latest_for(self, response_ids: Sequence[str]) -> dict[str, str]:
        return {rid: req for rid, req, _ in await self.primaries_for(response_ids)}  # the latest wins

    async def primaries_for(self, response_ids: Sequence[str]) -> list[tuple[str, str, str | None]]:
        pool = await self._connect()
        rows = await pool.fetch(
            "SELECT response_id, request_id, caller FROM interactions "
            "WHERE role = 'primary' AND response_id = ANY($1::text[]) ORDER BY ts, request_id",
            list(response_ids),
        )
        return [(r[0], r[1], r[2]) for r in rows]

    async def delete_expired(self, cutoff: float, route: str | None, keep_routes: Sequence[str], limit: int) -> int:
        pool = await self._connect()
        if route is not None:
            where, args = "route = $1 AND ts < $2", [route, cutoff]
        else:
            where, args = "NOT (route = ANY($1::text[])) AND ts < $2", [list(keep_routes), cutoff]
        async with self._outage():
            async with pool.acquire() as conn, conn.transaction():
                doomed = await conn.fetch(
                    f"DELETE FROM interactions WHERE request_id IN (SELECT request_id FROM interactions "
                    f"WHERE {where} LIMIT $3) RETURNING request_id, response_id",
                    *args,
                    limit,
                )
                ids = [r[0] for r in doomed]
                rids = [r[1] for r in doomed if r[1]]
                await conn.execute("DELETE FROM feedback WHERE request_id = ANY($1::text[])", ids)
                await conn.execute(
                    "DELETE FROM feedback WHERE request_id IS NULL AND response_id = ANY($1::text[]) AND NOT EXISTS "
                    "(SELECT 1 FROM interactions i WHERE i.response_id = feedback.response_id)",
                    rids,
                )
        return len(ids)

    async def delete_orphan_feedback(self, cutoff: float, limit: int) -> int:
        pool = await self._connect()
        async with self._outage():
            rows = await pool.fetch(
                "DELETE FROM feedback WHERE feedback_id IN (SELECT feedback_id FROM feedback WHERE ts < $1 LIMIT $2) "
                "RETURNING feedback_id",
                cutoff,
                limit,
            )
        return len(rows)

    async def fetch(self, sql: str, *args: Any) -> list[tuple[Any, ...]]:
        pool = await self._connect()
        async with self._outage():
            return [tuple(row) for row in await pool.fetch(sql, *args)]

    async def execute(self, sql: str, *args: Any) -> int:
        return (await self.transact([(sql, args)]))[0]

    async def executemany(self, sql: str, rows: Sequence[Sequence[Any]]) -> None:
        pool = await self._connect()
        async with self._outage():
            async with pool.acquire() as conn, conn.transaction():
                await conn.executemany(sql, rows)

    async def transact(self, statements: Sequence[tuple[str, Sequence[Any]]]) -> list[int]:
        pool = await self._connect()
        changed = []
        async with self._outage():
            async with pool.acquire() as conn, conn.transaction():
                for sql, args in statements:
                    status = await conn.execute(sql, *args)  # e.g. "UPDATE 3", "INSERT 0 1"
                    last = status.rsplit(" ", 1)[-1]
                    changed.append(int(last) if last.isdigit() else 0)
        return changed
