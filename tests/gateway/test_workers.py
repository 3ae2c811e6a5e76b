"""`turnout serve --workers N`: prometheus-client multiprocess mode; one scrape shows the sum over workers."""

from __future__ import annotations

import os
import re
import signal
import time
from pathlib import Path

import httpx

from tests.harness import GatewayProcess, free_port, write_config

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


FAILING = """
server: {{state_dir: "{state}"}}
upstreams:
  dead: {{base_url: "http://127.0.0.1:{port}/v1", model: x, retries: 0}}
  a: {{provider: dummy, model: a}}
routes:
  bot: {{variants: {{dead: 100}}, fallbacks: [a]}}
"""


def workers_of(pid: int) -> list[int]:
    """The uvicorn supervisor's workers (its children but for multiprocessing's resource tracker)."""
    children = [int(child) for child in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
    return [child for child in children if b"spawn_main" in Path(f"/proc/{child}/cmdline").read_bytes()]


def scrape(url: str) -> str:
    return httpx.get(url + "/metrics", timeout=20).text


def test_gauges_of_a_dead_worker_are_pruned_and_its_counters_kept(tmp_path: Path) -> None:
    state = tmp_path / "state"
    cfg = write_config(tmp_path, FAILING.format(state=state, port=free_port()))
    with GatewayProcess(cfg, args=("--workers", "2")) as proc:
        wait_for(proc.url, 'turnout_config_reloads_total{result="success"} 2.0')  # both workers loaded it
        with httpx.Client(timeout=20) as client:
            for _ in range(20):
                body = {"model": "bot", "messages": [{"role": "user", "content": "x"}]}
                assert client.post(proc.url + "/v1/chat/completions", json=body).status_code == 200
        assert 'turnout_upstream_ejected{upstream="dead"} 1.0' in scrape(proc.url)  # one worker ejected it
        workers = workers_of(proc.proc.pid)
        assert len(workers) == 2
        for pid in workers:
            os.kill(pid, signal.SIGKILL)  # uvicorn starts two new workers, which know nothing of the ejection
        text = wait_for(proc.url, 'turnout_config_reloads_total{result="success"} 4.0')
        files = [p.name for p in (state / "metrics").iterdir()]
    assert 'turnout_upstream_ejected{upstream="dead"} 1.0' not in text
    assert not [name for name in files if name.startswith("gauge_") and int(name[:-3].rsplit("_", 1)[1]) in workers]
    assert 'turnout_requests_total{code="2xx",role="primary",route="bot",variant="dead"} 20.0' in text


def wait_for(url: str, line: str, timeout: float = 30) -> str:
    """The first scrape that has ``line``; fails after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while line not in (text := scrape(url)):
        assert time.monotonic() < deadline, f"never saw {line}"
        time.sleep(0.1)
    return text
