"""Shadow isolation against a real gateway process and real fake upstreams (SH-1, SH-2, SH-3, SH-5, SH-6).

One gateway subprocess serves every route; each test uses its own routes so counters never mix. The primary
upstream and the shadow upstream are separate fake servers, as in production.
"""

from __future__ import annotations

import contextlib
import json
import os
import sqlite3
import statistics
import subprocess
import sys
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.fakes.openai_server import Behavior, FakeOpenAI, Recorded
from tests.harness import ROOT, GatewayProcess, write_config

CLIENT_KEY = "sk-client-canary-51c0"
PRIMARY_KEY = "sk-primary-upstream-2b7e"
SHADOW_KEY = "sk-shadow-upstream-9d41"
CAP = 64
CONFIG = """
auth: {{client_keys_env: T_CLIENT_KEYS}}
shadow: {{max_in_flight: {cap}, timeout_s: 1.5, max_body_mb: 0.002, drain_s: 1}}
upstreams:
  prod: {{base_url: "{primary}", model: prod-model, api_key_env: T_PRIMARY_KEY}}
  sleepy: {{base_url: "{shadow}", model: sleepy-model, api_key_env: T_SHADOW_KEY}}
  far: {{base_url: "{far}", model: far-model}}
  e500: {{base_url: "{shadow}", model: e500-model}}
  e429: {{base_url: "{shadow}", model: e429-model}}
  reset: {{base_url: "{shadow}", model: reset-model}}
  garbage: {{base_url: "{shadow}", model: garbage-model}}
  cand: {{base_url: "{shadow}", model: cand-model, api_key_env: T_SHADOW_KEY}}
routes:
  plain: {{variants: {{prod: 100}}}}
  slow: {{variants: {{prod: 100}}, shadows: [{{upstream: sleepy, sample: 1.0}}]}}
  slow-far: {{variants: {{prod: 100}}, shadows: [{{upstream: far, sample: 1.0}}]}}
  failing:
    variants: {{prod: 100}}
    shadows:
      - {{upstream: e500, sample: 1.0}}
      - {{upstream: e429, sample: 1.0}}
      - {{upstream: reset, sample: 1.0}}
      - {{upstream: garbage, sample: 1.0}}
  mirrored: {{variants: {{prod: 100}}, shadows: [{{upstream: cand, sample: 1.0}}]}}
  optout: {{variants: {{prod: 100}}, shadows: [{{upstream: cand, sample: 1.0}}]}}
  everything: {{variants: {{prod: 100}}, shadows: [{{upstream: cand, sample: 1.0}}]}}
  half: {{variants: {{prod: 100}}, shadows: [{{upstream: cand, sample: 0.5}}, {{upstream: e500, sample: 0}}]}}
"""
CLEAN_LOG = ("Task exception was never retrieved", "Task was destroyed but it is pending", "Traceback")
OUTCOMES = ("ok", "error", "timeout", "dropped", "skipped")
HEADERS = {"authorization": f"Bearer {CLIENT_KEY}"}


@dataclass
class Rig:
    gateway: GatewayProcess
    config: Path
    primary: FakeOpenAI
    shadow: FakeOpenAI
    http: httpx.Client

    def chat(self, route: str, content: str = "hello", **extra: Any) -> httpx.Response:
        body = {"model": route, "messages": [{"role": "user", "content": content}], **extra}
        return self.http.post("/v1/chat/completions", json=body, headers=HEADERS)

    def scrape(self) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
        text = self.http.get("/metrics").text
        return {
            (s.name, frozenset(s.labels.items())): s.value
            for family in text_string_to_metric_families(text)
            for s in family.samples
        }

    def outcomes(self, route: str, shadow: str) -> dict[str, float]:
        samples = self.scrape()
        labels = {"route": route, "shadow": shadow}
        return {
            o: samples.get(("turnout_shadow_requests_total", frozenset({**labels, "outcome": o}.items())), -1.0)
            for o in OUTCOMES
        }

    def settled(self, route: str, shadow: str, sampled: int, timeout: float = 10.0) -> dict[str, float]:
        """Wait until every sampled shadow of ``route`` has an outcome; return the outcome counts."""
        deadline = time.monotonic() + timeout
        while True:
            counts = self.outcomes(route, shadow)
            if sum(counts[o] for o in ("ok", "error", "timeout", "dropped")) >= sampled or time.monotonic() > deadline:
                return counts
            time.sleep(0.05)

    def received(self, model: str) -> list[Recorded]:
        return [r for r in self.shadow.requests if isinstance(r.body, dict) and r.body.get("model") == model]


