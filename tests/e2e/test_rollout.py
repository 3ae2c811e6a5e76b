"""Guarded rollouts end to end: two ``turnout serve`` processes on one PostgreSQL, upstreams of known quality
(the dummy's ``wrong_share``; a refused port for a broken model), simulated users who send feedback on what
they got through the real gateways. A better candidate goes through the shadow gate and its steps to 100 %,
surviving a SIGKILL of one replica mid-step; a broken one is rolled back within seconds and its users are
back on the control on both replicas."""

from __future__ import annotations

import calendar
import re
import signal
import time
from pathlib import Path

import httpx
import pytest

from gateway.cli import main
from tests.collectors.pg import PostgresServer, postgres_server  # noqa: F401
from tests.harness import GatewayProcess, free_port, write_config

WRONG = "Sorry, I am not sure about that."

CONFIG = """# rollout end to end
server: {{state_dir: {state}}}
store: {dsn}
upstreams:
  prod: {{provider: dummy, wrong_share: 0.4}}      # the model in production: 60 % right
  cand: {candidate}
routes:
  bot:
    variants: {{prod: 100, cand: 0}}   # the file's weights
    analysis:
      control: prod
      primary: thumbs_up
      guardrails: {{error_rate: 0.05}}
      min_users: 25
      min_duration: 0s
    rollout:
      candidate: cand
      steps: {steps}
      interval: 2s
      gates: {gates}
"""


def config(tmp_path: Path, dsn: str, *, candidate: str, steps: str, gates: str) -> Path:
    text = CONFIG.format(state=tmp_path / "state", dsn=dsn, candidate=candidate, steps=steps, gates=gates)
    return write_config(tmp_path, text)


class Users:
    """Simulated users: each asks once per round through one of the gateways and rates the answer."""

    def __init__(self, prefix: str) -> None:
        self.prefix = prefix
        self.seen: dict[str, str] = {}  # user -> the variant that answered last
        self.client = httpx.Client(timeout=10)
        self.rounds = 0

    def round(self, urls: list[str], users: int = 20) -> None:
        self.rounds += 1
        for u in range(users):
            user = f"{self.prefix}-{(self.rounds * users + u) % 400}"
            url = urls[u % len(urls)]
            headers = {"x-turnout-user": user}
            body = {"model": "bot", "messages": [{"role": "user", "content": f"{user} question {self.rounds}"}]}
            r = self.client.post(url + "/v1/chat/completions", json=body, headers=headers)
            self.seen[user] = r.headers.get("x-turnout-variant", "")
            if r.status_code != 200:
                continue
            answer = r.json()["choices"][0]["message"]["content"]
            fb = {"request_id": r.headers["x-turnout-request-id"], "label": "bad" if answer == WRONG else "good"}
            assert self.client.post(url + "/v1/feedback", json=fb, headers=headers).status_code == 202


def weight(url: str, variant: str) -> float | None:
    text = httpx.get(url + "/metrics", timeout=5).text
    found = re.search(rf'turnout_experiment_weight\{{[^}}]*variant="{variant}"[^}}]*\}} ([0-9.e+-]+)', text)
    return float(found.group(1)) if found else None


def status(path: Path, capsys: pytest.CaptureFixture[str]) -> str:
    capsys.readouterr()
    assert main(["rollout", "status", "bot", "-c", str(path), "--history", "20"]) == 0
    return capsys.readouterr().out


def phase(path: Path, capsys: pytest.CaptureFixture[str]) -> str:
    found = re.match(r"route bot: candidate cand, (\w+),", status(path, capsys))
    assert found, status(path, capsys)
    return found.group(1)


@pytest.fixture
def dsn(postgres_server: PostgresServer) -> str:  # noqa: F811
    return postgres_server.create_database()


def test_a_better_candidate_reaches_100_percent_through_a_replica_kill(
    tmp_path: Path, dsn: str, capsys: pytest.CaptureFixture[str]
) -> None:
    path = config(tmp_path, dsn, candidate="{provider: dummy, wrong_share: 0.1}", steps="[50, 100]",
                  gates="{shadow: {min_samples: 20, min_agreement: 0.3}}")  # fmt: skip
    a, b = GatewayProcess(path), GatewayProcess(path)
    try:
        a.wait_ready(60)
        b.wait_ready(60)
        assert main(["rollout", "start", "bot", "-c", str(path), "--actor", "tester"]) == 0
        users = Users("good")
        deadline = time.monotonic() + 90
        while phase(path, capsys) == "shadow" and time.monotonic() < deadline:
            users.round([a.url, b.url])  # mirrored to the candidate, answered by prod
            time.sleep(0.3)
        assert phase(path, capsys) == "step", status(path, capsys)
        assert set(users.seen.values()) == {"prod"}  # nobody was answered by the candidate in the gate
        # mid-step, one replica (and its job runner) dies: the other carries on
        users.round([a.url, b.url])
        a.stop(signal.SIGKILL)
        while phase(path, capsys) != "succeeded" and time.monotonic() < deadline:
            users.round([b.url])
            time.sleep(0.3)
        out = status(path, capsys)
        assert phase(path, capsys) == "succeeded", out + b.output()
        # every replica left serves the candidate to everyone within 5 s of the transition
        t = time.monotonic()
        while weight(b.url, "cand") != 100.0 and time.monotonic() - t < 5:
            time.sleep(0.2)
        assert weight(b.url, "cand") == 100.0 and weight(b.url, "prod") == 0.0
        users.round([b.url])
        assert all(users.seen[f"good-{(users.rounds * 20 + u) % 400}"] == "cand" for u in range(20))
        lines = out.splitlines()[1:]
        assert any("shadow 0 -> step 50" in line for line in lines), out
        assert any("step 50 -> succeeded 100" in line for line in lines), out
    finally:
        a.stop(signal.SIGKILL)
        b.stop()


