"""Where finished interactions go: metrics, and (when captured) the journal, from which the loader process stores
them.

Usage: ``sink = Sink(metrics, capture=Capture(...))``; ``sink.finish(interaction)`` once per finished call,
before the client's last bytes are sent (awaiting what it returns). It never raises into the request path.
An interaction with ``capture`` false (sampled out, or ``x-turnout-no-capture``) is counted in the metrics and
not journaled.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Mapping
from typing import Any

from collectors.capture import Capture, CapturePolicy
from collectors.metrics import Metrics
from collectors.record import Interaction

log = logging.getLogger(__name__)


class Sink:
    def __init__(self, metrics: Metrics, capture: Capture | None = None) -> None:
        self.metrics = metrics
        self.capture = capture

    def finish(self, it: Interaction) -> Awaitable[None] | None:
        """Count ``it`` and journal it; a large record is journaled from a worker thread, and the returned
        awaitable is done once it is durable (``asyncio.shield`` it before the client's last bytes)."""
        try:
            self.metrics.observe(it)
        except Exception:
            log.exception("metrics failed for interaction %s", it.request_id)
        if it.capture and self.capture is not None:
            return self.capture.record(it)
        return None

    def feedback(self, fields: Mapping[str, Any]) -> str:
        """Journal validated feedback; returns its id once durable (raises ``CaptureUnavailable``)."""
        if self.capture is None:
            raise RuntimeError("this gateway has no capture store")
        return self.capture.feedback(fields)

    def configure(self, policy: CapturePolicy) -> None:
        if self.capture is not None:
            self.capture.configure(policy)

    @property
    def degraded(self) -> bool:
        """True while the store is unavailable (interactions spool in the journal)."""
        return self.capture is not None and self.capture.degraded

    async def start(self) -> None:
        if self.capture is not None:
            await self.capture.start()

    async def close(self, drain_s: float = 10.0) -> None:
        if self.capture is not None:
            await self.capture.close(drain_s)
