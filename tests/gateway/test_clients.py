"""Named clients (auth.clients): attribution stored and counted, a route allow-list (404 outside it), a per-client
rpm (429 with Retry-After) that holds across the worker processes of one replica, export filtered by client."""

from __future__ import annotations

import concurrent.futures
import json
import multiprocessing
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import openai
import pytest

from gateway.client_limits import RateLimiter
from gateway.config import ConfigError, parse_config
from tests.gateway.interactions import tap
from tests.gateway.rate_limit_worker import admit_many
from tests.harness import ROOT, GatewayProcess, Served, served, write_config

CONFIG = """
server: {{state_dir: "{state}"}}
store: sqlite:///{db}
auth:
  clients:
    billing: {{key_env: T_BILLING, routes: [demo]}}
    support: {{key_env: T_SUPPORT, rpm: {rpm}}}
upstreams:
  d: {{provider: dummy, model: d}}
routes:
  demo: {{variants: {{d: 100}}}}
  other: {{variants: {{d: 100}}}}
"""
KEYS = {"T_BILLING": "sk-billing-1", "T_SUPPORT": "sk-support-2"}
MESSAGES = [{"role": "user", "content": "hello"}]


def config(directory: Path, rpm: int) -> Path:
    text = CONFIG.format(state=directory / "state", db=directory / "t.db", rpm=rpm)
    return write_config(directory, text)