def test_a_broken_candidate_is_rolled_back_and_its_users_return(
    tmp_path: Path, dsn: str, capsys: pytest.CaptureFixture[str]
) -> None:
    dead = f"http://127.0.0.1:{free_port()}/v1"  # nothing listens: every call fails at once
    path = config(tmp_path, dsn, candidate=f"{{base_url: '{dead}', model: m, retries: 0}}", steps="[30, 60, 100]",
                  gates="{}")  # fmt: skip
    a, b = GatewayProcess(path), GatewayProcess(path)
    try:
        a.wait_ready(60)
        b.wait_ready(60)
        assert main(["rollout", "start", "bot", "-c", str(path), "--actor", "tester"]) == 0
        t = time.monotonic()
        while (weight(a.url, "cand"), weight(b.url, "cand")) != (30.0, 30.0) and time.monotonic() - t < 5:
            time.sleep(0.1)
        assert (weight(a.url, "cand"), weight(b.url, "cand")) == (30.0, 30.0)
        users = Users("bad")
        breach = time.monotonic()  # the candidate's first failures are in this round
        users.round([a.url, b.url])
        on_candidate = sorted(u for u, v in users.seen.items() if v == "cand")
        assert on_candidate  # about 30 % of 20 users
        while (weight(a.url, "cand"), weight(b.url, "cand")) != (0.0, 0.0) and time.monotonic() - breach < 30:
            users.round([a.url, b.url], users=5)
            time.sleep(0.1)
        to_zero = time.monotonic() - breach
        assert (weight(a.url, "cand"), weight(b.url, "cand")) == (0.0, 0.0)
        with capsys.disabled():
            print(f"\nfirst failed requests to weight 0 on both replicas: {to_zero:.1f} s")
        assert to_zero < 15  # a check every 2 s, a store read every 2 s, the loader's batches
        out = status(path, capsys)
        assert phase(path, capsys) == "rolled_back" and "error_rate" in out, out
        for url in (a.url, b.url):  # every replica exports the rollout from the store
            text = httpx.get(url + "/metrics", timeout=5).text
            assert 'turnout_rollout_step{route="bot"} 0.0' in text
            assert 'turnout_rollout_rolled_back{route="bot"} 1.0' in text
            assert 'turnout_rollout_transitions_total{route="bot",to="rolled_back"} 1.0' in text
            assert 'turnout_rollout_transitions_total{route="bot",to="step"} 1.0' in text
        client = httpx.Client(timeout=5)
        for i, user in enumerate(on_candidate):
            url = (a.url, b.url)[i % 2]
            r = client.post(url + "/v1/chat/completions", headers={"x-turnout-user": user},
                            json={"model": "bot", "messages": [{"role": "user", "content": "again"}]})  # fmt: skip
            assert (r.status_code, r.headers["x-turnout-variant"]) == (200, "prod")
        # the file catches up: rollback writes the control's weights and ends the rollout
        assert main(["rollback", "bot", "-c", str(path), "--actor", "tester"]) == 0
        assert "variants: {prod: 100, cand: 0}   # the file's weights" in path.read_text()
        assert phase(path, capsys) == "aborted"
    finally:
        a.stop()
        b.stop()


def test_a_manual_gate_waits_for_approve_then_serves_everyone(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    store = f"sqlite:///{tmp_path / 'turnout.db'}"
    path = config(tmp_path, store, candidate="{provider: dummy, wrong_share: 0.1}", steps="[50, 100]",
                  gates="{manual: true}")  # fmt: skip
    gateway = GatewayProcess(path)
    try:
        gateway.wait_ready(60)
        assert main(["rollout", "start", "bot", "-c", str(path), "--actor", "tester"]) == 0
        users = Users("manual")
        deadline = time.monotonic() + 60
        while phase(path, capsys) == "step" and time.monotonic() < deadline:
            users.round([gateway.url])
            time.sleep(0.2)
        out = status(path, capsys)
        assert phase(path, capsys) == "awaiting_approval", out + gateway.output()
        assert "waiting for approval: `turnout rollout approve bot`" in out
        # held at 50 % while nobody approves, however good the candidate looks; every replica says it waits
        for _ in range(3):
            users.round([gateway.url])
            time.sleep(1.0)  # more than the 2 s interval in all
        assert phase(path, capsys) == "awaiting_approval" and weight(gateway.url, "cand") == 50.0
        assert 'turnout_rollout_awaiting_approval{route="bot"} 1.0' in httpx.get(gateway.url + "/metrics").text
        assert main(["rollout", "approve", "bot", "-c", str(path), "--actor", "alice", "--reason", "figures ok"]) == 0
        approved = time.time()
        out = status(path, capsys)
        assert phase(path, capsys) == "succeeded", out
        t = time.monotonic()
        while weight(gateway.url, "cand") != 100.0 and time.monotonic() - t < 5:
            time.sleep(0.2)
        assert weight(gateway.url, "cand") == 100.0
        assert 'turnout_rollout_awaiting_approval{route="bot"} 0.0' in httpx.get(gateway.url + "/metrics").text
        # the approval is audited: who, when, from, to, why
        line = next(x for x in out.splitlines() if " alice: " in x)
        stamp = time.strptime(line.split(" alice:")[0].strip(), "%Y-%m-%d %H:%M:%S")
        assert abs(calendar.timegm(stamp) - approved) < 5
        assert "awaiting_approval 50 -> succeeded 100: figures ok" in line
        assert main(["rollout", "approve", "bot", "-c", str(path), "--actor", "alice"]) == 1  # nothing to approve
    finally:
        gateway.stop()
