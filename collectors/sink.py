"""Where finished interactions go: metrics now; the capture journal and store writer hang off the same call.

Usage: ``sink = Sink(metrics)``; ``sink.finish(interaction)`` once per finished call, before the client's
last bytes are sent. It never raises into the request path.
"""

from __future__ import annotations

import logging

from collectors.metrics import Metrics
from collectors.record import Interaction

log = logging.getLogger(__name__)


class Sink:
    def __init__(self, metrics: Metrics) -> None:
        self.metrics = metrics

    def finish(self, it: Interaction) -> None:
        try:
            self.metrics.observe(it)
        except Exception:
            log.exception("metrics failed for interaction %s", it.request_id)
