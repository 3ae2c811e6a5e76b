"""Capture writer throughput: interactions per second from the journal into SQLite and PostgreSQL.

Spools N chat interactions (about 1.5 KB of JSON each, a realistic training candidate) in the journal while
the store is unreachable, then times the loader process draining them into the store (start, read, decode,
insert, commit, checkpoint): the writer's sustained rate. Then times ``Capture.record`` (the request-path part:
redact, sanitise, encode, append) with the loader running, with secrets-only and e-mail+phone redaction.
PostgreSQL is a throwaway server (initdb in a temporary directory) unless ``--pg DSN`` names one.

Usage::

    python -m bench.writer                      # 20,000 interactions into SQLite and PostgreSQL
    python -m bench.writer -n 50000 --stores sqlite
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import tempfile
import time
from pathlib import Path

from prometheus_client import CollectorRegistry

from collectors.capture import Capture, CapturePolicy
from collectors.metrics import Metrics
from collectors.record import Interaction

QUESTION = "My order #{i} arrived damaged, the box was crushed and two items are missing. What can I do? " * 3
ANSWER = "I'm sorry to hear that. I have opened a replacement request for order #{i}; you will get an e-mail. " * 4


def interaction(i: int) -> Interaction:
    return Interaction(
        request_id=f"bench-{i:08d}-{time.time_ns()}",
        ts=time.time(),
        route="support-bot",
        experiment="v4-ab",
        variant="prod-v3" if i % 10 else "cand-v4",
        role="primary",
        parent_id=None,
        upstream="prod-v3",
        endpoint="chat.completions",
        request={
            "model": "support-bot",
            "messages": [
                {"role": "system", "content": "You are the support assistant of an online shop."},
                {"role": "user", "content": QUESTION.format(i=i)},
            ],
            "temperature": 0.2,
        },
        response={
            "id": f"chatcmpl-{i}",
            "object": "chat.completion",
            "created": int(time.time()),
            "model": "ft:gpt-4o-mini:acme::v3",
            "choices": [
                {"index": 0, "message": {"role": "assistant", "content": ANSWER.format(i=i)}, "finish_reason": "stop"}
            ],
            "usage": {"prompt_tokens": 90, "completion_tokens": 80, "total_tokens": 170},
        },
        status=200,
        outcome="ok",
        latency_ms=412.0,
        ttft_ms=None,
        usage={"prompt_tokens": 90, "completion_tokens": 80, "total_tokens": 170},
        error=None,
        stream=False,
        capture=True,
        response_id=f"chatcmpl-{i}",
    )


async def append_cost(url: str, n: int, state_dir: Path, kinds: frozenset[str]) -> tuple[float, float]:
    """Median and p99 µs of ``Capture.record`` (the request-path part) with the loader running."""
    capture = Capture(url, state_dir, metrics=Metrics(CollectorRegistry()))
    capture.configure(CapturePolicy(redact={"support-bot": kinds}))
    await capture.start()
    items = [interaction(i) for i in range(n)]
    costs = []
    for i, it in enumerate(items):
        t0 = time.perf_counter()
        capture.record(it)
        costs.append(time.perf_counter() - t0)
        if i % 50 == 0:
            await asyncio.sleep(0)  # a serving loop yields between requests
    while not capture.idle:  # noqa: ASYNC110 (polling is what is measured)
        await asyncio.sleep(0.01)
    await capture.close()
    costs.sort()
    return statistics.median(costs) * 1e6, costs[int(len(costs) * 0.99)] * 1e6


async def drain_rate(url: str, n: int, state_dir: Path) -> float:
    """Interactions/s the loader commits: ``n`` spooled while the store was unreachable, then drained."""
    down = Capture(f"sqlite:///{state_dir}/unreachable/x/y.db", state_dir, metrics=Metrics(CollectorRegistry()))
    await down.start()
    for i in range(n):
        down.record(interaction(i))
    await down.close(drain_s=0.1)
    capture = Capture(url, state_dir, metrics=Metrics(CollectorRegistry()))
    started = time.perf_counter()
    await capture.start()
    while not capture.idle or capture.loader.stored < n:  # noqa: ASYNC110
        await asyncio.sleep(0.005)
    elapsed = time.perf_counter() - started
    await capture.close()
    return n / elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("-n", type=int, default=20000, help="interactions per store (default 20000)")
    parser.add_argument("--stores", nargs="+", default=["sqlite", "postgres"], choices=["sqlite", "postgres"])
    parser.add_argument("--pg", help="PostgreSQL DSN (default: a throwaway server)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="turnout-bench-writer-") as tmp:
        root = Path(tmp)
        for kind in args.stores:
            server = None
            if kind == "sqlite":
                url = f"sqlite:///{root}/bench.db"
            elif args.pg:
                url = args.pg
            else:
                from tests.collectors.pg import PostgresServer

                server = PostgresServer()
                url = server.create_database()
            try:
                rate = asyncio.run(drain_rate(url, args.n, root / f"drain-{kind}"))
                print(f"{kind:9s} writer: {rate:,.0f} interactions/s ({args.n} spooled, then drained)")
                for kinds in (frozenset(), frozenset({"email", "phone"})):
                    median, p99 = asyncio.run(append_cost(url, args.n, root / f"append-{kind}-{len(kinds)}", kinds))
                    print(f"{kind:9s} append (redact: secrets{''.join(', ' + k for k in sorted(kinds))}): "
                          f"{median:.1f} µs median, {p99:.1f} µs p99")  # fmt: skip
            finally:
                if server is not None:
                    server.close()


if __name__ == "__main__":
    main()
