"""How long ``turnout experiment report`` takes over a large store (goal: under 10 s for 1,000,000 interactions
on PostgreSQL). Makes the data itself: a throwaway PostgreSQL (or ``--dsn``), N primary interactions of
``--users`` users split 50/50 over two variants across seven days, feedback on 30 % of them, loaded with COPY.

Usage: ``python -m bench.experiment_report --rows 1000000`` (prints the load time and the report's time)
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import time
from pathlib import Path
from typing import Any

import asyncpg
import orjson

from collectors.store import open_store
from gateway.analysis import build_report, render_table
from gateway.config import parse_config
from policies.routing import sticky_variant, unit_id

CONFIG = """
store: {dsn}
upstreams: {{prod: {{provider: dummy}}, cand: {{provider: dummy}}}}
routes:
  bot:
    variants: {{prod: 50, cand: 50}}
    analysis:
      {{control: prod, primary: thumbs_up, guardrails: {{error_rate: 0.01, latency_p95: 0.1}}, min_duration: 1d}}
"""
INTERACTION_COLUMNS = ("request_id", "ts", "route", "experiment", "variant", "role", "parent_id", "upstream",
                       "endpoint", "status", "outcome", "latency_ms", "ttft_ms", "stream", "response_id", "record",
                       "unit", "tokens", "similarity")  # fmt: skip


async def load(dsn: str, rows: int, users: int, seed: int) -> None:
    rng = random.Random(seed)
    store = open_store(dsn)
    await store.open()  # migrations
    await store.close()
    conn = await asyncpg.connect(dsn)
    try:
        start = time.time() - 7 * 86400
        units = [(unit_id(f"user-{u}"), sticky_variant("bot", f"user-{u}", {"prod": 50, "cand": 50}))
                 for u in range(users)]  # fmt: skip
        batch, feedback, done = [], [], 0
        while done < rows:
            unit, variant = units[rng.randrange(users)]
            rid = f"{rng.getrandbits(128):032x}"  # as the gateway makes them (random: no order on disk)
            failed = rng.random() < 0.01
            record = orjson.dumps({"k": "i", "request_id": rid, "extra": {"unit": unit}}).decode()
            batch.append((rid, start + 7 * 86400 * done / rows, "bot", "bot", variant, "primary", None, variant,
                          "chat.completions", 502 if failed else 200, "upstream_error" if failed else "ok",
                          rng.lognormvariate(5, 0.4), None, False, None, record, unit, 120.0, None))  # fmt: skip
            if rng.random() < 0.3:
                good = rng.random() < (0.62 if variant == "cand" else 0.6)
                feedback.append((f"f{rid}", start + 7 * 86400 * done / rows + 5, rid, None, None,
                                 "good" if good else "bad", "{}", None))  # fmt: skip
            done += 1
            if len(batch) == 50_000:
                await _copy(conn, batch, feedback)
                batch, feedback = [], []
        await _copy(conn, batch, feedback)
        await conn.execute("ANALYZE interactions; ANALYZE feedback")
    finally:
        await conn.close()


async def _copy(conn: Any, batch: list[tuple[Any, ...]], feedback: list[tuple[Any, ...]]) -> None:
    await conn.copy_records_to_table("interactions", records=batch, columns=INTERACTION_COLUMNS)
    cols = ("feedback_id", "ts", "request_id", "response_id", "score", "label", "record", "task_completed")
    await conn.copy_records_to_table("feedback", records=feedback, columns=cols)


async def report(dsn: str, series: bool) -> float:
    config = parse_config(CONFIG.format(dsn=dsn).encode(), "bench.yaml").config
    store = open_store(dsn)
    await store.open()
    try:
        t = time.perf_counter()
        data = await build_report(store, config, "bot", now=time.time(), series=series)
        took = time.perf_counter() - t
    finally:
        await store.close()
    if not series:
        print(render_table(data))
    return took


def _postmaster(data_dir: Path) -> int:
    return int((data_dir / "postmaster.pid").read_text().split()[0])


def _stats(data_dir: Path) -> dict[int, list[str]]:
    """The /proc stat fields (after the name) of the PostgreSQL server's processes: the postmaster, its children."""
    master, out = _postmaster(data_dir), {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(stat.parent.name) == master or int(fields[1]) == master:
            out[int(stat.parent.name)] = fields
    return out


def pg_cpu_s(data_dir: Path | None) -> float:
    """CPU seconds used so far by the PostgreSQL server's processes (the postmaster's children), from /proc:
    what the report costs with the machine to itself, whatever else is running."""
    if data_dir is None:
        return 0.0
    master, ticks = _postmaster(data_dir), os.sysconf("SC_CLK_TCK")
    total = 0.0
    for pid, fields in _stats(data_dir).items():
        if pid == master:  # its own time and that of the children it reaped (backends, parallel workers)
            total += sum(map(int, fields[11:15])) / ticks
        else:
            total += (int(fields[11]) + int(fields[12])) / ticks
    return total


def timed(dsn: str, series: bool, data_dir: Path | None) -> str:
    before = set(_stats(data_dir)) if data_dir else set()
    cpu, own = pg_cpu_s(data_dir), time.process_time()
    wall = asyncio.run(report(dsn, series))
    deadline = time.monotonic() + 5  # the report's backends have exited and been reaped: their time is counted
    while data_dir and set(_stats(data_dir)) - before and time.monotonic() < deadline:
        time.sleep(0.05)
    used = pg_cpu_s(data_dir) - cpu + time.process_time() - own
    return f"{wall:.2f} s wall, {used:.2f} s CPU (PostgreSQL + this process)" if data_dir else f"{wall:.2f} s wall"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--users", type=int, default=100_000)
    parser.add_argument("--dsn", help="an empty PostgreSQL database (default: a throwaway server)")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--no-load", action="store_true", help="--dsn already holds the data")
    parser.add_argument("--data-dir", type=Path, help="with --dsn: the server's data directory (for its CPU time)")
    args = parser.parse_args()
    server = None
    dsn, data_dir = args.dsn, args.data_dir
    if dsn is None:
        from tests.collectors.pg import PostgresServer

        server = PostgresServer()
        dsn, data_dir = server.create_database(), server.data
    try:
        if not args.no_load:
            t = time.perf_counter()
            asyncio.run(load(dsn, args.rows, args.users, args.seed))
            print(f"loaded {args.rows:,} interactions of {args.users:,} users in {time.perf_counter() - t:.1f} s")
        print(f"load average {', '.join(f'{x:.1f}' for x in os.getloadavg())} (1, 5, 15 min) on {os.cpu_count()} cores")
        for attempt in (1, 2):  # the second run has a warm cache, as a daily report would
            print(f"report run {attempt} (terminal, the controller's query): {timed(dsn, False, data_dir)}")
            print(f"report run {attempt} (--html/--json, with the series): {timed(dsn, True, data_dir)}")
    finally:
        if server is not None:
            server.close()


if __name__ == "__main__":
    main()
