"""`turnout serve --workers N`: prometheus-client multiprocess mode; one scrape shows the sum over workers."""

from __future__ import annotations

import re
import time
from pathlib import Path

import httpx

from tests.harness import GatewayProcess, write_config

CONFIG = """
server: {{state_dir: "{state}"}}
upstreams:
  a: {{provider: dummy, model: a}}
routes:
  bot: {{variants: {{a: 100}}}}
"""


def test_metrics_are_summed_over_workers(tmp_path: Path) -> None:
    state = tmp_path / "state"
    (state / "metrics").mkdir(parents=True)
    (state / "metrics" / "stale_123.db").write_bytes(b"left over from a previous run")
    cfg = write_config(tmp_path, CONFIG.format(state=state))
    with GatewayProcess(cfg, args=("--workers", "2")) as proc:
        both_up = 'turnout_config_reloads_total{result="success"} 2.0'  # one initial load per worker
        deadline = time.monotonic() + 20
        while both_up not in httpx.get(proc.url + "/metrics", timeout=5).text:
            assert time.monotonic() < deadline, "the second worker never started"
            time.sleep(0.1)
        with httpx.Client(timeout=5) as client:
            for _ in range(40):
                body = {"model": "bot", "messages": [{"role": "user", "content": "x"}]}
                assert client.post(proc.url + "/v1/chat/completions", json=body).status_code == 200
        text = httpx.get(proc.url + "/metrics", timeout=5).text
        files = {p.name for p in (state / "metrics").iterdir()}
    match = re.search(r'turnout_requests_total\{code="2xx",role="primary",route="bot",variant="a"\} (\S+)', text)
    assert match and float(match.group(1)) == 40.0
    assert both_up in text
    assert "stale_123.db" not in files  # the directory is cleaned at start
