"""ST-2: kill -9 the gateway at random moments under load, restarting each time; every request the client saw
complete is stored exactly once (the journal is replayed by the next process). CI kills it 8 times (each round
is mostly a gateway start); ``python -m bench.catalogue st-2`` runs the same rounds the catalogue's 20 times."""

from __future__ import annotations

import asyncio
import random
import signal
import sqlite3
import time
from pathlib import Path

import httpx

from tests.e2e.capture_client import Seen, ask
from tests.fakes.openai_server import Behavior, FakeOpenAI
from tests.harness import GatewayProcess, write_config

CONFIG = """
server: {{state_dir: {state}}}
store: sqlite:///{db}
upstreams:
  prod: {{base_url: "{url}", model: m-ok}}
routes:
  bot: {{variants: {{prod: 1}}}}
"""
ROUNDS = 8
WORKERS = 16


async def load_until_killed(
    client: httpx.AsyncClient, gw: GatewayProcess, round_no: int, rng: random.Random
) -> list[Seen]:
    completed: list[Seen] = []
    killed = asyncio.Event()

    async def worker(w: int) -> None:
        n = 0
        while not killed.is_set():
            n += 1
            seen = await ask(client, gw.url, "bot", f"round {round_no} worker {w} n {n}", stream=n % 2 == 0)
            if seen is not None:
                completed.append(seen)

    tasks = [asyncio.create_task(worker(w)) for w in range(WORKERS)]
    await asyncio.sleep(rng.uniform(0.15, 0.8))
    gw.proc.send_signal(signal.SIGKILL)
    killed.set()
    await asyncio.to_thread(gw.proc.wait, 10)
    await asyncio.gather(*tasks)
    return completed


async def sigkill_rounds(directory: Path, upstream_url: str, rounds: int, seed: int = 20261126) -> str:
    """``rounds`` SIGKILLs under load against ``upstream_url``, then the checks; returns the summary line."""
    cfg = write_config(directory, CONFIG.format(state=directory / "state", db=directory / "t.db", url=upstream_url))
    rng = random.Random(seed)
    completed: list[Seen] = []
    started = time.monotonic()
    limits = httpx.Limits(max_connections=WORKERS, max_keepalive_connections=WORKERS)
    async with httpx.AsyncClient(timeout=10, limits=limits) as client:
        for round_no in range(rounds):
            gw = GatewayProcess(cfg)
            gw.wait_ready()
            completed += await load_until_killed(client, gw, round_no, rng)
    final = GatewayProcess(cfg)
    final.wait_ready()
    final.stop(signal.SIGTERM)  # replays every journal left behind, then drains
    assert "Application shutdown complete" in final.output()

    with sqlite3.connect(directory / "t.db") as db:
        stored = dict(
            db.execute("SELECT request_id, json_extract(record, '$.request.messages[0].content') FROM interactions")
        )
        per_text = db.execute(
            "SELECT COUNT(*) FROM (SELECT json_extract(record, '$.request.messages[0].content') AS t "
            "FROM interactions GROUP BY t HAVING COUNT(*) > 1)"
        ).fetchone()[0]
    lost = [s.request_id for s in completed if s.request_id not in stored]
    extra = len(stored) - len({s.request_id for s in completed})
    summary = (
        f"ST-2: {rounds} SIGKILLs in {time.monotonic() - started:.1f}s: {len(completed)} requests completed at the "
        f"client, {len(stored)} stored, lost {len(lost)}, duplicated {per_text}, stored but cut at the client {extra}"
    )
    assert len(completed) > rounds * 20, summary
    assert lost == [], summary
    assert per_text == 0, summary
    for s in completed:
        assert stored[s.request_id] == s.messages[0]["content"]
    assert not list((directory / "state" / "journal").iterdir())  # everything replayed and removed
    return summary


async def test_sigkill_under_load_loses_and_duplicates_nothing(tmp_path: Path, fake_openai: FakeOpenAI) -> None:
    fake_openai.set("m-ok", Behavior(chunk_delay_s=0.003))
    print("\n" + await sigkill_rounds(tmp_path, fake_openai.url, ROUNDS))
