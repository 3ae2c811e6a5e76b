"""The review page and the dataset build at scale: 100,000 queued items in a SQLite store behind
``turnout serve``; Debian's chromium (Playwright) measures the page's first contentful paint and the time from a
keypress (approve) to the next item painted; then all items are approved and a 100,000-example dataset is built.

Usage: ``.venv/bin/python bench/review.py [--items 100000] [--actions 30]``
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

from playwright.sync_api import sync_playwright

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from collectors.capture import encode, interaction_payload
from collectors.datasets.build import Spec, build
from collectors.redact import Redactor
from collectors.review.queue import ReviewPolicy, enqueue
from collectors.spool.writer import decode
from collectors.store import open_store
from tests.collectors.records import interaction
from tests.harness import GatewayProcess, write_config

ADMIN = "bench-admin-key"
CONFIG = """
server: {{state_dir: {state}}}
auth: {{admin_key_env: T_ADMIN}}
store: sqlite:///{db}
upstreams:
  dummy: {{provider: dummy, model: m}}
routes:
  support-bot: {{variants: {{dummy: 1}}}}
review: {{sample: 0.0}}
"""
WORDS = "refund order shipping invoice password account billing delivery warranty return".split()


async def fill(url: str, n: int) -> float:
    store = open_store(url)
    await store.open()
    started = time.perf_counter()
    for start in range(0, n, 1000):
        rows = []
        for i in range(start, min(n, start + 1000)):
            text = (
                f"Question {i}: how do I handle my {WORDS[i % 10]} and {WORDS[(i // 10) % 10]} ({i * 7919 % 100003})?"
            )
            it = interaction(f"{i:032x}", ts=1.7e9 + i, text=text, answer=f"Answer {i} about {WORDS[i % 10]}.",
                             route="support-bot", variant="dummy")  # fmt: skip
            rows.append(decode(encode(interaction_payload(it), Redactor()).rstrip(b"\n")))
        await store.write(rows, [])
        await enqueue(store, rows, [], ReviewPolicy(sample=1.0), now=time.time())  # type: ignore[arg-type]
    await store.close()
    return time.perf_counter() - started


async def build_all(url: str, root: Path) -> tuple[float, int]:
    store = open_store(url)
    await store.open()
    await store.execute("UPDATE review_items SET status = 'approved', decided_at = $1", time.time())
    started = time.perf_counter()
    result = await build(store, root, Spec("support", route="support-bot"), now=time.time())
    elapsed = time.perf_counter() - started
    await store.close()
    return elapsed, int(result.manifest["counts"]["examples"])


def pct(values: list[float], q: float) -> float:
    s = sorted(values)
    return s[min(len(s) - 1, int(q * len(s)))]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--items", type=int, default=100_000)
    parser.add_argument("--actions", type=int, default=30)
    args = parser.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="turnout-bench-review-"))
    db = tmp / "t.db"
    url = f"sqlite:///{db}"
    print(f"queueing {args.items} items: {asyncio.run(fill(url, args.items)):.1f} s")
    cfg = write_config(tmp, CONFIG.format(state=tmp / "state", db=db))
    with GatewayProcess(cfg, env={"T_ADMIN": ADMIN}) as gw, sync_playwright() as p:
        browser = p.chromium.launch(
            executable_path="/usr/bin/chromium", headless=True, args=["--no-sandbox"] if os.geteuid() == 0 else []
        )
        page = browser.new_page()
        page.goto(gw.url + "/admin/review")
        page.fill("input[name=reviewer]", "bench")
        page.fill("input[name=key]", ADMIN)
        with page.expect_navigation():
            page.keyboard.press("Enter")
        paints, loads = [], []
        for _ in range(10):
            page.goto(gw.url + "/admin/review")
            page.wait_for_selector("#item")
            paints.append(page.evaluate("performance.getEntriesByName('first-contentful-paint')[0].startTime"))
            loads.append(page.evaluate("performance.getEntriesByType('navigation')[0].responseEnd"))
        actions = []
        for _ in range(args.actions):
            before = page.get_attribute("#item", "data-id")
            started = time.perf_counter()
            with page.expect_navigation():
                page.keyboard.press("a")
            page.wait_for_selector("#item")
            page.evaluate("new Promise(r => requestAnimationFrame(() => r()))")  # the next item is painted
            actions.append((time.perf_counter() - started) * 1000)
            assert page.get_attribute("#item", "data-id") != before
        lists = []
        for _ in range(5):
            started = time.perf_counter()
            page.goto(gw.url + "/admin/review/list?status=pending&route=support-bot")
            page.wait_for_selector("table.rows")
            lists.append((time.perf_counter() - started) * 1000)
        browser.close()
    paint, load = statistics.median(paints), statistics.median(loads)
    print(f"first contentful paint of /admin/review with {args.items} queued: median {paint:.0f} ms, "
          f"max {max(paints):.0f} ms (response complete: median {load:.0f} ms)")  # fmt: skip
    print(f"approve (key a) to the next item painted: median {statistics.median(actions):.0f} ms, "
          f"p95 {pct(actions, 0.95):.0f} ms, max {max(actions):.0f} ms over {len(actions)} actions")  # fmt: skip
    print(f"list view (filtered, 50 rows, count): median {statistics.median(lists):.0f} ms")
    elapsed, examples = asyncio.run(build_all(url, tmp / "datasets"))
    print(f"dataset build of {examples} examples: {elapsed:.1f} s")


if __name__ == "__main__":
    main()
