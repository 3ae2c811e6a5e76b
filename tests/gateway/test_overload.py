"""Past capacity (LD-2): beyond server.max_in_flight a fast 503 with Retry-After, never a hung socket."""

# ruff: noqa: F811

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import httpx

from tests.fakes.fixtures import fake_openai  # noqa: F401
from tests.fakes.openai_server import Behavior, FakeOpenAI
from tests.harness import served, write_config

CONFIG = """
server: {{max_in_flight: 10}}
upstreams:
  main: {{base_url: "{url}", model: slow-model}}
routes:
  bot: {{variants: {{main: 100}}}}
"""


async def test_requests_past_max_in_flight_get_a_fast_503(tmp_path: Path, fake_openai: FakeOpenAI) -> None:
    fake_openai.set("slow-model", Behavior(delay_s=2.0))
    with served(write_config(tmp_path, CONFIG.format(url=fake_openai.url))) as gw:
        limits = httpx.Limits(max_connections=100)
        async with httpx.AsyncClient(timeout=10, limits=limits) as client:

            async def one() -> tuple[int, float, httpx.Headers]:
                t0 = time.perf_counter()
                body = {"model": "bot", "messages": [{"role": "user", "content": "hi"}]}
                resp = await client.post(gw.url + "/v1/chat/completions", json=body)
                return resp.status_code, time.perf_counter() - t0, resp.headers

            held = [asyncio.ensure_future(one()) for _ in range(10)]
            await asyncio.to_thread(fake_openai.wait_for, 10, 5.0)
            t0 = time.perf_counter()
            shed = await asyncio.gather(*(one() for _ in range(40)))
            shed_wall = time.perf_counter() - t0
            health = await client.get(gw.url + "/healthz")
            answered = await asyncio.gather(*held)
        assert health.status_code == 200
        assert [s for s, _, _ in answered] == [200] * 10
        assert {s for s, _, _ in shed} == {503}
        assert all(h["retry-after"] == "1" for _, _, h in shed)
        slowest = max(t for _, t, _ in shed)
        assert slowest < 0.75 * 2.0  # answered while the held calls still wait on their 2 s upstream
        assert gw.metric("turnout_requests_shed_total") == 40
        assert len(fake_openai.requests) == 10  # shed requests never reached the upstream
    print(f"LD-2: 40 requests past the limit shed in {shed_wall * 1000:.0f}ms, slowest {slowest * 1000:.0f}ms")
