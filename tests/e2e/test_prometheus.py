"""A real Prometheus scrapes a real gateway under traffic and feedback: every dashboard query parses and the
panels that should show data do; the alert rules (with `for:` shortened) fire for a stale, badly rated
variant and a failing route, and stay quiet for a healthy route and a fresh, well rated variant."""

from __future__ import annotations

import datetime as dt
import json
import math
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from tests.deploy.promql import metric_names
from tests.e2e.prometheus import PrometheusServer
from tests.harness import GatewayProcess, free_port, write_config

ROOT = Path(__file__).resolve().parents[2]
DASHBOARD = ROOT / "grafana" / "turnout.json"
RULES = ROOT / "helm" / "turnout" / "files" / "alerts.yaml"

CONFIG = """
server: {{host: 127.0.0.1, port: 8080, state_dir: {state}}}
store: sqlite:///{db}
upstreams:
  prod-v3: {{provider: dummy, model: support-v3, trained_at: 2020-01-01}}
  cand-v4: {{provider: dummy, model: support-v4, trained_at: {today}}}
  fresh: {{provider: dummy, model: faq-v1, trained_at: {today}}}
  dead: {{base_url: "http://127.0.0.1:{dead_port}/v1", model: gone, timeout_s: 2}}
routes:
  stale-bot:
    variants: {{prod-v3: 50, cand-v4: 50}}
    sticky_by: none
    retraining: {{max_model_age: 30d, min_feedback_score: 0.8, min_eval_score: 0.85, min_ratings: 3}}
  healthy-bot:
    variants: {{fresh: 100}}
    shadows: [{{upstream: cand-v4, sample: 1.0}}]
    retraining: {{max_model_age: 30d, min_feedback_score: 0.8, min_ratings: 3}}
  broken:
    variants: {{dead: 100}}
review: {{sample: 0.0, flag: {{label: bad}}}}   # the review row's panels read its backlog and bound
"""
ROUTES = ("stale-bot", "healthy-bot", "broken")

# Panels that must show data from this traffic whatever else lands. Every other query must show data as soon
# as all the metrics it reads have series (shadows, feedback, evals, capture arrive with their features).
MUST_HAVE_DATA = {
    "Requests per second by variant",
    "Traffic share vs configured weight",
    "Configured split",
    "5xx share of primary requests per route",
    "Responses by status class",
    "Upstream errors by kind",
    "Upstream attempts by outcome",
    "Request latency p50 / p95 / p99 by variant",
    "Time to first token p50 / p95 / p99 by variant",
    "Tokens per second by variant",
    "Completion tokens per answer",
    "Shadow agreement with the primary",
    "Shadow requests by outcome",
    "Shadow vs primary latency p95",
    "Mean feedback score (6h) vs min_feedback_score",
    "Ratings in 6h vs min_ratings",
    "Feedback by label per hour",
    "Interactions captured per second",
    "Model age vs max_model_age",
    "Model age as share of max_model_age",
    "Capture queue depth",
    "Capture drops (5m)",
    "Config reloads",
    "Time since last successful config load",
    "Distinct configs served",
    "Config served by each replica",
}


@dataclass
class Stack:
    gateway: GatewayProcess
    prometheus: PrometheusServer
    primaries: int


def _rules_with_short_for(directory: Path) -> Path:
    rules = yaml.safe_load(RULES.read_text())
    for group in rules["groups"]:
        for rule in group["rules"]:
            if "for" in rule:
                rule["for"] = "1s"
    path = directory / "alerts.yaml"
    path.write_text(yaml.safe_dump(rules, sort_keys=False))
    return path


def _chat(client: httpx.Client, route: str, *, stream: bool = False) -> httpx.Response:
    body: dict[str, Any] = {"model": route, "messages": [{"role": "user", "content": "hello there"}]}
    if stream:
        body["stream"] = True
        with client.stream("POST", "/v1/chat/completions", json=body) as response:
            response.read()
            return response
    return client.post("/v1/chat/completions", json=body)


def _send_traffic(client: httpx.Client, answered: dict[tuple[str, str], str]) -> int:
    """Chat requests to every route; ``answered`` collects a request id per (route, variant) served."""
    sent = 0
    for route in ROUTES:
        for i in range(6 if route != "broken" else 2):
            response = _chat(client, route, stream=i % 2 == 1)
            assert response.status_code == (502 if route == "broken" else 200), response.text
            if response.status_code == 200:
                answered[(route, response.headers["x-turnout-variant"])] = response.headers["x-turnout-request-id"]
            sent += 1
    return sent


# (route, variant) -> the score its users give: stale-bot's stale variant is rated badly, the others well
SCORES = {("stale-bot", "prod-v3"): 0.0, ("stale-bot", "cand-v4"): 1.0, ("healthy-bot", "fresh"): 1.0}
RATINGS = 5  # each variant's ratings; the routes ask for min_ratings: 3


def _rate(client: httpx.Client, prom: PrometheusServer, answered: dict[tuple[str, str], str]) -> None:
    """Send RATINGS feedback scores per variant: one first, the rest once Prometheus has seen that one, so
    the window's increase() counts them (a series appears with its first observation)."""
    assert set(answered) >= set(SCORES), f"traffic did not reach every variant: {sorted(answered)}"

    def send(times: int) -> None:
        for key, score in SCORES.items():
            for _ in range(times):
                response = client.post("/v1/feedback", json={"request_id": answered[key], "score": score})
                assert response.status_code == 202, response.text

    def seen(count: int) -> bool:
        result = prom.query(f"turnout_feedback_score_count >= {count}")
        return {(r["metric"]["route"], r["metric"]["variant"]) for r in result} >= set(SCORES)

    send(1)
    _wait_for(lambda: seen(1), "the first ratings in Prometheus")
    send(RATINGS - 1)
    _wait_for(lambda: seen(RATINGS), "all ratings in Prometheus")