# A fake upstream in its own process, so the load of a slow shadow lands on neither the test client nor the
# primary's fake (threads of this process, sharing its GIL).
FAR_UPSTREAM = (
    "import sys; from tests.fakes.openai_server import Behavior, FakeOpenAI; fake = FakeOpenAI(); "
    "fake.default = Behavior(delay_s=2.0); print(fake.url, flush=True); sys.stdin.read(); fake.close()"
)


@contextlib.contextmanager
def far_upstream() -> Iterator[str]:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    with subprocess.Popen(
        [sys.executable, "-c", FAR_UPSTREAM], stdin=subprocess.PIPE, stdout=subprocess.PIPE, env=env, text=True
    ) as proc:
        assert proc.stdout is not None and proc.stdin is not None
        try:
            yield proc.stdout.readline().strip()
        finally:
            proc.stdin.close()
            proc.wait(10)


@pytest.fixture(scope="module")
def rig(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Rig]:
    primary, shadow = FakeOpenAI(), FakeOpenAI()
    primary.default = Behavior(response_id="chatcmpl-fixed")
    shadow.set("sleepy-model", Behavior(delay_s=2.0))
    shadow.set("e500-model", Behavior(statuses=[500] * 10_000))
    shadow.set("e429-model", Behavior(statuses=[429] * 10_000, retry_after=1))
    shadow.set("reset-model", Behavior(cut_after=0))
    shadow.set("garbage-model", Behavior(malformed="html"))
    tmp = tmp_path_factory.mktemp("shadow")
    env = {"T_CLIENT_KEYS": CLIENT_KEY, "T_PRIMARY_KEY": PRIMARY_KEY, "T_SHADOW_KEY": SHADOW_KEY}
    try:
        with contextlib.ExitStack() as stack:
            far = stack.enter_context(far_upstream())
            cfg = write_config(tmp, CONFIG.format(cap=CAP, primary=primary.url, shadow=shadow.url, far=far))
            gateway = stack.enter_context(GatewayProcess(cfg, env=env))
            http = stack.enter_context(httpx.Client(base_url=gateway.url, timeout=10))
            yield Rig(gateway, cfg, primary, shadow, http)
            log = gateway.output()
        assert not any(bad in log for bad in CLEAN_LOG), log
    finally:
        primary.close()
        shadow.close()


def comparable(response: httpx.Response) -> tuple[int, dict[str, Any]]:
    body = response.json()
    body.pop("created", None)
    return response.status_code, body


def test_slow_shadow_leaves_primary_latency_within_noise_and_counts_add_up(rig: Rig) -> None:
    n = 60  # under the cap: every primary of the measured run really has a shadow sleeping beside it
    for _ in range(10):  # warm both routes and the keep-alive connection
        rig.chat("plain"), rig.chat("slow-far")
    rig.settled("slow-far", "far", 10)
    durations: dict[str, list[float]] = {"plain": [], "slow-far": []}
    for _ in range(n):
        for route in durations:  # alternate on one keep-alive connection: same conditions for both
            t0 = time.perf_counter()
            response = rig.chat(route)
            durations[route].append(time.perf_counter() - t0)
            assert response.status_code == 200, response.text
    plain, slow = (statistics.median(durations[r]) * 1000 for r in durations)
    p99 = {r: round(sorted(durations[r])[int(0.99 * n) - 1] * 1000, 2) for r in durations}
    print(f"\nprimary median without shadow {plain:.2f} ms, with a 2 s shadow {slow:.2f} ms; p99 {p99}")
    assert slow <= plain + max(2.0, 0.3 * plain), durations
    counts = rig.settled("slow-far", "far", 10 + n)
    # every sampled shadow has exactly one outcome: here all were sent and cut at shadow.timeout_s
    assert counts["timeout"] == 10 + n and counts["ok"] == counts["error"] == counts["dropped"] == 0


def test_shadow_500_429_reset_and_garbage_leave_the_primary_identical(rig: Rig) -> None:
    for i in range(5):
        without = rig.chat("plain", f"question {i}")
        with_failing = rig.chat("failing", f"question {i}")
        assert comparable(with_failing) == comparable(without)
        streamed = rig.chat("failing", f"question {i}", stream=True)
        assert streamed.status_code == 200 and streamed.text.endswith("data: [DONE]\n\n")
    for shadow in ("e500", "e429", "reset", "garbage"):
        counts = rig.settled("failing", shadow, 10)
        assert counts["error"] == 10 and counts["ok"] == counts["timeout"] == counts["dropped"] == 0, (shadow, counts)
    assert len(rig.received("reset-model")) == 10


