"""The alert rules pass `promtool check rules`, their promtool unit tests pass, and every alert is tested both
firing and quiet, labelled and annotated for a person to act on, and reads only metrics Turnout exports."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.deploy.promql import EXPORTED, metric_names

ROOT = Path(__file__).resolve().parents[2]
RULES = ROOT / "helm" / "turnout" / "files" / "alerts.yaml"
UNIT_TESTS = sorted(Path(__file__).parent.glob("alerts*_test.yaml"))

RETRAINING = {
    "TurnoutModelStale",
    "TurnoutFeedbackDegraded",
    "TurnoutShadowDisagreement",
    "TurnoutEvalScoreLow",
    "TurnoutInputDrift",
    "TurnoutOutputDrift",
    "TurnoutUpstreamModelChanged",
    "TurnoutModelDeprecated",
}
UPSTREAM_ALERTS = {"TurnoutUpstreamModelChanged", "TurnoutModelDeprecated"}  # about an upstream, not a route
OPERATIONS = {
    "TurnoutHighErrorRate",
    "TurnoutCaptureDropping",
    "TurnoutConfigReloadFailing",
    "TurnoutRolloutRolledBack",
    "TurnoutRolloutStalled",
}
OPERATIONS |= {"TurnoutEvalStale", "TurnoutJobFailing"}
OPERATIONS |= {"TurnoutReviewBacklog", "TurnoutDatasetStale"}


def _promtool() -> str:
    path = shutil.which("promtool")
    if path is None:
        pytest.fail("promtool not found: install Debian's `prometheus` package (.ci/run does)")
    return path


def _alerts() -> dict[str, dict[str, Any]]:
    groups = yaml.safe_load(RULES.read_text())["groups"]
    return {rule["alert"]: rule for group in groups for rule in group["rules"] if "alert" in rule}


def test_promtool_check_rules() -> None:
    result = subprocess.run([_promtool(), "check", "rules", str(RULES)], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr


def test_promtool_unit_tests_pass() -> None:
    result = subprocess.run(
        [_promtool(), "test", "rules", *map(str, UNIT_TESTS)], capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_the_spec_alerts_and_only_those() -> None:
    assert set(_alerts()) == RETRAINING | OPERATIONS


def _cases() -> list[dict[str, Any]]:
    cases = []
    for path in UNIT_TESTS:
        suite = yaml.safe_load(path.read_text())
        assert [(path.parent / f).resolve() for f in suite["rule_files"]] == [RULES], path
        cases += [case for test in suite["tests"] for case in test.get("alert_rule_test", [])]
    return cases


def test_every_alert_is_tested_firing_and_quiet() -> None:
    cases = _cases()
    fires = {case["alertname"] for case in cases if case.get("exp_alerts")}
    quiet = {case["alertname"] for case in cases if not case.get("exp_alerts")}
    assert fires == set(_alerts())
    assert quiet == set(_alerts())


@pytest.mark.parametrize("name", sorted(RETRAINING | OPERATIONS))
def test_alert_is_labelled_and_annotated(name: str) -> None:
    rule = _alerts()[name]
    assert rule["labels"]["severity"] in {"critical", "warning", "info"}
    assert rule["labels"].get("action") == ("retrain" if name in RETRAINING else None)
    for annotation in ("summary", "description"):
        assert "$labels." in rule["annotations"][annotation], f"{name} {annotation} names nothing"
    assert rule.get("for"), f"{name} fires on a single evaluation"


def test_route_alerts_report_the_route() -> None:
    for case in _cases():
        if case["alertname"] in (RETRAINING - UPSTREAM_ALERTS) | {"TurnoutHighErrorRate", "TurnoutReviewBacklog"}:
            for alert in case.get("exp_alerts") or []:
                assert "route" in alert["exp_labels"], case["alertname"]
        if case["alertname"] in UPSTREAM_ALERTS:
            for alert in case.get("exp_alerts") or []:
                assert "upstream" in alert["exp_labels"], case["alertname"]


def test_rules_read_only_exported_metrics() -> None:
    for name, rule in _alerts().items():
        unknown = metric_names(rule["expr"]) - EXPORTED
        assert not unknown, f"{name} reads metrics Turnout does not export: {unknown}"
