"""Load shedding at the door: beyond ``server.max_in_flight`` proxied requests, a fast 503 with ``Retry-After``.

Pure ASGI (it wraps streaming responses, so never ``BaseHTTPMiddleware``). Only the proxied endpoints
(``POST /v1/...``) count and are shed: health, readiness, metrics and admin answer whatever the load. The
count it keeps (``Resilience.in_flight``) is also what the retry budget is a share of. A shed request is
answered before its body is read; the connection is closed after the answer so no unread body lingers.

``BoundedBodies`` reads the body of every request that is not proxied under its path's limit
(``server.body_limits_kb``, ``body_limits.BodyLimitsKb``) and ``server.body_timeout_s`` (else 408), then hands the
app the bytes already read: past the limit, declared or counted, a 413 and nothing more is read.

Usage: ``Admission(app, gateway=gw)`` (``gateway.app.TurnoutApp`` puts it in front of everything);
``BoundedBodies(starlette_app, gateway=gw)`` (behind ``HotRoutes``, which takes the proxied endpoints).
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from gateway.body_limits import ClientGone, read_body
from gateway.errors import GatewayError, Overloaded, RequestTimeout, send_error

if TYPE_CHECKING:
    from gateway.runtime import Gateway

log = logging.getLogger(__name__)
CLOSE = [(b"connection", b"close")]  # an unread body must not be taken for the next request


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
            await send_error(send, shed, CLOSE)
            return
        guard.in_flight += 1
        try:
            await self.app(scope, receive, send)
        finally:
            guard.in_flight -= 1


def _has_body(headers: list[tuple[bytes, bytes]]) -> bool:
    for name, value in headers:
        if (name == b"content-length" and value != b"0") or name == b"transfer-encoding":
            return True
    return False


class BoundedBodies:
    """Reads each request body under its path's ``server.body_limits_kb`` limit before the app runs."""

    def __init__(self, app: Any, *, gateway: Gateway) -> None:
        self.app = app
        self.gateway = gateway

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http" or not _has_body(scope["headers"]):
            await self.app(scope, receive, send)
            return
        gw = self.gateway
        server = gw.generation.config.server
        limit, key = server.body_limits_kb.for_path(scope["path"])
        declared = dict(scope["headers"]).get(b"content-length")
        try:
            with gw.large_bodies.slot(server.max_large_bodies) as slot:
                with gw.body_deadlines.watch(server.body_timeout_s):
                    body = await read_body(receive, limit, declared, slot, key)
        except GatewayError as exc:
            await send_error(send, exc, CLOSE)
            return
        except ClientGone:
            return
        except TimeoutError:
            slow = RequestTimeout(f"the request body did not arrive within {server.body_timeout_s:g}s")
            await send_error(send, slow, CLOSE)
            return
        await self.app(scope, _replay(body, receive), send)


def _replay(body: bytes, receive: Any) -> Any:
    """A ``receive`` that hands the app the body already read, then the connection's own messages (disconnect)."""
    pending = [{"type": "http.request", "body": body, "more_body": False}]

    async def replayed() -> dict[str, Any]:
        return pending.pop() if pending else await receive()

    return replayed