def test_a_flood_beyond_max_in_flight_is_dropped_and_counted(rig: Rig) -> None:
    n = 3 * CAP
    before = rig.outcomes("slow", "sleepy")
    with ThreadPoolExecutor(16) as pool, httpx.Client(base_url=rig.gateway.url, timeout=10) as http:
        body = {"model": "slow", "messages": [{"role": "user", "content": "flood"}]}
        statuses = list(pool.map(lambda _: http.post("/v1/chat/completions", json=body, headers=HEADERS), range(n)))
    assert {r.status_code for r in statuses} == {200}
    sampled_before = sum(before[o] for o in ("ok", "error", "timeout", "dropped"))
    after = rig.settled("slow", "sleepy", int(sampled_before) + n)
    assert sum(after[o] - before[o] for o in ("ok", "error", "timeout", "dropped")) == n
    assert after["dropped"] - before["dropped"] >= n - CAP
    time.sleep(0.2)
    calls = rig.received("sleepy-model")
    assert all(r.done.is_set() for r in calls)
    assert len(calls) == after["ok"] + after["timeout"]
    # at no moment were more than CAP shadow calls open on the sleepy upstream
    events = sorted([(r.received_at, 1) for r in calls] + [(r.finished_at or 0.0, -1) for r in calls])
    open_calls = peak = 0
    for _, step in events:
        open_calls += step
        peak = max(peak, open_calls)
    assert 0 < peak <= CAP


def test_shadow_fidelity_own_key_marker_and_correlation_id(rig: Rig) -> None:
    extra = {
        "temperature": 0.3,
        "max_tokens": 50,
        "user": "u-1",
        "tools": [{"type": "function", "function": {"name": "f"}}],
    }
    for stream in (False, True):
        response = rig.chat("mirrored", f"fidelity {stream}", stream=stream, **extra)
        assert response.status_code == 200
        primary = [r for r in rig.primary.requests if f"fidelity {stream}" in json.dumps(r.body)]
        cid = primary[-1].headers["x-turnout-correlation-id"]
        assert cid != response.headers["x-turnout-request-id"]  # never the feedback key
        deadline = time.monotonic() + 5
        while not (seen := [r for r in rig.received("cand-model") if r.headers.get("x-turnout-correlation-id") == cid]):
            assert time.monotonic() < deadline
            time.sleep(0.02)
        (got,) = seen
        sent = {"model": "cand-model", "messages": [{"role": "user", "content": f"fidelity {stream}"}], **extra}
        assert got.body == sent  # same messages and parameters, model rewritten, never streamed
        assert got.headers["authorization"] == f"Bearer {SHADOW_KEY}"
        assert got.headers["x-turnout-shadow"] == "1"
        assert CLIENT_KEY not in json.dumps(got.headers) + json.dumps(got.body)
        assert PRIMARY_KEY not in json.dumps(got.headers)
    counts = rig.settled("mirrored", "cand", 2)
    assert counts["ok"] == 2
    # identical answers from the fake: both comparisons score 1.0
    samples = rig.scrape()
    labels = frozenset({"route": "mirrored", "shadow": "cand"}.items())
    assert samples[("turnout_shadow_agreement_count", labels)] == 2
    assert samples[("turnout_shadow_agreement_sum", labels)] == 2.0
    shadow_labels = frozenset({"route": "mirrored", "variant": "cand", "role": "shadow", "code": "2xx"}.items())
    assert samples[("turnout_requests_total", shadow_labels)] == 2


def test_no_capture_and_oversized_bodies_are_skipped_not_mirrored(rig: Rig) -> None:
    before = len(rig.received("cand-model"))
    opted = rig.http.post(
        "/v1/chat/completions",
        json={"model": "optout", "messages": [{"role": "user", "content": "private"}]},
        headers={**HEADERS, "x-turnout-no-capture": "1"},
    )
    big = rig.chat("optout", "x" * 4000)  # over shadow.max_body_mb (2 KiB), under the server's limit
    assert opted.status_code == big.status_code == 200
    time.sleep(0.3)
    assert len(rig.received("cand-model")) == before
    assert rig.outcomes("optout", "cand") == {"ok": 0, "error": 0, "timeout": 0, "dropped": 0, "skipped": 2}


def test_every_endpoint_can_be_shadowed(rig: Rig) -> None:
    assert rig.http.post("/v1/completions", json={"model": "everything", "prompt": "p"}, headers=HEADERS).is_success
    assert rig.http.post("/v1/embeddings", json={"model": "everything", "input": "e"}, headers=HEADERS).is_success
    assert rig.chat("everything").is_success
    counts = rig.settled("everything", "cand", 3)
    assert counts["ok"] == 3
    paths = {r.path for r in rig.received("cand-model") if r.headers.get("x-turnout-shadow") == "1"}
    assert {"/v1/completions", "/v1/embeddings", "/v1/chat/completions"} <= paths


