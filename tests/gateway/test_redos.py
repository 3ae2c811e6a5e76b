"""ReDoS (security finding 1): every redaction pattern is linear in its input, large records are redacted off
the event loop, and /healthz stays fast while 1 MB of adversarial text per pattern goes through the gateway.

Before the fix, ``"eyJ" * 40000`` (120 KB) took 17 s to redact on this machine and stalled /healthz as long;
``" 1." * 10000`` (30 KB) on a phone-redacting route took 21 s. All timings compare with a baseline of the same
size measured in the same test (plain text that no pattern matches)."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import httpx
import pytest

from collectors.redact import Redactor
from tests.harness import served, write_config

MB = 1 << 20
# one unit per pattern family, each built to make a backtracking engine re-scan what it consumed
ADVERSARIAL = {
    "jwt": "eyJ",
    "jwt-segments": "eyJaaaaaaaaaaa.",
    "jwt-dashes": "eyJ-",
    "private-key": "-----BEGIN PRIVATE KEY-----",
    "private-key-body": "-----BEGIN RSA PRIVATE KEY-----a-",
    "phone": " 1.",
    "phone-run": "1 ",
    "email-local": "a.",
    "email-at": "a@",
    "email-domain": "a@b.",
    "email-labels": "@a.a",
    "bearer": "bearer ",
    "keyword-value": "secret:",
    "keyword-space": "password ",
    "keyword-quote": 'api_key=\\"',
    "sk": "sk-",
    "github": "ghp_",
    "url-password": "://a:",
    "url-password-at": "://a:b@",
    "basic": "Basic 1",
    "keyword-tail": "token_",
    "keyword-escapes": 'password\\\\\\"',
    "stripe": "sk_live_",
    "hugging-face": "hf_",
}
REDACTOR = Redactor(kinds={"email", "phone"}, secrets=("client-key-canary",))


def _seconds(text: str) -> float:
    t0 = time.perf_counter()
    REDACTOR.value({"content": text})
    return time.perf_counter() - t0


@pytest.mark.parametrize("unit", ADVERSARIAL.values(), ids=ADVERSARIAL.keys())
def test_each_pattern_is_linear_on_a_megabyte_of_adversarial_input(unit: str) -> None:
    baseline = min(_seconds("x" * MB) for _ in range(3))
    elapsed = _seconds(unit * (MB // len(unit)))
    # quadratic patterns took 17 s for an eighth of this input; linear ones are within a small factor
    assert elapsed < 30 * baseline + 0.3, f"{elapsed:.3f}s vs baseline {baseline:.3f}s"


CONFIG = """
server: {{state_dir: {state}}}
store: sqlite:///{db}
upstreams:
  d: {{provider: dummy, model: d}}
  s: {{provider: dummy, model: s}}
routes:
  bot:
    variants: {{d: 100}}
    shadows: [{{upstream: s, sample: 1.0}}]
    capture: {{redact: [email, phone]}}
"""


class HealthProbe:
    """Polls /healthz from its own thread while a request runs; keeps the slowest answer."""

    def __init__(self, url: str) -> None:
        self.url, self.worst, self.count = url, 0.0, 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        with httpx.Client(timeout=30) as client:
            while not self._stop.is_set():
                t0 = time.perf_counter()
                assert client.get(self.url + "/healthz").status_code == 200
                self.worst = max(self.worst, time.perf_counter() - t0)
                self.count += 1
                time.sleep(0.005)

    def __enter__(self) -> HealthProbe:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(30)


def test_adversarial_prompts_do_not_stall_the_gateway(tmp_path: Path) -> None:
    cfg = write_config(tmp_path, CONFIG.format(state=tmp_path / "state", db=tmp_path / "t.db"))
    with served(cfg) as gw, httpx.Client(base_url=gw.url, timeout=60) as client:

        def ask(text: str) -> float:
            body = {"model": "bot", "messages": [{"role": "user", "content": text}]}
            t0 = time.perf_counter()
            assert client.post("/v1/chat/completions", json=body).status_code == 200
            return time.perf_counter() - t0

        ask("warm up")
        with HealthProbe(gw.url) as base_probe:
            baseline = min(ask("x" * MB) for _ in range(2))
        for name, unit in ADVERSARIAL.items():
            with HealthProbe(gw.url) as probe:
                elapsed = ask(unit * (MB // len(unit)))
            assert elapsed < 3 * baseline + 1.0, f"{name}: {elapsed:.2f}s vs baseline {baseline:.2f}s"
            assert probe.worst < 3 * base_probe.worst + 0.5, (
                f"{name}: /healthz took {probe.worst:.2f}s (baseline {base_probe.worst:.2f}s)"
            )
