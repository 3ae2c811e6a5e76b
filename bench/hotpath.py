"""Turnout's own CPU per non-streamed request, in process: the ASGI app with a fake ``receive``/``send`` and a fake
upstream client, so neither uvicorn, the HTTP client nor the loopback is counted. The steadiest figure on a noisy
machine for a change to the data path (the bench's whole-process figures move with everything else).

Usage: ``python -m bench.hotpath [--capture on|off] [--shadow] [--concurrency 64] [--requests 20000] [--reps 7]``;
prints the best and the median µs per request (``time.process_time``) over the repetitions. ``--shadow`` mirrors
every request to a second fake upstream (a 100 % shadow, its comparison and record included). ``--profile``
prints the functions with the most cumulative time instead (cProfile).
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import gc
import pstats
import shutil
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import orjson

from gateway.app import create_app, tune_gc
from gateway.config import load_config
from gateway.reply import JSON, Reply
from gateway.server_protocol import DEPARTURES

BODY = orjson.dumps(
    {
        "model": "bench",
        "messages": [{"role": "user", "content": "Say hello to the benchmark, please."}],
        "max_tokens": 16,
    }
)
ANSWER = orjson.dumps(
    {
        "id": "chatcmpl-1",
        "object": "chat.completion",
        "created": 1,
        "model": "mock-model",
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": "Hello! This is a fixed answer from the mock upstream."},
                "finish_reason": "stop",
            }
        ],
        "usage": {"prompt_tokens": 12, "completion_tokens": 12, "total_tokens": 24},
    }
)
HEADERS = [
    (b"host", b"127.0.0.1:8080"),
    (b"content-type", b"application/json"),
    (b"content-length", str(len(BODY)).encode()),
]


class FakeUpstream:
    """Answers every call with ``ANSWER`` after one trip round the event loop."""

    bounds_time = True  # as the default client (httptools): a shadow needs no timer of its own around a call

    def __init__(self, name: str) -> None:
        self.name = name

    async def call(
        self, endpoint: str, body: dict[str, Any], *, stream: bool, request_id: str, timeout_s: float | None = None
    ) -> Reply:
        orjson.dumps({**body, "model": "mock-model"})  # what any client does with the body
        await asyncio.sleep(0)
        return Reply(200, JSON, ANSWER)


def config(home: Path, capture: bool, shadow: bool) -> Path:
    route = ["  bench:", "    variants: {mock: 100}"] + ([] if capture else ["    capture: {sample: 0}"])
    if shadow:
        route.append("    shadows: [{upstream: mock-shadow, sample: 1.0}]")
    path = home / "turnout.yaml"
    path.write_text(
        "\n".join(
            [
                f"server: {{host: 127.0.0.1, port: 8080, state_dir: {home / 'state'}}}",
                f"store: sqlite:///{home / 'turnout.db'}",
                # the fake upstreams answer at once, so a shadow's task runs only after many requests have started
                # theirs: at the default cap (64) half of them were dropped, not mirrored
                "shadow: {max_in_flight: 4096}",
                "upstreams:",
                "  mock: {provider: openai, base_url: http://127.0.0.1:9/v1, model: mock-model}",
                "  mock-shadow: {provider: openai, base_url: http://127.0.0.1:9/v1, model: mock-shadow}",
                "routes:",
                *route,
            ]
        )
        + "\n"
    )
    return path


async def one(app: Any, state: dict[str, Any]) -> int:
    done = asyncio.get_running_loop().create_future()
    sent = [False]
    status = 0

    async def receive() -> dict[str, Any]:
        if not sent[0]:
            sent[0] = True
            return {"type": "http.request", "body": BODY, "more_body": False}
        await done
        return {"type": "http.disconnect"}

    async def send(message: dict[str, Any]) -> None:
        nonlocal status
        if message["type"] == "http.response.start":
            status = message["status"]
        elif not message.get("more_body", False) and not done.done():
            done.set_result(None)

    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "POST",
        "scheme": "http",
        "path": "/v1/chat/completions",
        "raw_path": b"/v1/chat/completions",
        "query_string": b"",
        "headers": HEADERS,
        "client": ("127.0.0.1", 50000),
        "server": ("127.0.0.1", 8080),
        "state": state.copy(),
        "extensions": {DEPARTURES: []},  # what Turnout's server protocol gives each request
    }
    await app(scope, receive, send)
    return status


async def batch(app: Any, state: dict[str, Any], requests: int, concurrency: int) -> None:
    async def worker(n: int) -> None:
        for _ in range(n):
            status = await one(app, state)
            assert status == 200, status

    await asyncio.gather(*(worker(requests // concurrency) for _ in range(concurrency)))
    await asyncio.gather(*state["gateway"].shadows.tasks)  # the last shadows are counted too
    dropped = state["registry"].get_sample_value(
        "turnout_shadow_requests_total", {"route": "bench", "shadow": "mock-shadow", "outcome": "dropped"}
    )
    assert not dropped, f"{dropped:.0f} shadows dropped: the figures would not be a 100 % shadow's"


async def main(args: argparse.Namespace) -> None:
    home = Path(tempfile.mkdtemp(prefix="turnout-hotpath-"))
    try:
        await measure(home, args)
    finally:
        shutil.rmtree(home, ignore_errors=True)  # the store and journal of every request measured: GBs a day


async def measure(home: Path, args: argparse.Namespace) -> None:
    app = create_app(load_config(config(home, args.capture == "on", args.shadow)))
    async with app.router.lifespan_context(app) as state:
        gen = state["gateway"].generation
        gen.clients["mock"] = FakeUpstream("mock")
        if args.shadow:
            gen.shadow_clients["mock-shadow"] = FakeUpstream("mock-shadow")
        tune_gc()
        await batch(app, state, 2000, args.concurrency)  # warm up
        if args.profile:
            profile = cProfile.Profile()
            profile.enable()
            await batch(app, state, args.requests, args.concurrency)
            profile.disable()
            pstats.Stats(profile).sort_stats(args.sort).print_stats(40)
            return
        figures = []
        for _ in range(args.reps):
            gc.collect()
            start = time.process_time()
            await batch(app, state, args.requests, args.concurrency)
            figures.append((time.process_time() - start) / args.requests * 1e6)
        shadow = " shadow" if args.shadow else ""
        print(
            f"capture {args.capture}{shadow} c={args.concurrency}: best {min(figures):.1f} µs, median "
            f"{statistics.median(figures):.1f} µs per request ({', '.join(f'{f:.1f}' for f in figures)})"
        )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--capture", choices=("on", "off"), default="on")
    parser.add_argument("--shadow", action="store_true", help="a 100 %% shadow to a second fake upstream")
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--requests", type=int, default=20000)
    parser.add_argument("--reps", type=int, default=7)
    parser.add_argument("--profile", action="store_true")
    parser.add_argument("--sort", default="cumulative", help="cProfile sort key with --profile (cumulative, tottime)")
    args = parser.parse_args()
    try:
        import uvloop

        uvloop.run(main(args))
    except ImportError:
        asyncio.run(main(args))