def test_zero_sample_shadow_counters_exist_at_zero_and_never_move(rig: Rig) -> None:
    for _ in range(20):
        assert rig.chat("half").status_code == 200
    assert rig.outcomes("half", "e500") == dict.fromkeys(OUTCOMES, 0.0)
    counts = rig.settled("half", "cand", 1)
    assert 0 < counts["ok"] < 20


def export(rig: Rig, *args: str) -> list[dict[str, Any]]:
    done = subprocess.run(
        [sys.executable, "-m", "gateway", "export", "-c", str(rig.config), *args],
        cwd=rig.config.parent,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        capture_output=True,
        timeout=30,
        check=True,
    )
    return [json.loads(line) for line in done.stdout.splitlines() if line.strip()]


def test_shadow_rows_are_stored_linked_to_their_primary_and_kept_out_of_training_export(rig: Rig) -> None:
    response = rig.chat("mirrored", "stored and linked", stream=True)
    request_id = response.headers["x-turnout-request-id"]
    deadline = time.monotonic() + 15
    while not (
        rows := [r for r in export(rig, "--route", "mirrored") if request_id in (r["request_id"], r["parent_id"])]
    ):
        assert time.monotonic() < deadline, "interaction not stored"
        time.sleep(0.3)
    while len(rows) < 2 and time.monotonic() < deadline:
        time.sleep(0.3)
        rows = [r for r in export(rig, "--route", "mirrored") if request_id in (r["request_id"], r["parent_id"])]
    primary, shadow = sorted(rows, key=lambda r: r["role"])
    assert primary["role"] == "primary" and primary["request_id"] == request_id and primary["parent_id"] is None
    assert shadow["role"] == "shadow" and shadow["parent_id"] == request_id and shadow["upstream"] == "cand"
    assert shadow["request_id"] != request_id and shadow["stream"] is False and "stream" not in shadow["request"]
    assert shadow["extra"]["comparison"]["similarity"] == 1.0 and shadow["extra"]["comparison"]["exact"] is True
    # feedback finds only primaries by response id, so only theirs is in that column (and its index)
    assert primary["response_id"] == "chatcmpl-fixed" and shadow["response_id"].startswith("chatcmpl-fake-")
    with contextlib.closing(sqlite3.connect(f"file:{rig.config.parent / 'turnout.db'}?mode=ro", uri=True)) as db:
        columns = dict(
            db.execute("SELECT role, response_id FROM interactions WHERE ? IN (request_id, parent_id)", [request_id])
        )
    assert columns == {"primary": "chatcmpl-fixed", "shadow": None}
    training = export(rig, "--route", "mirrored", "--format", "openai-chat")
    assert training and len(training) == len([r for r in export(rig, "--route", "mirrored") if r["role"] == "primary"])


def test_sigterm_with_hanging_shadows_exits_within_the_drain_bound(tmp_path: Path, fake_openai: FakeOpenAI) -> None:
    fake_openai.set("hang-model", Behavior(hang=True))
    cfg = write_config(
        tmp_path,
        f"""
shadow: {{max_in_flight: 4, timeout_s: 60, drain_s: 1}}
upstreams:
  prod: {{base_url: "{fake_openai.url}", model: prod-model}}
  hang: {{base_url: "{fake_openai.url}", model: hang-model}}
routes:
  bot: {{variants: {{prod: 1}}, shadows: [{{upstream: hang, sample: 1}}]}}
""",
    )
    with GatewayProcess(cfg) as gateway:
        for _ in range(6):
            body = {"model": "bot", "messages": [{"role": "user", "content": "hi"}]}
            assert httpx.post(gateway.url + "/v1/chat/completions", json=body, timeout=10).status_code == 200
        hanging = [r for r in fake_openai.wait_for(6 + 4) if r.body["model"] == "hang-model"]
        assert len(hanging) == 4
        t0 = time.monotonic()
        assert gateway.stop() in (0, -15)  # uvicorn re-raises the signal it handled once it has shut down
        assert time.monotonic() - t0 < 5.0  # drain_s 1, not the 60 s shadow timeout
        log = gateway.output()
    assert "Application shutdown complete" in log
    assert all(r.wait_done(2).aborted for r in hanging)  # the cut shadows' connections were closed
    assert not any(bad in log for bad in CLEAN_LOG), log
