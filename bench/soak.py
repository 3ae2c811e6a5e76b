"""Soak: minutes of mixed load with injected faults; RSS, open file descriptors and asyncio tasks over time.

The gateway runs in a child process (this file with ``--child``) that samples itself from inside its event
loop every ``--interval`` seconds. The parent runs a fault-injecting fake upstream (tests/fakes) and
``--concurrency`` clients sending a mix: plain and streamed answers, client cancels mid-stream, upstream
503 bursts (retried), cut streams, hangs past the timeout (fallback), unknown models, and a config reload
every 30 s. Faults rotate every 10 s. At the end it prints the samples and the growth after warm-up.

Not run in CI. Usage: python bench/soak.py --minutes 5 --concurrency 32 [--slow-streams 1000]
(`--slow-streams` holds that many long slow streams open meanwhile and reports the /healthz latency and the
event-loop lag: LD-3).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import random
import signal
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

CONFIG = """
server: {{state_dir: {state}, drain_s: 5, heartbeat_s: 1, stream_idle_s: 5}}
store: sqlite:///{db}
upstreams:
  main: {{base_url: "{url}", model: main, timeout_s: 3}}
  flaky: {{base_url: "{url}", model: flaky, timeout_s: 3}}
  cut: {{base_url: "{url}", model: cut, timeout_s: 3}}
  slow: {{base_url: "{url}", model: slow, timeout_s: 0.5, retries: 0}}
  backup: {{base_url: "{url}", model: backup, timeout_s: 3}}
  drip: {{base_url: "{url}", model: drip, timeout_s: 3600}}
routes:
  bot: {{variants: {{main: {weight}, backup: {other}}}, sticky_by: none}}
  flaky: {{variants: {{flaky: 100}}, fallbacks: [backup]}}
  cut: {{variants: {{cut: 100}}}}
  slow: {{variants: {{slow: 100}}, fallbacks: [backup], timeout_s: 3}}
  drip: {{variants: {{drip: 100}}}}
