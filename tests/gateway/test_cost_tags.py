"""Cost (upstreams.X.price, else litellm's price list) as turnout_cost_usd_total and a stored cost_usd; request
tags (x-turnout-tags) stored and exported with --tag."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from tests.fakes.openai_server import FakeOpenAI
from tests.gateway.interactions import tap
from tests.harness import ROOT, served, write_config

CONFIG = """
server: {{state_dir: "{state}"}}
store: sqlite:///{db}
upstreams:
  priced: {{provider: dummy, model: p, price: {{input_per_1m: 2.0, output_per_1m: 10.0}}}}
  shadow: {{provider: dummy, model: s, price: {{input_per_1m: 1.0, output_per_1m: 1.0}}}}
  free: {{provider: dummy, model: f}}
  listed: {{base_url: "{url}", model: gpt-4o-mini}}
routes:
  paid: {{variants: {{priced: 100}}, shadows: [{{upstream: shadow, sample: 1.0}}]}}
  demo: {{variants: {{free: 100}}}}
  openai: {{variants: {{listed: 100}}}}
"""
MESSAGES = [{"role": "user", "content": "what does this cost"}]


def test_price_and_litellm_price_list_give_costs_counted_stored_and_exported(
    tmp_path: Path, fake_openai: FakeOpenAI
) -> None:
    cfg = write_config(tmp_path, CONFIG.format(state=tmp_path / "s", db=tmp_path / "t.db", url=fake_openai.url))
    with served(cfg) as gw:
        seen = tap(gw)
        paid = httpx.post(gw.url + "/v1/chat/completions", json={"model": "paid", "messages": MESSAGES}).json()
        usage = paid["usage"]
        expected = (usage["prompt_tokens"] * 2.0 + usage["completion_tokens"] * 10.0) / 1e6
        assert gw.metric("turnout_cost_usd_total", route="paid", variant="priced", role="primary") == pytest.approx(
            expected
        )
        listed = httpx.post(gw.url + "/v1/chat/completions", json={"model": "openai", "messages": MESSAGES}).json()
        free = httpx.post(gw.url + "/v1/chat/completions", json={"model": "demo", "messages": MESSAGES})
        assert free.status_code == 200
        primaries = {it.route: it for it in seen if it.role == "primary"}
        assert primaries["demo"].cost_usd is None  # a dummy without a price has no cost
        os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
        import litellm  # the oracle: litellm's own cost function over the same usage

        prompt_cost, completion_cost = litellm.cost_per_token(
            model="gpt-4o-mini",
            prompt_tokens=listed["usage"]["prompt_tokens"],
            completion_tokens=listed["usage"]["completion_tokens"],
        )
        assert primaries["openai"].cost_usd == pytest.approx(prompt_cost + completion_cost)
        assert gw.metric("turnout_cost_usd_total", route="openai", variant="listed", role="primary") == pytest.approx(
            prompt_cost + completion_cost
        )
        deadline = time.monotonic() + 10
        while gw.metric("turnout_cost_usd_total", route="paid", variant="shadow", role="shadow") == 0:
            assert time.monotonic() < deadline, "the shadow's cost was never counted"
            time.sleep(0.05)
        shadow_counted = gw.metric("turnout_cost_usd_total", route="paid", variant="shadow", role="shadow")
    rows = export(cfg, "--route", "paid", "--role", "primary")
    assert [r["cost_usd"] for r in rows] == [pytest.approx(expected)]
    (shadow,) = export(cfg, "--route", "paid", "--role", "shadow")
    tokens = shadow["usage"]["prompt_tokens"] + shadow["usage"]["completion_tokens"]  # type: ignore[index]
    assert shadow["cost_usd"] == pytest.approx(tokens / 1e6) == pytest.approx(shadow_counted)


def export(cfg: Path, *args: str) -> list[dict[str, object]]:
    env = {"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"}
    command = [sys.executable, "-m", "gateway", "export", "-c", str(cfg), "--format", "raw", *args]
    result = subprocess.run(command, capture_output=True, text=True, timeout=60, env=env)
    assert result.returncode == 0, result.stderr
    return [json.loads(line) for line in result.stdout.splitlines()]


def test_tags_are_stored_and_export_keeps_the_rows_carrying_one(tmp_path: Path, fake_openai: FakeOpenAI) -> None:
    cfg = write_config(tmp_path, CONFIG.format(state=tmp_path / "s", db=tmp_path / "t.db", url=fake_openai.url))
    with served(cfg) as gw:
        body = {"model": "demo", "messages": MESSAGES, "metadata": {"ticket": "T-1"}}
        for tags in ("checkout, mobile", "checkout", "mobile-web", None):
            headers = {"x-turnout-tags": tags} if tags else {}
            assert httpx.post(gw.url + "/v1/chat/completions", json=body, headers=headers).status_code == 200
        too_many = {"x-turnout-tags": ",".join(f"t{i}" for i in range(17))}
        refused = httpx.post(gw.url + "/v1/chat/completions", json=body, headers=too_many)
        assert refused.status_code == 400 and "x-turnout-tags" in refused.json()["error"]["message"]
    mobile = export(cfg, "--tag", "mobile")
    assert [r["tags"] for r in mobile] == [["checkout", "mobile"]]  # not mobile-web: whole tags only
    assert mobile[0]["metadata"] == {"ticket": "T-1"}
    assert len(export(cfg, "--tag", "checkout")) == 2
    assert sorted(len(r["tags"]) for r in export(cfg)) == [0, 1, 1, 2]  # type: ignore[arg-type]