@pytest.fixture(scope="module")
def gw(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    with served(config(tmp_path_factory.mktemp("clients"), rpm=5), env=KEYS) as server:
        yield server


def sdk(gw: Served, key: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=gw.url + "/v1", api_key=key, max_retries=0, timeout=10)


def test_config_names_unknown_routes_and_unset_keys() -> None:
    text = "auth: {clients: {a: {key_env: T_A, routes: [nope]}, b: {key_env: T_B, rpm: 0}}}\n"
    text += "upstreams: {d: {provider: dummy}}\nroutes: {r: {variants: {d: 1}}}\n"
    with pytest.raises(ConfigError) as info:
        parse_config(text.encode(), "t.yaml", {"T_B": "x"})
    errors = info.value.errors
    assert "auth.clients.a.routes.0: unknown route 'nope'" in errors
    assert "auth.clients.a.key_env: environment variable T_A is not set" in errors
    assert any(e.startswith("auth.clients.b.rpm:") for e in errors)


def test_a_named_client_is_attributed_counted_and_kept_to_its_routes(gw: Served) -> None:
    seen = tap(gw)
    billing = sdk(gw, KEYS["T_BILLING"])
    reply = billing.chat.completions.create(model="demo", messages=MESSAGES)  # type: ignore[arg-type]
    assert reply.usage is not None
    assert seen[-1].client == "billing"
    assert gw.metric("turnout_client_requests_total", client="billing", route="demo", code="2xx") == 1
    tokens = gw.metric("turnout_client_tokens_total", client="billing", route="demo", kind="completion")
    assert tokens == reply.usage.completion_tokens
    with pytest.raises(openai.NotFoundError) as info:
        billing.chat.completions.create(model="other", messages=MESSAGES)  # type: ignore[arg-type]
    assert info.value.code == "model_not_found" and "unknown model 'other'" in info.value.message
    assert gw.metric("turnout_client_requests_total", client="billing", route="other", code="4xx") == 1
    with pytest.raises(openai.AuthenticationError):
        sdk(gw, "sk-nobody").chat.completions.create(model="demo", messages=MESSAGES)  # type: ignore[arg-type]


def test_rpm_is_enforced_under_concurrency_with_retry_after(gw: Served) -> None:
    body = {"model": "other", "messages": MESSAGES}
    headers = {"authorization": f"Bearer {KEYS['T_SUPPORT']}"}

    def post(_: int) -> httpx.Response:
        return httpx.post(gw.url + "/v1/chat/completions", json=body, headers=headers, timeout=10)

    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        answers = list(pool.map(post, range(20)))
    statuses = sorted(a.status_code for a in answers)
    assert statuses == [200] * 5 + [429] * 15
    refused = [a for a in answers if a.status_code == 429]
    assert all(1 <= int(a.headers["retry-after"]) <= 60 for a in refused)
    assert refused[0].json()["error"]["code"] == "rate_limit_exceeded"
    assert gw.metric("turnout_client_requests_total", client="support", route="other", code="4xx") == 15
    assert gw.metric("turnout_client_requests_total", client="support", route="other", code="2xx") == 5


def test_the_limit_is_a_sliding_minute(tmp_path: Path) -> None:
    limiter = RateLimiter(tmp_path)
    t = 1_000_000.0
    assert [limiter.admit("c", 3, now=t + s) for s in (0.0, 10.0, 20.0)] == [None, None, None]
    assert limiter.admit("c", 3, now=t + 30) == pytest.approx(30.0)  # the admission at 0 leaves the window at 60
    assert limiter.admit("c", 3, now=t + 60) is None
    assert limiter.admit("c", 3, now=t + 65) == pytest.approx(5.0)
    assert limiter.admit("other", 3, now=t + 65) is None  # clients do not share a ring
    limiter.close()


def test_processes_sharing_a_state_dir_share_the_limit(tmp_path: Path) -> None:
    context = multiprocessing.get_context("spawn")
    out = context.Queue()
    workers = [context.Process(target=admit_many, args=(str(tmp_path), 50, out)) for _ in range(4)]
    for w in workers:
        w.start()
    admitted = [out.get(timeout=60) for _ in workers]
    for w in workers:
        w.join(30)
    assert sum(admitted) == 30


def test_rpm_holds_across_the_workers_of_one_serve_process(tmp_path: Path) -> None:
    cfg = config(tmp_path, rpm=10)
    proc = GatewayProcess(cfg, env=KEYS, args=("--workers", "2"))
    try:
        proc.wait_ready(60)
        deadline = time.monotonic() + 30
        while 'turnout_config_reloads_total{result="success"} 2.0' not in httpx.get(proc.url + "/metrics").text:
            assert time.monotonic() < deadline, "the second worker never started"
            time.sleep(0.1)
        body = {"model": "demo", "messages": MESSAGES}
        headers = {"authorization": f"Bearer {KEYS['T_SUPPORT']}"}

        def post(_: int) -> int:  # a new connection each: the kernel spreads them over both workers
            return httpx.post(proc.url + "/v1/chat/completions", json=body, headers=headers, timeout=10).status_code

        with concurrent.futures.ThreadPoolExecutor(10) as pool:
            statuses = sorted(pool.map(post, range(40)))
    finally:
        proc.stop()
    assert statuses == [200] * 10 + [429] * 30


def test_export_filters_by_client_and_rows_carry_attribution(tmp_path: Path) -> None:
    cfg = config(tmp_path, rpm=100)
    with served(cfg, env=KEYS) as gw:
        for key in ("T_BILLING", "T_SUPPORT"):
            body = {"model": "demo", "messages": MESSAGES, "metadata": {"app": key}}
            headers = {"authorization": f"Bearer {KEYS[key]}"}
            assert httpx.post(gw.url + "/v1/chat/completions", json=body, headers=headers).status_code == 200
    env = {"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin", **KEYS}
    command = [sys.executable, "-m", "gateway", "export", "-c", str(cfg), "--format", "raw"]
    result = subprocess.run([*command, "--client", "billing"], capture_output=True, text=True, timeout=60, env=env)
    assert result.returncode == 0, result.stderr
    (row,) = [json.loads(line) for line in result.stdout.splitlines()]
    assert row["client"] == "billing" and row["metadata"] == {"app": "T_BILLING"}
    assert row["tags"] == [] and "cost_usd" in row
    everything = subprocess.run(command, capture_output=True, text=True, timeout=60, env=env)
    assert sorted(json.loads(line)["client"] for line in everything.stdout.splitlines()) == ["billing", "support"]
