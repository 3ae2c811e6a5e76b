"""Drift and base-model change end to end: a real gateway (`turnout serve`, its jobs child) in front of a fake
OpenAI server, a real Prometheus with the alert rules (`for:` shortened).

Month-1 traffic goes through two routes; then the config gains drift blocks (live reload) and the fake
upstream of one route changes its system_fingerprint; that route gets month-6 traffic (a different
vocabulary and length), the other more month-1 traffic. TurnoutInputDrift fires for the first route only,
TurnoutUpstreamModelChanged fires once for its upstream, `turnout drift report` names the shifted terms,
and every query of the dashboard's drift row shows data."""

from __future__ import annotations

import itertools
import json
import math
import random
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import yaml

from tests.drift_traffic import month1, month6
from tests.e2e.prometheus import PrometheusServer
from tests.fakes.openai_server import Behavior, FakeOpenAI
from tests.harness import ROOT, GatewayProcess, write_config

RULES = ROOT / "helm" / "turnout" / "files" / "alerts.yaml"
DASHBOARD = ROOT / "grafana" / "turnout.json"
CONFIG = """
server: {{host: 127.0.0.1, port: 8080, state_dir: {state}}}
store: sqlite:///{db}
upstreams:
  prod: {{base_url: "{fake}", model: support-v3}}
  steady: {{base_url: "{fake}", model: faq-v1}}
routes:
  support-bot:
    variants: {{prod: 100}}
    sticky_by: none
{drift}  faq-bot:
    variants: {{steady: 100}}
    sticky_by: none
{drift}"""
DRIFT = "    drift: {reference: window:30d, every: 2s, max_psi: 0.2}\n"


def _rules(directory: Path) -> Path:
    rules = yaml.safe_load(RULES.read_text())
    for group in rules["groups"]:
        for rule in group["rules"]:
            rule["for"] = "1s"
    path = directory / "alerts.yaml"
    path.write_text(yaml.safe_dump(rules, sort_keys=False))
    return path


def _wait(check: Callable[[], Any], what: str, timeout: float = 60.0) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        found = check()
        if found:
            return found
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.25)


def _send(client: httpx.Client, route: str, records: list[dict[str, Any]]) -> None:
    for i, r in enumerate(records):
        body = {"model": route, "messages": r["request"]["messages"], "stream": i % 3 == 0}
        response = client.post("/v1/chat/completions", json=body)
        assert response.status_code == 200, response.text


def _firing(prom: PrometheusServer, name: str) -> list[dict[str, str]]:
    return [a["labels"] for a in prom.alerts() if a["labels"]["alertname"] == name and a["state"] == "firing"]


def test_drift_and_fingerprint_change_fire_their_alerts(tmp_path: Path) -> None:
    rng = random.Random(17)
    with FakeOpenAI() as fake:
        fake.set("support-v3", Behavior(fingerprint="fp_a"))
        fake.set("faq-v1", Behavior(fingerprint="fp_steady"))
        fields = {"state": tmp_path / "state", "db": tmp_path / "turnout.db", "fake": fake.url}
        config = write_config(tmp_path, CONFIG.format(**fields, drift=""))
        with (
            GatewayProcess(config) as gateway,
            PrometheusServer(tmp_path / "prom", targets=[gateway.url[7:]], rule_files=(_rules(tmp_path),)) as prom,
            httpx.Client(base_url=gateway.url, timeout=10) as client,
        ):
            # month 1: the reference of both routes
            _send(client, "support-bot", month1(rng, 100))
            _send(client, "faq-bot", month1(rng, 100))
            time.sleep(2.5)  # older than the first check's window (2s)
            write_config(tmp_path, CONFIG.format(**fields, drift=DRIFT))
            # the jobs ran once: the model watch has read fp_a, the current windows are open (Prometheus renames
            # the metric's `job` label exported_job: its own target label is `job`)
            jobs = ("upstream-models", "drift:support-bot", "drift:faq-bot")
            _wait(
                lambda: (
                    len(
                        prom.query(
                            'turnout_job_last_success_timestamp_seconds{exported_job=~"upstream-models|drift:.*"}'
                        )
                    )
                    == len(jobs)
                ),
                f"a first successful run of {jobs} in Prometheus",
            )
            assert prom.query('turnout_upstream_model_changes_total{upstream="prod"} == 0')
            assert not prom.query("turnout_drift_score"), "published before the current window had 50 interactions"
            # month 6, and the provider updates the model behind prod
            fake.set("support-v3", Behavior(fingerprint="fp_b"))
            _send(client, "support-bot", month6(rng, 60))
            _send(client, "faq-bot", month1(rng, 60))

            _wait(lambda: _firing(prom, "TurnoutInputDrift"), "TurnoutInputDrift")
            _wait(lambda: _firing(prom, "TurnoutUpstreamModelChanged"), "TurnoutUpstreamModelChanged")
            _wait(lambda: prom.query('turnout_drift_score{route="faq-bot", signal="input"}'), "faq-bot's check")
            time.sleep(2.0)  # a few more rule evaluations with both routes' scores in
            assert [a["route"] for a in _firing(prom, "TurnoutInputDrift")] == ["support-bot"]
            changed = _firing(prom, "TurnoutUpstreamModelChanged")
            assert [(a["upstream"], a["action"]) for a in changed] == [("prod", "retrain")]
            info = prom.query('turnout_upstream_model_info{upstream="prod"}')
            assert {(s["metric"]["model"], s["metric"]["fingerprint"]) for s in info} == {("support-v3", "fp_b")}
            # fired once: one series, present at every step since it started firing
            history = prom.query_range('ALERTS{alertname="TurnoutUpstreamModelChanged", alertstate="firing"}', 120)
            assert [s["metric"]["upstream"] for s in history] == ["prod"]
            steps = [float(t) for t, _ in history[0]["values"]]
            assert all(b - a <= 1.0 + 1e-6 for a, b in itertools.pairwise(steps)), steps
            _check_drift_row(prom)

        report = subprocess.run(
            [sys.executable, "-m", "gateway", "drift", "report", "support-bot", "-c", str(config)],
            capture_output=True, text=True, timeout=60, cwd=tmp_path,
        )  # fmt: skip
        assert report.returncode == 0, report.stderr
        rose = report.stdout.split("Terms that rose")[1].split("Terms that fell")[0]
        fell = report.stdout.split("Terms that fell")[1]
        assert report.stdout.startswith("Drift of route support-bot") and "DRIFT: input" in report.stdout
        assert {"subscription", "cancel", "premium"} & set(rose.split())
        assert {"refund", "shipping", "tracking"} & set(fell.split())


def _check_drift_row(prom: PrometheusServer) -> None:
    panels = json.loads(DASHBOARD.read_text())["panels"]
    start = next(i for i, p in enumerate(panels) if p["type"] == "row" and "drift" in p["title"].lower())
    row = []
    for panel in panels[start + 1 :]:
        if panel["type"] == "row":
            break
        row.append(panel)
    problems = []
    for panel in row:
        for target in panel["targets"]:
            if "deprecated" in target["expr"]:
                continue  # no upstream here has a deprecated_at (the promtool tests cover that query)
            expr = target["expr"].replace("$route", ".*").replace("$variant", ".*")
            result = prom.query(expr)
            if not any(not math.isnan(float(s["value"][1])) for s in result):
                problems.append(f"{panel['title']}: no data: {expr}")
    assert not problems, "\n".join(problems)
