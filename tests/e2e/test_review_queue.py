"""The review queue through the real gateway: items are queued by the capture loader within seconds, by the
random sample and by feedback flags arriving later, and SIGKILLs of the loader while it queues lose and
duplicate nothing (the journal replays the batch; queueing is keyed by request id)."""

from __future__ import annotations

import os
import signal
import sqlite3
from pathlib import Path

import httpx

from collectors.review.queue import sampled
from tests.e2e.test_loader_process import loader_of
from tests.e2e.test_store_outage import drained, load
from tests.fakes.openai_server import FakeOpenAI
from tests.harness import GatewayProcess, write_config

SHARE = 0.3
CONFIG = """
server: {{state_dir: {state}}}
store: sqlite:///{db}
upstreams:
  prod: {{base_url: "{url}", model: m-ok}}
routes:
  bot: {{variants: {{prod: 1}}}}
review: {{sample: {share}, flag: {{label: bad}}}}
"""


def queue(db: Path) -> list[tuple[str, str]]:
    with sqlite3.connect(db) as conn:
        return [(str(r[0]), str(r[1])) for r in conn.execute("SELECT id, reason FROM review_items")]


async def test_sigkill_of_the_loader_while_queueing_loses_and_duplicates_nothing(
    tmp_path: Path, fake_openai: FakeOpenAI
) -> None:
    db = tmp_path / "t.db"
    cfg = write_config(tmp_path, CONFIG.format(state=tmp_path / "state", db=db, url=fake_openai.url, share=SHARE))
    with GatewayProcess(cfg) as gw:
        async with httpx.AsyncClient(timeout=30) as client:
            seen = await load(client, gw.url, "first", 60)
            loader = loader_of(gw.proc.pid)
            for round_ in range(3):
                seen += await load(client, gw.url, f"kill {round_}", 60)
                os.kill(loader, signal.SIGKILL)  # perhaps between a batch's commit and its queueing
                loader = loader_of(gw.proc.pid, other_than=loader)
            unsampled = [s for s in seen if not sampled(s.request_id, SHARE)][:15]
            for s in unsampled:  # a flag long after the interaction was stored
                r = await client.post(gw.url + "/v1/feedback", json={"request_id": s.request_id, "label": "bad"})
                assert r.status_code == 202
            os.kill(loader, signal.SIGKILL)
            loader_of(gw.proc.pid, other_than=loader)
            await drained(client, gw.url)
        gw.stop(signal.SIGTERM)
    got = queue(db)
    assert len(got) == len({i for i, _ in got})
    expected = {s.request_id: "sample" for s in seen if sampled(s.request_id, SHARE)}
    expected.update({s.request_id: "label" for s in unsampled})
    assert dict(got) == expected
    assert 0.15 * len(seen) < sum(r == "sample" for _, r in got) < 0.45 * len(seen)
