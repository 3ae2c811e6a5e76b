"""ST-1 / ST-8: a ledger of mixed requests (answered, upstream errors, streams, client cancels), the upstream
giving the same response ``id`` every time: exactly one row per accepted request, counts per outcome match."""

from __future__ import annotations

import asyncio
import collections
import sqlite3
import time
from pathlib import Path

import httpx

from tests.fakes.openai_server import Behavior, FakeOpenAI
from tests.harness import served, write_config

CONFIG = """
server: {{state_dir: {state}}}
store: sqlite:///{db}
upstreams:
  prod: {{base_url: "{url}", model: m-ok}}
  slow: {{base_url: "{url}", model: m-slow}}
  broken: {{base_url: "{url}", model: m-500}}
routes:
  bot: {{variants: {{prod: 1}}}}
  slow: {{variants: {{slow: 1}}}}
  flaky: {{variants: {{broken: 1}}}}
"""
N = 1200


async def test_one_row_per_accepted_request(tmp_path: Path, fake_openai: FakeOpenAI) -> None:
    fake_openai.set("m-ok", Behavior(response_id="chatcmpl-same"))
    fake_openai.set("m-slow", Behavior(response_id="chatcmpl-same", chunks=20, chunk_delay_s=0.02))
    fake_openai.set("m-500", Behavior(statuses=[500] * N))
    db = tmp_path / "t.db"
    cfg = write_config(tmp_path, CONFIG.format(state=tmp_path / "state", db=db, url=fake_openai.url))
    expected: collections.Counter[tuple[str, str]] = collections.Counter()
    ids: list[str] = []
    with served(cfg) as gw:
        gate = asyncio.Semaphore(16)
        async with httpx.AsyncClient(timeout=30) as client:

            async def one(i: int) -> None:
                kind = ("plain", "stream", "error", "cancel")[i % 4]
                route = {"plain": "bot", "stream": "bot", "error": "flaky", "cancel": "slow"}[kind]
                body = {"model": route, "messages": [{"role": "user", "content": f"n {i}"}], "stream": kind != "plain"}
                async with gate, client.stream("POST", gw.url + "/v1/chat/completions", json=body) as r:
                    ids.append(r.headers["x-turnout-request-id"])
                    if kind == "cancel":
                        async for _ in r.aiter_bytes():
                            break  # the first event, then hang up
                        expected["bot" if route == "bot" else route, "client_cancelled"] += 1
                        return
                    await r.aread()
                    expected[route, "ok" if kind != "error" else "upstream_error"] += 1

            await asyncio.gather(*(one(i) for i in range(N)))
            deadline = time.monotonic() + 30
            while (
                gw.metric("turnout_capture_queue_depth") > 0
                or sum(gw.metric("turnout_interactions_captured_total", route=r) for r in ("bot", "slow", "flaky")) < N
            ):
                assert time.monotonic() < deadline, "writer did not catch up"
                await asyncio.sleep(0.1)
    with sqlite3.connect(db) as conn:
        rows = conn.execute("SELECT request_id, route, outcome, response_id FROM interactions").fetchall()
    assert sorted(r[0] for r in rows) == sorted(ids)  # one row per accepted request, under our id
    assert collections.Counter((r[1], r[2]) for r in rows) == expected
    assert {r[3] for r in rows if r[2] == "ok"} == {"chatcmpl-same"}
