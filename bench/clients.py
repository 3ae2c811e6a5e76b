"""Each upstream HTTP client alone: CPU per call of N concurrent non-streamed calls to the mock upstream.

Starts the mock on CPU 1, then runs each ``server.http_client`` kind in this process pinned to CPU 0 (uvloop,
the client as ``make_client`` builds it) for a fixed time, and prints CPU µs per call and calls per second.
The client's cost without the rest of the gateway: what ``turnout-aiohttp/turnout`` in ``bench.run`` shows
within the whole request.

Usage (from the repository root): python -m bench.clients --connections 64 1 --kinds httptools aiohttp pyqwest
"""

from __future__ import annotations

import argparse
import asyncio
import os
import resource
import tempfile
import time
from pathlib import Path

import uvloop

from bench.subjects import start_mock, stop
from gateway.config import Upstream
from gateway.upstream import make_client, open_session

BODY = {"model": "bench", "messages": [{"role": "user", "content": "Say hello"}], "max_tokens": 16}


def _cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


async def measure(kind: str, url: str, connections: int, duration: float) -> tuple[float, float]:
    """(CPU µs per call, calls per second) of ``kind`` after a 0.5 s warm-up."""
    session = open_session(kind)
    client = make_client("mock", Upstream(provider="openai", base_url=url + "/v1", model="mock-model"), None, session)
    calls = 0

    async def caller(until: float) -> None:
        nonlocal calls
        while time.monotonic() < until:
            reply = await client.call("chat.completions", BODY, stream=False, request_id="0" * 32)
            assert reply.status == 200, reply.status
            calls += 1

    async def run(seconds: float) -> None:
        until = time.monotonic() + seconds
        await asyncio.gather(*(caller(until) for _ in range(connections)))

    try:
        await run(0.5)
        calls, cpu, started = 0, _cpu(), time.monotonic()
        await run(duration)
        return (_cpu() - cpu) / calls * 1e6, calls / (time.monotonic() - started)
    finally:
        await session.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--connections", type=int, nargs="+", default=[64, 1])
    parser.add_argument("--kinds", nargs="+", default=["httptools", "aiohttp", "pyqwest"])
    parser.add_argument("--duration", type=float, default=3.0)
    parser.add_argument("--reps", type=int, default=2)
    args = parser.parse_args()
    os.sched_setaffinity(0, {0})
    mock, url = start_mock(Path(tempfile.mkdtemp(prefix="turnout-bench-clients-")), 1, 32, 1.0)
    try:
        for connections in args.connections:
            for rep in range(args.reps):
                for kind in args.kinds:
                    cpu, rate = uvloop.run(measure(kind, url, connections, args.duration))
                    line = f"c={connections} rep {rep + 1} {kind:10s} {cpu:6.1f} µs a call  {rate:8.0f} calls/s"
                    print(line, flush=True)
    finally:
        stop(mock)


if __name__ == "__main__":
    main()
