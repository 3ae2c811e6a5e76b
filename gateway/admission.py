"""Load shedding at the door: beyond ``server.max_in_flight`` proxied requests, a fast 503 with ``Retry-After``.

Pure ASGI (it wraps streaming responses, so never ``BaseHTTPMiddleware``). Only the proxied endpoints
(``POST /v1/...``) count and are shed: health, readiness, metrics and admin answer whatever the load. The
count it keeps (``Resilience.in_flight``) is also what the retry budget is a share of. A shed request is
answered before its body is read; the connection is closed after the answer so no unread body lingers.

Usage: ``Admission(app, gateway=gw)`` (``gateway.app.TurnoutApp`` puts it in front of everything).
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from gateway.errors import Overloaded, send_error

if TYPE_CHECKING:
    from gateway.runtime import Gateway

log = logging.getLogger(__name__)


class Admission:
    def __init__(self, app: Any, *, gateway: Gateway) -> None:
        self.app = app
        self.gateway = gateway

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http" or scope["method"] != "POST" or not scope["path"].startswith("/v1/"):
            await self.app(scope, receive, send)
            return
        gw = self.gateway
        guard = gw.resilience
        limit = gw.generation.config.server.max_in_flight
        if guard.in_flight >= limit:
            guard.metrics.shed.inc()
            shed = Overloaded(f"the gateway is at its limit of {limit} requests in flight; retry shortly")
            await send_error(send, shed, [(b"connection", b"close")])
            return
        guard.in_flight += 1
        try:
            await self.app(scope, receive, send)
        finally:
            guard.in_flight -= 1
