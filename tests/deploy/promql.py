"""The metric names Turnout exports, and the metric names a PromQL expression reads.

Usage: ``metric_names('sum by (route) (rate(turnout_requests_total{code="5xx"}[5m]))')`` is
``{"turnout_requests_total"}``.
"""

from __future__ import annotations

import re

COUNTERS = {
    "turnout_requests_total",
    "turnout_cost_usd_total",
    "turnout_client_requests_total",
    "turnout_client_tokens_total",
    "turnout_tokens_total",
    "turnout_upstream_errors_total",
    "turnout_upstream_attempts_total",
    "turnout_shadow_requests_total",
    "turnout_feedback_total",
    "turnout_interactions_captured_total",
    "turnout_capture_dropped_total",
    "turnout_config_reloads_total",
    "turnout_rollout_transitions_total",
    "turnout_upstream_model_changes_total",
    "turnout_job_runs_total",
    "turnout_review_decided_total",
}
HISTOGRAMS = {
    "turnout_request_duration_seconds",
    "turnout_time_to_first_token_seconds",
    "turnout_shadow_agreement",
    "turnout_feedback_score",
}
GAUGES = {
    "turnout_upstream_ejected",
    "turnout_capture_queue_depth",
    "turnout_model_trained_timestamp_seconds",
    "turnout_eval_score",
    "turnout_retraining_threshold",
    "turnout_config_last_reload_success_timestamp_seconds",
    "turnout_config_info",
    "turnout_experiment_weight",
    "turnout_rollout_step",
    "turnout_rollout_active",
    "turnout_rollout_rolled_back",
    "turnout_rollout_awaiting_approval",
    "turnout_rollout_last_transition_timestamp_seconds",
    "turnout_rollout_interval_seconds",
    "turnout_drift_score",
    "turnout_drift_last_check_timestamp_seconds",
    "turnout_upstream_model_info",
    "turnout_upstream_deprecated_timestamp_seconds",
    "turnout_job_last_success_timestamp_seconds",
    "turnout_eval_last_run_timestamp_seconds",
    "turnout_eval_interval_seconds",
    "turnout_review_backlog",
    "turnout_dataset_examples",
    "turnout_dataset_version_timestamp_seconds",
    "turnout_dataset_pending",
    "turnout_dataset_build_interval_seconds",
}
# The series names a scrape of /metrics shows (histograms as their _bucket/_sum/_count series).
EXPORTED = COUNTERS | GAUGES | {f"{name}{suffix}" for name in HISTOGRAMS for suffix in ("_bucket", "_sum", "_count")}

_KEYWORDS = {
    "by",
    "without",
    "on",
    "ignoring",
    "group_left",
    "group_right",
    "bool",
    "and",
    "or",
    "unless",
    "offset",
    "atan2",
    "inf",
    "nan",
}
_STRING = re.compile(r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'|`[^`]*`')
_RANGE = re.compile(r"\[[^\]]*\]")
_MATCHERS = re.compile(r"\{[^}]*\}")
_LABEL_LIST = re.compile(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)")
_IDENTIFIER = re.compile(r"(?<![\w:.$])([A-Za-z_:][\w:]*)(\s*\()?")


def metric_names(expr: str) -> set[str]:
    """Every metric name `expr` selects (label names, functions, keywords and strings left out)."""
    text = _STRING.sub('""', expr)
    text = _RANGE.sub("", text)
    text = _MATCHERS.sub("", text)
    text = _LABEL_LIST.sub(" ", text)
    names = set()
    for match in _IDENTIFIER.finditer(text):
        name, call = match.groups()
        if call is None and name.lower() not in _KEYWORDS:
            names.add(name)
    return names