def _wait_for(check: Any, what: str, timeout: float = 20.0) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        result = check()
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.25)


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    tmp = tmp_path_factory.mktemp("prometheus-e2e")
    config = write_config(
        tmp,
        CONFIG.format(
            state=tmp / "state", db=tmp / "turnout.db", today=dt.date.today().isoformat(), dead_port=free_port()
        ),
    )
    with GatewayProcess(config) as gateway:
        target = gateway.url.removeprefix("http://")
        with PrometheusServer(tmp / "prometheus", targets=[target], rule_files=(_rules_with_short_for(tmp),)) as prom:
            # Prometheus starts scraping a few seconds after it is ready (service discovery batches updates)
            _wait_for(lambda: prom.query("up == 1"), "the first scrape")
            sent = 0
            answered: dict[tuple[str, str], str] = {}
            with httpx.Client(base_url=gateway.url, timeout=10) as client:
                # two bursts a few scrapes apart, so rates and quantiles have increases to work on
                for _ in range(2):
                    sent += _send_traffic(client, answered)
                    time.sleep(2.5)
                _rate(client, prom, answered)
            _wait_for(
                lambda: prom.query(f'sum(turnout_requests_total{{role="primary"}}) == {sent}'),
                "Prometheus to scrape the traffic",
            )
            yield Stack(gateway, prom, sent)


def _substitute(expr: str, route: str = ".*", variant: str = ".*") -> str:
    # what Grafana sends: allValue .* for "All", (a|b) for several values
    return (
        expr.replace("$__rate_interval", "1m")
        .replace("${route}", route)
        .replace("$route", route)
        .replace("${variant}", variant)
        .replace("$variant", variant)
    )


def _has_data(result: list[dict[str, Any]]) -> bool:
    values = [v for series in result for v in series.get("values", [series.get("value")]) if v]
    return any(not math.isnan(float(v[1])) for v in values)


def test_dashboard_variables_list_the_configured_routes_and_variants(stack: Stack) -> None:
    variables = {v["name"]: v for v in json.loads(DASHBOARD.read_text())["templating"]["list"]}
    route_query = variables["route"]["query"]["query"]
    assert route_query == "label_values(turnout_experiment_weight, route)"
    assert set(stack.prometheus.label_values("route", "turnout_experiment_weight")) == set(ROUTES)
    variant_query = variables["variant"]["query"]["query"].replace("$route", "stale-bot")
    metric = variant_query.removeprefix("label_values(").removesuffix(", variant)")
    assert set(stack.prometheus.label_values("variant", metric)) == {"prod-v3", "cand-v4"}


def test_every_dashboard_query_runs_and_panels_show_data(stack: Stack) -> None:
    prom = stack.prometheus
    panels = [p for p in json.loads(DASHBOARD.read_text())["panels"] if p["type"] != "row"]
    assert MUST_HAVE_DATA <= {p["title"] for p in panels}
    present = {
        name
        for name in {n for p in panels for t in p["targets"] for n in metric_names(t["expr"])}
        if prom.query(f"count({name})")
    }
    problems = []
    for panel in panels:
        for target in panel["targets"]:
            expr = _substitute(target["expr"])
            try:
                result = prom.query(expr) if target.get("instant") else prom.query_range(expr, 60)
            except AssertionError as exc:  # Prometheus rejected the query
                problems.append(f"{panel['title']} [{target['refId']}]: {exc}")
                continue
            needs_data = panel["title"] in MUST_HAVE_DATA or metric_names(expr) <= present
            if needs_data and not _has_data(result):
                problems.append(f"{panel['title']} [{target['refId']}]: no data: {expr}")
    assert not problems, "\n".join(problems)


def _active(prom: PrometheusServer) -> set[tuple[str, str, str, str]]:
    return {
        (a["labels"]["alertname"], a["labels"].get("route", ""), a["labels"].get("variant", ""), a["state"])
        for a in prom.alerts()
    }


def test_alerts_fire_for_the_stale_route_and_stay_quiet_for_the_healthy_one(stack: Stack) -> None:
    prom = stack.prometheus
    expected = {
        ("TurnoutModelStale", "stale-bot", "prod-v3", "firing"),
        ("TurnoutFeedbackDegraded", "stale-bot", "prod-v3", "firing"),
        ("TurnoutHighErrorRate", "broken", "", "firing"),
    }
    _wait_for(lambda: expected <= _active(prom), f"{expected} to fire", timeout=30)
    assert all(health == "ok" for health in prom.rule_health().values()), prom.rule_health()
    assert _active(prom) == expected


def test_route_and_variant_selection_filters_the_panels(stack: Stack) -> None:
    routes, variants = {"stale-bot", "healthy-bot"}, {"prod-v3", "fresh"}
    shadow_variants = {"Shadow vs primary latency p95"}  # shows the route's shadows, which are not variants
    panels = [p for p in json.loads(DASHBOARD.read_text())["panels"] if p["title"] in MUST_HAVE_DATA]
    problems = []
    for panel in panels:
        for target in panel["targets"]:
            expr = _substitute(target["expr"], "(stale-bot|healthy-bot)", "(prod-v3|fresh)")
            result = stack.prometheus.query(expr)
            if not _has_data(result):
                problems.append(f"{panel['title']} [{target['refId']}]: no data")
            for series in result:
                labels = series["metric"]
                variant_ok = labels.get("variant", "fresh") in variants or panel["title"] in shadow_variants
                if labels.get("route", "stale-bot") not in routes or not variant_ok:
                    problems.append(f"{panel['title']} [{target['refId']}]: unfiltered {labels}")
    assert not problems, "\n".join(problems)