"""


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def percentile(ordered: list[float], q: float) -> float:
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] if ordered else 0.0


def child(config: str, port: int, samples: str, interval: float) -> None:
    """Serve the gateway and append one JSON sample line per interval to ``samples``."""
    import uvicorn
    import uvloop

    from gateway.app import create_app
    from gateway.config import load_config

    app = create_app(load_config(config))
    server = uvicorn.Server(
        uvicorn.Config(
            app,
            host="127.0.0.1",
            port=port,
            http="gateway.server_protocol:BoundedHttpToolsProtocol",
            log_level="warning",
            access_log=False,
            timeout_graceful_shutdown=10,
        )
    )

    out = open(samples, "a")  # for the life of the process: the sampler writes a line per interval

    lags: list[float] = []

    async def tick() -> None:
        """Event-loop lag: how late a 10 ms sleep wakes up."""
        while True:
            before = time.perf_counter()
            await asyncio.sleep(0.01)
            lags.append(time.perf_counter() - before - 0.01)

    async def sample() -> None:
        t0 = time.monotonic()
        while True:
            window = sorted(lags)
            lags.clear()
            row = {
                "t": round(time.monotonic() - t0, 1),
                "rss_kib": rss_kib(os.getpid()),
                "fds": len(os.listdir("/proc/self/fd")),
                "tasks": len(asyncio.all_tasks()),
                "lag_p99_ms": round(1000 * percentile(window, 0.99), 2),
            }
            out.write(json.dumps(row) + "\n")
            out.flush()
            await asyncio.sleep(interval)

    async def main() -> None:
        probes = [asyncio.ensure_future(sample()), asyncio.ensure_future(tick())]
        try:
            await server.serve()
        finally:
            for probe in probes:
                probe.cancel()

    signal.signal(signal.SIGTERM, lambda sig, frame: None)  # as `turnout serve`: a graceful stop exits 0
    uvloop.run(main())


FAULTS = ["calm", "503-bursts", "cuts", "hangs"]


def apply_faults(fake: Any, phase: str) -> None:
    from tests.fakes.openai_server import Behavior

    fake.set("main", Behavior(chunk_delay_s=0.01))
    fake.set("backup", Behavior(chunk_delay_s=0.01))
    fake.set("flaky", Behavior(statuses=[503, 503] * 200 if phase == "503-bursts" else [503] * 20, retry_after=0.05))
    fake.set("cut", Behavior(chunks=8, chunk_delay_s=0.02, cut_after=3 if phase == "cuts" else None))
    fake.set("slow", Behavior(hang=phase == "hangs", delay_s=0.05))
    fake.set("drip", Behavior(chunks=2000, chunk_delay_s=0.5))


async def slow_stream(url: str, until: float, session: Any) -> None:
    """One long, slow stream (LD-3), reopened when it ends, until ``until``."""
    body = {"model": "drip", "messages": [{"role": "user", "content": "a long answer " * 200}], "stream": True}
    while time.monotonic() < until:
        try:
            async with session.post(url + "/v1/chat/completions", json=body) as resp:
                async for _ in resp.content.iter_any():
                    if time.monotonic() >= until:
                        break
        except Exception as exc:  # counted by the caller's summary only through the health figures
            print(f"slow stream: {type(exc).__name__}", file=sys.stderr)
            await asyncio.sleep(0.5)


async def probe_health(url: str, until: float, latencies: list[float]) -> None:
    import aiohttp

    async with aiohttp.ClientSession() as session:
        while time.monotonic() < until:
            t0 = time.perf_counter()
            async with session.get(url + "/healthz") as resp:
                await resp.read()
            latencies.append(time.perf_counter() - t0)
            await asyncio.sleep(0.05)


async def client_loop(url: str, until: float, rng: random.Random, seen: Counter[str]) -> None:
    import aiohttp

    messages = [{"role": "user", "content": "soak test question"}]
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30)) as session:
        while time.monotonic() < until:
            kind = rng.choice(["plain", "stream", "cancel", "flaky", "cut", "slow", "unknown"])
            route = {"plain": "bot", "stream": "bot", "cancel": "bot", "unknown": f"nope-{rng.random()}"}.get(
                kind, kind
            )
            body = {"model": route, "messages": messages, "stream": kind in ("stream", "cancel", "cut")}
            try:
                async with session.post(url + "/v1/chat/completions", json=body) as resp:
                    if kind == "cancel":
                        await resp.content.readline()
                        resp.close()  # goes away mid-stream
                        seen["cancel"] += 1
                        continue
                    data = await resp.read()
                    broken = b'"error"' in data and resp.status == 200
                    seen[f"{kind}:{resp.status}{':error-event' if broken else ''}"] += 1
            except (aiohttp.ClientError, TimeoutError) as exc:
                seen[f"{kind}:{type(exc).__name__}"] += 1


def summary(samples: list[dict[str, Any]], warm_up: float) -> str:
    after = [s for s in samples if s["t"] >= warm_up] or samples
    first, last = after[0], after[-1]
    lines = ["    t(s)   RSS(MiB)   fds   tasks  lag p99(ms)"]
    step = max(1, len(samples) // 20)
    for s in samples[::step] + ([samples[-1]] if (len(samples) - 1) % step else []):
        lines.append(f"{s['t']:8.0f} {s['rss_kib'] / 1024:10.1f} {s['fds']:5d} {s['tasks']:7d} {s['lag_p99_ms']:11.1f}")
    peak = max(s["rss_kib"] for s in after)
    lines.append(
        f"after {warm_up:.0f}s warm-up: RSS {first['rss_kib'] / 1024:.1f} -> {last['rss_kib'] / 1024:.1f} MiB "
        f"({(last['rss_kib'] - first['rss_kib']) / first['rss_kib']:+.1%}, peak {peak / 1024:.1f}), "
        f"fds {first['fds']} -> {last['fds']}, tasks {first['tasks']} -> {last['tasks']}"
    )
    return "\n".join(lines)


async def soak(args: argparse.Namespace) -> int:
    from tests.fakes.openai_server import FakeOpenAI
    from tests.harness import free_port

    logging.getLogger("aiohttp").setLevel(logging.CRITICAL)  # the fake logs every stream a client cut
    work = Path(tempfile.mkdtemp(prefix="turnout-soak-"))
    fake = FakeOpenAI()
    fake_requests_cap = 20_000  # the fake records every request; forget them now and then
    config = work / "turnout.yaml"

    def write(weight: int) -> None:
        text = CONFIG.format(state=work / "state", db=work / "t.db", url=fake.url, weight=weight, other=100 - weight)
        tmp = config.with_suffix(".tmp")
        tmp.write_text(text)
        tmp.replace(config)

    write(90)
    samples_path = work / "samples.jsonl"
    port = free_port()
    proc = await asyncio.create_subprocess_exec(
        *[sys.executable, __file__, "--child", str(config), str(port), str(samples_path), str(args.interval)],
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        cwd=work,
    )
    url = f"http://127.0.0.1:{port}"
    seen: Counter[str] = Counter()
    try:
        import aiohttp

        async with aiohttp.ClientSession() as probe:
            for _ in range(200):
                try:
                    async with probe.get(url + "/readyz") as r:
                        if r.status == 200:
                            break
                except aiohttp.ClientError:
                    pass
                await asyncio.sleep(0.05)
        start = time.monotonic()
        until = start + args.minutes * 60
        rng = random.Random(args.seed)
        clients = [
            asyncio.ensure_future(client_loop(url, until, random.Random(rng.random()), seen))
            for _ in range(args.concurrency)
        ]
        health: list[float] = []
        clients.append(asyncio.ensure_future(probe_health(url, until, health)))
        streams = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0))
        clients += [asyncio.ensure_future(slow_stream(url, until, streams)) for _ in range(args.slow_streams)]
        phase = 0
        while time.monotonic() < until:
            apply_faults(fake, FAULTS[phase % len(FAULTS)])
            if phase % 3 == 2:
                write(rng.choice([50, 70, 90]))  # a reload under load
            if len(fake.requests) > fake_requests_cap:
                with fake._cond:  # the fake keeps every request it saw; the soak must not measure that
                    fake._requests.clear()
            phase += 1
            await asyncio.sleep(min(10.0, max(0.0, until - time.monotonic())))
        await asyncio.gather(*clients)
        await streams.close()
        elapsed = time.monotonic() - start
    finally:
        proc.send_signal(signal.SIGTERM)
        code = await asyncio.wait_for(proc.wait(), 30)
        fake.close()
    samples = [json.loads(line) for line in samples_path.read_text().splitlines()]
    total = sum(seen.values())
    print(
        f"soak: {args.minutes} min, {args.concurrency} clients, {total} requests ({total / elapsed:.0f}/s), exit {code}"
    )
    for key, count in sorted(seen.items()):
        print(f"  {key:32s} {count}")
    print(summary(samples, warm_up=min(60.0, args.minutes * 60 / 5)))
    health.sort()
    lag = sorted(s["lag_p99_ms"] for s in samples)
    print(
        f"with {args.slow_streams} slow streams open: /healthz p50 {1000 * percentile(health, 0.5):.1f} ms, "
        f"p99 {1000 * percentile(health, 0.99):.1f} ms ({len(health)} probes); event-loop lag p99 per "
        f"{args.interval:g}s window: median {percentile(lag, 0.5):.1f} ms, worst {lag[-1] if lag else 0:.1f} ms"
    )
    return 0 if code == 0 else 1


def main() -> int:
    if len(sys.argv) > 1 and sys.argv[1] == "--child":
        child(sys.argv[2], int(sys.argv[3]), sys.argv[4], float(sys.argv[5]))
        return 0
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=5.0)
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--interval", type=float, default=5.0, help="seconds between samples")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--slow-streams", type=int, default=0, help="long slow streams held open (LD-3: 1000)")
    return asyncio.run(soak(parser.parse_args()))


if __name__ == "__main__":
    sys.exit(main())
