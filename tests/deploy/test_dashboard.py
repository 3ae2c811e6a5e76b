"""grafana/turnout.json: valid, a stable uid, every panel on the ${datasource} variable, route and variant
variables that filter the queries, units and thresholds set, and every query reading only (and all) the
metrics Turnout exports."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest

from tests.deploy.promql import COUNTERS, EXPORTED, GAUGES, HISTOGRAMS, metric_names

DASHBOARD = Path(__file__).resolve().parents[2] / "grafana" / "turnout.json"
DATASOURCE = {"type": "prometheus", "uid": "${datasource}"}
# metrics with a `route` label: every panel selecting one filters it by the $route variable
ROUTE_LABELLED = {
    "turnout_requests_total",
    "turnout_cost_usd_total",
    "turnout_client_requests_total",
    "turnout_client_tokens_total",
    "turnout_tokens_total",
    "turnout_shadow_requests_total",
    "turnout_feedback_total",
    "turnout_interactions_captured_total",
    "turnout_eval_score",
    "turnout_retraining_threshold",
    "turnout_experiment_weight",
    "turnout_drift_score",
    "turnout_drift_last_check_timestamp_seconds",
} | {f"{h}{s}" for h in HISTOGRAMS for s in ("_bucket", "_sum", "_count")}


def _dashboard() -> dict[str, Any]:
    return json.loads(DASHBOARD.read_text())


def _panels() -> list[dict[str, Any]]:
    return [p for p in _dashboard()["panels"] if p["type"] != "row"]


def _exprs() -> list[tuple[str, str]]:
    return [(p["title"], t["expr"]) for p in _panels() for t in p["targets"]]


def _variables() -> dict[str, dict[str, Any]]:
    return {v["name"]: v for v in _dashboard()["templating"]["list"]}


def test_stable_uid_and_title() -> None:
    dashboard = _dashboard()
    assert dashboard["uid"] == "turnout"
    assert dashboard["title"] == "Turnout"
    assert "id" not in dashboard or dashboard["id"] is None


def test_datasource_route_and_variant_variables() -> None:
    variables = _variables()
    assert variables["datasource"]["type"] == "datasource"
    assert variables["datasource"]["query"] == "prometheus"
    assert variables["route"]["query"]["query"] == "label_values(turnout_experiment_weight, route)"
    assert variables["variant"]["query"]["query"] == 'label_values(turnout_experiment_weight{route=~"$route"}, variant)'
    for name in ("route", "variant"):
        assert variables[name]["type"] == "query"
        assert variables[name]["datasource"] == DATASOURCE
        assert variables[name]["multi"] and variables[name]["includeAll"]
        assert variables[name]["allValue"] == ".*"


def test_every_panel_and_query_uses_the_datasource_variable() -> None:
    panels = _panels()
    assert len(panels) >= 20
    for panel in panels:
        assert panel["datasource"] == DATASOURCE, panel["title"]
        assert panel["targets"], panel["title"]
        for target in panel["targets"]:
            assert target["datasource"] == DATASOURCE, panel["title"]


def test_panel_ids_unique_and_layout_fits_the_grid() -> None:
    panels = _dashboard()["panels"]
    assert len({p["id"] for p in panels}) == len(panels)
    cells: set[tuple[int, int]] = set()
    for panel in panels:
        pos = panel["gridPos"]
        assert pos["x"] + pos["w"] <= 24, panel["title"]
        area = {(x, y) for x in range(pos["x"], pos["x"] + pos["w"]) for y in range(pos["y"], pos["y"] + pos["h"])}
        assert not area & cells, f"{panel['title']} overlaps another panel"
        cells |= area


def test_rows_cover_the_issue() -> None:
    rows = " | ".join(p["title"] for p in _dashboard()["panels"] if p["type"] == "row").lower()
    for topic in ("traffic", "errors", "latency", "tokens", "shadows", "feedback", "model age", "capture", "config"):
        assert topic in rows
    for topic in ("drift", "review", "datasets", "cost", "clients"):
        assert topic in rows


def test_units_and_thresholds_set() -> None:
    for panel in _panels():
        defaults = panel["fieldConfig"]["defaults"]
        assert defaults.get("unit"), panel["title"]
        assert defaults["thresholds"]["steps"], panel["title"]
        assert panel.get("description"), panel["title"]


def test_queries_read_only_exported_metrics() -> None:
    queries = _exprs() + [(f"${name}", v["query"]["query"]) for name, v in _variables().items() if name != "datasource"]
    for title, expr in queries:
        names = metric_names(re.sub(r"^label_values\((.*),\s*\w+\)$", r"\1", expr))
        assert names, f"{title}: no metric in {expr!r}"
        assert names <= EXPORTED, f"{title}: not exported: {names - EXPORTED}"


def test_every_exported_metric_is_on_the_dashboard() -> None:
    shown = {re.sub(r"_(bucket|sum|count)$", "", n) for _, expr in _exprs() for n in metric_names(expr)}
    assert COUNTERS | GAUGES | HISTOGRAMS <= shown, (COUNTERS | GAUGES | HISTOGRAMS) - shown


@pytest.mark.parametrize("metric", sorted(ROUTE_LABELLED))
def test_route_labelled_metrics_are_filtered_by_route(metric: str) -> None:
    for title, expr in _exprs():
        for match in re.finditer(rf"\b{metric}\b(\{{[^}}]*\}})?", expr):
            assert match.group(1) and 'route=~"$route"' in match.group(1), f"{title}: {match.group(0)}"
