from __future__ import annotations

from tests.deploy.promql import EXPORTED, metric_names


def test_metric_names_skips_labels_functions_strings_and_durations() -> None:
    expr = """
        histogram_quantile(0.95, sum by (route, le) (
          rate(turnout_request_duration_seconds_bucket{route=~"$route", role="primary"}[$__rate_interval])))
        / on (route) group_left ()
          max by (route) (label_replace(other_metric, "variant", "$1", "upstream", "(.+)"))
        > bool 0.5 and time() - turnout_config_info offset 1m unless absent(x:recorded:rate5m)
    """
    assert metric_names(expr) == {
        "turnout_request_duration_seconds_bucket",
        "other_metric",
        "turnout_config_info",
        "x:recorded:rate5m",
    }


def test_exported_names_include_histogram_series_not_bare_histograms() -> None:
    assert "turnout_feedback_score_count" in EXPORTED
    assert "turnout_feedback_score" not in EXPORTED
    assert "turnout_requests_total" in EXPORTED
