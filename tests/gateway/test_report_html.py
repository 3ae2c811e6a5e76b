"""``turnout experiment report --html`` opened in a real headless Chromium (Debian's, driven by Playwright):
no console error, no request but the page itself, the decision and its reasons visible, charts drawn."""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path

import pytest

from collectors.store import open_store
from gateway.cli import main
from tests.browser import chromium, watch
from tests.gateway.test_deploy import traffic, write_config


def populate(db: Path) -> None:
    async def run() -> None:
        store = open_store(f"sqlite:///{db}")
        await store.open()
        try:
            await traffic(store, users=2000, weights={"prod": 50, "cand": 50}, since=time.time() - 6 * 86400,
                          error={"prod": 0.01, "cand": 0.01}, up={"prod": 0.55, "cand": 0.75}, seed=5,
                          span=6 * 86400 - 60)  # fmt: skip
        finally:
            await store.close()

    asyncio.run(run())


def test_html_report_in_chromium(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    db = tmp_path / "t.db"
    path = write_config(tmp_path, f"sqlite:///{db}")
    path.write_text(path.read_text().replace("variants: {prod: 100, cand: 0}", "variants: {prod: 50, cand: 50}"))
    populate(db)
    html, js = tmp_path / "report.html", tmp_path / "report.json"
    assert main(["experiment", "report", "bot", "-c", str(path), "--html", str(html), "--json", str(js)]) == 0
    table = capsys.readouterr().out
    data = json.loads(js.read_text())
    assert data["decision"] == "promote" and data["winner"] == "cand" and data["reasons"]
    assert "decision: PROMOTE cand" in table
    page_html = html.read_text()
    assert "<script" not in page_html and "http://" not in page_html and "https://" not in page_html
    assert "at least 30 users per variant and 0 s." in page_html  # min_duration 0s, not "0.0 days"
    with chromium() as browser:
        page = browser.new_page(viewport={"width": 1100, "height": 900})
        seen = watch(page)
        page.goto(html.as_uri())
        decision = page.locator("#decision")
        assert decision.is_visible()
        assert "PROMOTE" in decision.inner_text() and "cand" in decision.inner_text()
        assert page.locator("#decision li").count() == len(data["reasons"])
        assert page.locator("svg polyline").count() >= 2  # the primary and the guardrail over time
        cells = {v: page.locator(f"table tr:has(th:text-is('{v}')) td").all_inner_texts() for v in ("prod", "cand")}
        cand = data["variants"]["cand"]
        assert cells["cand"][-2:] == [f"${cand['cost_usd']:.4f}", "$0.002000"]  # cost total, per request
        assert cells["prod"][-2:] == ["-", "-"]  # unknown cost
        box = decision.bounding_box()
        assert box is not None and box["y"] < 900  # the decision is on the first screen
        page.screenshot(path=str(tmp_path / "experiment-report.png"), full_page=True)
    assert seen.errors == []
    assert seen.requests == [html.as_uri()]
