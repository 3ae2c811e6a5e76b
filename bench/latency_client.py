"""Small asyncio + aiohttp load clients the harness runs beside wrk; each prints one JSON line.

`stream`: CONCURRENCY closed-loop streamed chat completions for DURATION seconds; time to first SSE event
(from sending the request to the first `data:` line), events received, and whole-stream time.
`rate`: open-loop non-streamed requests at a fixed RATE per second for DURATION seconds; latency is
measured from each request's scheduled start, so a stalled server cannot hide its queue (no coordinated
omission).

Usage: python bench/latency_client.py stream --url http://127.0.0.1:9002 --concurrency 1 --duration 5
       python bench/latency_client.py rate --url http://127.0.0.1:9002 --rate 200 --duration 5
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import time

import aiohttp

try:
    import uvloop
except ImportError:
    uvloop = None

PATH = "/v1/chat/completions"
BODY = {"model": "bench", "messages": [{"role": "user", "content": "Say hello"}], "max_tokens": 16}
STREAM_BODY = json.dumps({**BODY, "stream": True}).encode()
PLAIN_BODY = json.dumps(BODY).encode()
HEADERS = {"content-type": "application/json"}


def percentile(values: list[float], q: float) -> float:
    """Nearest-rank percentile of a non-empty list (q in 0..100)."""
    ordered = sorted(values)
    index = max(0, min(len(ordered) - 1, math.ceil(q / 100 * len(ordered)) - 1))
    return ordered[index]


async def _one_stream(session: aiohttp.ClientSession, url: str) -> tuple[float, float, int]:
    """One streamed request: (seconds to first event, seconds to [DONE], events before [DONE])."""
    start = time.perf_counter()
    first = 0.0
    events = 0
    async with session.post(url, data=STREAM_BODY, headers=HEADERS) as response:
        if response.status != 200:
            raise RuntimeError(f"status {response.status}: {(await response.read())[:200]!r}")
        async for line in response.content:
            if not line.startswith(b"data:"):
                continue
            if line.startswith(b"data: [DONE]"):
                break
            if events == 0:
                first = time.perf_counter() - start
            events += 1
    if events == 0:
        raise RuntimeError("stream ended without an event")
    return first, time.perf_counter() - start, events


async def run_stream(url: str, concurrency: int, duration: float) -> dict[str, float]:
    first_times: list[float] = []
    total_times: list[float] = []
    counts = {"events": 0, "errors": 0}
    deadline = time.perf_counter() + duration

    async def worker(session: aiohttp.ClientSession) -> None:
        while time.perf_counter() < deadline:
            try:
                first, total, events = await _one_stream(session, url + PATH)
            except (TimeoutError, aiohttp.ClientError, RuntimeError):
                counts["errors"] += 1
                continue
            first_times.append(first)
            total_times.append(total)
            counts["events"] += events

    timeout = aiohttp.ClientTimeout(total=30)
    async with aiohttp.ClientSession(timeout=timeout, connector=aiohttp.TCPConnector(limit=0)) as session:
        await asyncio.gather(*(worker(session) for _ in range(concurrency)))
    if not first_times:
        return {"requests": 0, "events": 0, "errors": counts["errors"]}
    return {
        "requests": len(first_times),
        "events": counts["events"],
        "errors": counts["errors"],
        "ttfe_p50_ms": percentile(first_times, 50) * 1000,
        "ttfe_p99_ms": percentile(first_times, 99) * 1000,
        "stream_p50_ms": percentile(total_times, 50) * 1000,
    }


async def run_rate(url: str, rate: float, duration: float) -> dict[str, float]:
    latencies: list[float] = []
    errors = 0
    timeout = aiohttp.ClientTimeout(total=30)
    async with aiohttp.ClientSession(timeout=timeout, connector=aiohttp.TCPConnector(limit=0)) as session:

        async def one(scheduled: float) -> None:
            nonlocal errors
            try:
                async with session.post(url + PATH, data=PLAIN_BODY, headers=HEADERS) as response:
                    await response.read()
                    if response.status != 200:
                        errors += 1
                        return
            except (TimeoutError, aiohttp.ClientError):
                errors += 1
                return
            latencies.append(time.perf_counter() - scheduled)

        tasks: set[asyncio.Task[None]] = set()
        start = time.perf_counter()
        total = int(rate * duration)
        for i in range(total):
            scheduled = start + i / rate
            delay = scheduled - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            task = asyncio.create_task(one(scheduled))
            tasks.add(task)
            task.add_done_callback(tasks.discard)
        await asyncio.gather(*tasks)
    if not latencies:
        return {"requests": 0, "errors": errors}
    return {
        "requests": len(latencies),
        "errors": errors,
        "p50_ms": percentile(latencies, 50) * 1000,
        "p99_ms": percentile(latencies, 99) * 1000,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="mode", required=True)
    stream = sub.add_parser("stream")
    stream.add_argument("--concurrency", type=int, default=1)
    rate = sub.add_parser("rate")
    rate.add_argument("--rate", type=float, default=200)
    for mode in (stream, rate):
        mode.add_argument("--url", required=True, help="base URL, e.g. http://127.0.0.1:9002")
        mode.add_argument("--duration", type=float, default=5)
    args = parser.parse_args()
    url = args.url.rstrip("/")
    if args.mode == "stream":
        job = run_stream(url, args.concurrency, args.duration)
    else:
        job = run_rate(url, args.rate, args.duration)
    result = (uvloop.run if uvloop is not None else asyncio.run)(job)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
