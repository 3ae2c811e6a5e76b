"""Every Prometheus metric Turnout exports, in one registry passed in by the caller.

Labels come only from config names (route, variant, upstream, shadow, experiment) and small fixed sets,
so the number of series is bounded whatever clients send.

With ``--workers N`` (prometheus-client multiprocess mode) every gauge is a ``live*`` one: it shows the
processes alive now, and ``prune_dead_gauges`` (run before each scrape) drops the files of a worker that died
(uvicorn starts a new one), so an upstream it had ejected or a queue it held is not reported forever. Counters
and histograms of dead workers are kept: their totals still count.

Usage: ``metrics = Metrics(CollectorRegistry())``; ``metrics.observe(interaction)`` per finished call,
``metrics.config_applied(...)`` on every config generation.
"""

from __future__ import annotations

import os
import re
import time
from collections.abc import Mapping
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, disable_created_metrics
from prometheus_client.multiprocess import mark_process_dead

from collectors.record import Interaction

LATENCY_BUCKETS = (0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 20.0, 30.0, 60.0, 120.0, 300.0)
TTFT_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 5.0, 10.0, 30.0)
SCORE_BUCKETS = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 0.95, 1.0)
CODES = ("2xx", "4xx", "5xx")
FEEDBACK_LABELS = ("good", "bad", "none")
DROP_REASONS = ("spool_full", "journal_error", "store_rejected")
SHADOW_OUTCOMES = ("ok", "error", "timeout", "dropped", "skipped")

LIVE_GAUGE_FILE = re.compile(r"gauge_live[a-z]+_(\d+)\.db")


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process now holds that pid
        return True
    return True


def prune_dead_gauges(directory: str) -> list[int]:
    """Drop the gauge files of processes that are gone (the multiprocess directory); their pids."""
    pids = {int(m.group(1)) for name in os.listdir(directory) if (m := LIVE_GAUGE_FILE.fullmatch(name))}
    dead = sorted(pid for pid in pids if not _alive(pid))
    for pid in dead:
        mark_process_dead(pid, directory)  # the collector skips a live gauge file removed mid-scrape
    return dead


def code_class(status: int) -> str:
    return "2xx" if status < 400 else "4xx" if status < 500 else "5xx"


class Metrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        disable_created_metrics()  # a `_created` line beside every series doubles /metrics for nothing we query
        p = "turnout_"
        self._children: dict[tuple[Counter | Histogram, tuple[str, ...]], Any] = {}
        rvr = ["route", "variant", "role"]
        self.requests = Counter(p + "requests", "Answered requests", [*rvr, "code"], registry=registry)
        self.duration = Histogram(
            p + "request_duration_seconds", "Whole request time", rvr, buckets=LATENCY_BUCKETS, registry=registry
        )
        self.ttft = Histogram(
            p + "time_to_first_token_seconds",
            "Time to the first streamed token",
            rvr,
            buckets=TTFT_BUCKETS,
            registry=registry,
        )
        self.tokens = Counter(p + "tokens", "Tokens from upstream usage", [*rvr, "kind"], registry=registry)
        self.upstream_errors = Counter(
            p + "upstream_errors", "Upstream failures by kind", ["upstream", "kind"], registry=registry
        )
        self.upstream_attempts = Counter(
            p + "upstream_attempts", "Calls made to upstreams", ["upstream", "outcome"], registry=registry
        )
        self.upstream_ejected = Gauge(
            p + "upstream_ejected",
            "1 while an upstream is cooled down",
            ["upstream"],
            registry=registry,
            multiprocess_mode="livemax",
        )
        self.shed = Counter(
            p + "requests_shed", "Requests refused with 503 because server.max_in_flight was reached", registry=registry
        )
        self.shadow_requests = Counter(
            p + "shadow_requests", "Shadow calls by outcome", ["route", "shadow", "outcome"], registry=registry
        )
        self.shadow_agreement = Histogram(
            p + "shadow_agreement",
            "Similarity of shadow and primary answers (0..1)",
            ["route", "shadow"],
            buckets=SCORE_BUCKETS,
            registry=registry,
        )
        self.feedback = Counter(p + "feedback", "Feedback received", ["route", "variant", "label"], registry=registry)
        self.feedback_score = Histogram(
            p + "feedback_score",
            "Feedback scores (0..1)",
            ["route", "variant"],
            buckets=SCORE_BUCKETS,
            registry=registry,
        )
        self.captured = Counter(p + "interactions_captured", "Interactions stored", ["route"], registry=registry)
        self.capture_dropped = Counter(
            p + "capture_dropped", "Interactions or feedback that could not be kept", ["reason"], registry=registry
        )
        self.capture_queue_depth = Gauge(
            p + "capture_queue_depth",
            "Interactions waiting for the store",
            registry=registry,
            multiprocess_mode="livesum",
        )
        self.model_trained = Gauge(
            p + "model_trained_timestamp_seconds",
            "When the upstream's model was trained",
            ["upstream"],
            registry=registry,
            multiprocess_mode="livemostrecent",
        )
        self.model_deprecated = Gauge(
            p + "upstream_deprecated_timestamp_seconds",
            "When the upstream's model is retired by its provider (upstreams.X.deprecated_at)",
            ["upstream"],
            registry=registry,
            multiprocess_mode="livemostrecent",
        )
        self.threshold = Gauge(
            p + "retraining_threshold",
            "Retraining thresholds from the config file",
            ["route", "signal"],
            registry=registry,
            multiprocess_mode="livemostrecent",
        )
        self.cost = Counter(p + "cost_usd", "What answers cost (USD, from upstream prices)", rvr, registry=registry)
        self.client_requests = Counter(
            p + "client_requests",
            "Requests of named clients (auth.clients)",
            ["client", "route", "code"],
            registry=registry,
        )
        self.client_tokens = Counter(
            p + "client_tokens", "Tokens of named clients' answers", ["client", "route", "kind"], registry=registry
        )
        self.reloads = Counter(p + "config_reloads", "Config reload attempts", ["result"], registry=registry)
        self.last_reload = Gauge(
            p + "config_last_reload_success_timestamp_seconds",
            "Last successful config load",
            registry=registry,
            multiprocess_mode="livemax",
        )
        self.config_info = Gauge(
            p + "config_info",
            "1 for the config generation serving now",
            ["sha256"],
            registry=registry,
            multiprocess_mode="livemostrecent",
        )
        self.experiment_weight = Gauge(
            p + "experiment_weight",
            "Configured weight of each variant",
            ["route", "experiment", "variant"],
            registry=registry,
            multiprocess_mode="livemostrecent",
        )
        for result in ("success", "failure"):
            self.reloads.labels(result)
        for reason in DROP_REASONS:
            self.capture_dropped.labels(reason)

    def child(self, metric: Counter | Histogram, *labels: str) -> Any:
        """``metric.labels(*labels)``, resolved once: a dict lookup instead of ~2 µs of label checks per call.
        Only for counters and histograms (never cleared); the label values are config names and fixed sets."""
        key = (metric, labels)
        found = self._children.get(key)
        if found is None:
            found = self._children[key] = metric.labels(*labels)
        return found

    def observe(self, it: Interaction) -> None:
        """Count one finished call (primary or shadow)."""
        route, variant, role = it.route, it.variant, it.role
        self.child(self.requests, route, variant, role, code_class(it.status)).inc()
        self.child(self.duration, route, variant, role).observe(it.latency_ms / 1000.0)
        if it.ttft_ms is not None:
            self.child(self.ttft, route, variant, role).observe(it.ttft_ms / 1000.0)
        usage = it.usage or {}
        if it.cost_usd:
            self.child(self.cost, route, variant, role).inc(it.cost_usd)
        client = it.client if role == "primary" else None
        if client is not None:
            self.child(self.client_requests, client, route, code_class(it.status)).inc()
        for kind, key in (("prompt", "prompt_tokens"), ("completion", "completion_tokens")):
            count = usage.get(key)
            if isinstance(count, int) and count > 0:
                self.child(self.tokens, route, variant, role, kind).inc(count)
                if client is not None:
                    self.child(self.client_tokens, client, route, kind).inc(count)
        comparison = it.extra.get("comparison") if it.role == "shadow" else None
        if isinstance(comparison, dict) and isinstance(comparison.get("similarity"), float):
            self.child(self.shadow_agreement, it.route, it.variant).observe(comparison["similarity"])

    def client_refused(self, client: str, route: str, status: int) -> None:
        """A named client's request refused before any upstream call (outside its routes, over its rpm)."""
        self.child(self.client_requests, client, route, code_class(status)).inc()

    def shadows_configured(self, route: str, shadow: str) -> None:
        """Start a configured shadow's outcome counters at 0, so rates and alerts work before any traffic."""
        for outcome in SHADOW_OUTCOMES:
            self.shadow_requests.labels(route, shadow, outcome)
        self.shadow_agreement.labels(route, shadow)

    def config_applied(
        self,
        sha256: str,
        routes: Mapping[str, tuple[str, Mapping[str, float]]],
        trained_at: Mapping[str, float],
        thresholds: Mapping[str, Mapping[str, float]],
        deprecated_at: Mapping[str, float],
    ) -> None:
        """Export one config generation: ``routes`` maps route -> (experiment, {variant: weight})."""
        for gauge in (
            self.config_info,
            self.experiment_weight,
            self.model_trained,
            self.threshold,
            self.model_deprecated,
        ):
            gauge.clear()
        self.config_info.labels(sha256).set(1)
        for route, (experiment, weights) in routes.items():
            for variant, weight in weights.items():
                self.experiment_weight.labels(route, experiment, variant).set(weight)
                for code in CODES:
                    self.requests.labels(route, variant, "primary", code)
                for label in FEEDBACK_LABELS:
                    self.feedback.labels(route, variant, label)
                self.feedback_score.labels(route, variant)
        for upstream, ts in trained_at.items():
            self.model_trained.labels(upstream).set(ts)
        for upstream, ts in deprecated_at.items():
            self.model_deprecated.labels(upstream).set(ts)
        for route, signals in thresholds.items():
            for signal, value in signals.items():
                self.threshold.labels(route, signal).set(value)

    def reload_result(self, ok: bool) -> None:
        self.reloads.labels("success" if ok else "failure").inc()
        if ok:
            self.last_reload.set(time.time())
