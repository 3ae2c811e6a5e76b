"""The capture loader's CPU per stored row, in process, step by step: interactions journaled, then read, decoded,
written (insert and feedback claim in one transaction), reviewed and checkpointed batch by batch, as the loader
process does (``collectors/spool/writer.py``), into a SQLite store that already holds ``--prefill`` rows.

CPU is ``time.process_time`` (the store driver's thread included); each round stores ``-n`` new rows and the
medians and ranges over the rounds are printed. Request ids are the gateway's (``new_id``: time first); response
ids are random (as from a real upstream, and bench/mock_upstream.py) or all the same. With ``--shadows`` every
second row is a shadow of the row before it (a 100 % shadow's mix: a shadow's row stores no response id).

Usage::

    python -m bench.loader                                  # 5 rounds of 5,000 rows into 100,000, batches of 500
    python -m bench.loader --prefill 0 --batch 200 --response-ids same
    python -m bench.loader --shadows
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import tempfile
import time
from pathlib import Path

from bench.writer import interaction
from collectors.capture import encode, interaction_payload
from collectors.record import new_id
from collectors.redact import Redactor
from collectors.review.queue import ReviewPolicy, enqueue
from collectors.spool.journal import Cursor, Journal
from collectors.spool.writer import BATCH_BYTES, decode
from collectors.store import open_store
from collectors.store.base import InteractionRow, Store

STEPS = ("read", "decode", "write", "review", "commit")


def lines(n: int, response_ids: str, shadows: bool) -> list[bytes]:
    redactor = Redactor()
    out, parent = [], ""
    for i in range(n):
        it = interaction(i)
        it.request_id = new_id()
        it.response_id = "chatcmpl-bench" if response_ids == "same" else f"chatcmpl-{new_id()[12:]}"
        it.response = {**(it.response or {}), "id": it.response_id}
        if shadows and i % 2:
            it.role, it.parent_id, it.upstream = "shadow", parent, "candidate"
            it.extra = {"comparison": {"exact": True, "similarity": 1.0, "latency_delta_ms": -3.2}}
        out.append(encode(interaction_payload(it), redactor))
        parent = it.request_id
    return out


async def prefill(store: Store, n: int, response_ids: str, shadows: bool) -> None:
    for start in range(0, n, 1000):
        rows = [decode(line) for line in lines(min(1000, n - start), response_ids, shadows)]
        await store.write([r for r in rows if isinstance(r, InteractionRow)], [])


async def round_(store: Store, root: Path, n: int, batch: int, response_ids: str, shadows: bool) -> dict[str, float]:
    """µs of CPU a row for each step, storing ``n`` rows."""
    journal = Journal(root)
    journal.open()
    for line in lines(n, response_ids, shadows):
        journal.append(line)
    assert journal.directory is not None
    cursor = Cursor(journal.directory, owned=True)
    spent = dict.fromkeys(STEPS, 0.0)
    policy = ReviewPolicy()
    while True:
        t0 = time.process_time()
        read, end = cursor.read(BATCH_BYTES, batch)
        if not read:
            break
        t1 = time.process_time()
        rows = [decode(line) for line in read]
        t2 = time.process_time()
        interactions = [r for r in rows if isinstance(r, InteractionRow)]
        await store.write(interactions, [])
        t3 = time.process_time()
        await enqueue(store, interactions, [], policy, now=time.time())
        t4 = time.process_time()
        cursor.commit(end)
        t5 = time.process_time()
        for step, (a, b) in zip(STEPS, ((t0, t1), (t1, t2), (t2, t3), (t3, t4), (t4, t5)), strict=True):
            spent[step] += b - a
    cursor.close()
    journal.close(remove=True)
    return {step: seconds / n * 1e6 for step, seconds in spent.items()}


async def main_async(args: argparse.Namespace) -> None:
    with tempfile.TemporaryDirectory(prefix="turnout-bench-loader-") as tmp:
        root = Path(tmp)
        store = open_store(f"sqlite:///{root / 'turnout.db'}")
        await prefill(store, args.prefill, args.response_ids, args.shadows)
        results = []
        for _ in range(args.rounds):
            results.append(await round_(store, root / "journal", args.n, args.batch, args.response_ids, args.shadows))
        await store.close()
    mix = ", every second row a shadow" if args.shadows else ""
    print(f"{args.n} rows a round into a store of {args.prefill}+, batches of {args.batch}, "
          f"{args.response_ids} response ids{mix}, {args.rounds} rounds: µs of CPU a row, median (range)")  # fmt: skip
    for step in (*STEPS, "total"):
        values = [sum(r.values()) if step == "total" else r[step] for r in results]
        print(f"  {step:7s} {statistics.median(values):6.1f} ({min(values):.1f}-{max(values):.1f})")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("-n", type=int, default=5000, help="rows stored a round (default 5000)")
    parser.add_argument("--prefill", type=int, default=100_000, help="rows in the store before (default 100000)")
    parser.add_argument("--batch", type=int, default=500, help="lines a batch (the loader's BATCH_LINES: 500)")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--response-ids", choices=["random", "same"], default="random")
    parser.add_argument("--shadows", action="store_true", help="every second row a shadow of the row before it")
    asyncio.run(main_async(parser.parse_args()))


if __name__ == "__main__":
    main()
