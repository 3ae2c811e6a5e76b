"""Metrics read back from the store (eval scores, job runs, review backlog, rollout steps, drift scores, ...),
so every replica and worker exports the same figures whichever process computed them.

The serving process's reader (``gateway/stored_state.py``) fills a ``Snapshot`` every few seconds and
publishes it whole; a scrape sees either the previous snapshot or the new one, never a mix, and a series that
is gone from the store is gone from ``/metrics`` at the next publish.

Usage::

    stored = StoredMetrics(); registry.register(stored)
    snap = Snapshot()
    snap.gauge("eval_score", "Latest eval pass rate", {"route": "r", "variant": "v", "suite": "s"}, 0.92)
    stored.publish(snap)
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping

from prometheus_client.metrics_core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

PREFIX = "turnout_"


class Snapshot:
    """One reading of the stored figures: metric families by name (names without the ``turnout_`` prefix)."""

    def __init__(self) -> None:
        self._families: dict[str, tuple[Metric, tuple[str, ...]]] = {}

    def gauge(self, name: str, documentation: str, labels: Mapping[str, str], value: float) -> None:
        self._add(GaugeMetricFamily, name, documentation, labels, value)

    def counter(self, name: str, documentation: str, labels: Mapping[str, str], value: float) -> None:
        """A counter kept in the store (a count of stored rows): monotonic as long as rows are not deleted."""
        self._add(CounterMetricFamily, name.removesuffix("_total"), documentation, labels, value)

    def _add(
        self,
        kind: type[GaugeMetricFamily] | type[CounterMetricFamily],
        name: str,
        documentation: str,
        labels: Mapping[str, str],
        value: float,
    ) -> None:
        found = self._families.get(name)
        if found is None:
            found = self._families[name] = (kind(PREFIX + name, documentation, labels=list(labels)), tuple(labels))
        family, names = found
        if tuple(labels) != names:
            raise ValueError(f"{name}: labels {tuple(labels)} differ from {names}")
        family.add_metric([str(labels[k]) for k in names], float(value))  # type: ignore[attr-defined]

    def families(self) -> list[Metric]:
        return [family for family, _ in self._families.values()]


class StoredMetrics(Collector):
    def __init__(self) -> None:
        self._families: list[Metric] = []

    def publish(self, snapshot: Snapshot) -> None:
        self._families = snapshot.families()

    def collect(self) -> Iterator[Metric]:
        return iter(self._families)
