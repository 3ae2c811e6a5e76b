"""The error tree; every error knows its HTTP status and OpenAI error ``type``.

    GatewayError
    ├── BadRequest          400 invalid_request_error
    │   └── NotFound        404 invalid_request_error (model_not_found)
    ├── Unauthorized        401 authentication_error
    ├── RequestTimeout      408 invalid_request_error (the body came too slowly)
    ├── PayloadTooLarge     413 invalid_request_error
    ├── HeadersTooLarge     431 invalid_request_error
    ├── RateLimited         429 requests (rate_limit_exceeded: a named client over its rpm; with Retry-After)
    ├── Overloaded          503 server_error (with Retry-After)
    ├── RouteError          404/405 invalid_request_error (no such path, method not allowed)
    └── UpstreamFailure     502 upstream_error
        ├── UpstreamUnreachable 502 upstream_error (no connection: always safe to retry)
        ├── StreamBroken    502 upstream_error (stream_broken: an upstream stream cut or invalid mid-way)
        └── UpstreamTimeout 504 upstream_error

Every error answer is built here, one way: ``error_response(exc)`` is the HTTP answer (the OpenAI body
``{"error": {"message", "type", "code", "param"}}`` as JSON, and ``Retry-After: 1`` on every 503);
``send_error(send, exc)`` sends it from a raw ASGI app; ``error_event(exc)`` is the same body as the terminal
SSE event of a stream whose headers already went out.

Usage: ``raise BadRequest("messages must be a list", param="messages")``; ``return error_response(exc)``;
``await send_error(send, exc, [(b"connection", b"close")])``; ``await send(... error_event(exc) ...)``.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Any

import orjson
from starlette.responses import Response

RETRY_AFTER_S = 1  # what every 503 (shed, shutting down, capture unavailable) asks a client to wait


class GatewayError(Exception):
    status = 500
    type = "server_error"
    code: str | None = None

    def __init__(self, message: str, *, code: str | None = None, param: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.param = param
        if code is not None:
            self.code = code


class BadRequest(GatewayError):
    status = 400
    type = "invalid_request_error"
    code = "invalid_request"


class NotFound(BadRequest):
    status = 404
    code = "model_not_found"


class Unauthorized(GatewayError):
    status = 401
    type = "authentication_error"
    code = "invalid_api_key"


class RequestTimeout(GatewayError):
    status = 408
    type = "invalid_request_error"
    code = "request_timeout"


class HeadersTooLarge(GatewayError):
    status = 431
    type = "invalid_request_error"
    code = "headers_too_large"


class PayloadTooLarge(GatewayError):
    status = 413
    type = "invalid_request_error"
    code = "request_too_large"


class Overloaded(GatewayError):
    status = 503
    type = "server_error"
    code = "overloaded"


class RouteError(GatewayError):
    """Starlette's own answers: no such path (404), method not allowed (405)."""

    type = "invalid_request_error"

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


class RateLimited(GatewayError):
    status = 429
    type = "requests"
    code = "rate_limit_exceeded"

    def __init__(self, message: str, *, wait_s: float) -> None:
        super().__init__(message)
        self.wait_s = wait_s  # sent as Retry-After (whole seconds, at least 1)


class UpstreamFailure(GatewayError):
    status = 502
    type = "upstream_error"
    code = "upstream_failed"


class UpstreamUnreachable(UpstreamFailure):
    code = "upstream_unreachable"


class StreamBroken(UpstreamFailure):
    code = "stream_broken"


class UpstreamTimeout(UpstreamFailure):
    status = 504
    code = "upstream_timeout"


def error_payload(message: str, type_: str, code: str | None, param: str | None = None) -> dict[str, object]:
    return {"error": {"message": message, "type": type_, "code": code, "param": param}}


def error_body(exc: GatewayError) -> bytes:
    return orjson.dumps(error_payload(exc.message, exc.type, exc.code, exc.param))


def error_response(exc: GatewayError, headers: Iterable[tuple[bytes, bytes]] = ()) -> Response:
    """The HTTP answer to ``exc`` (with ``headers`` added). ``Retry-After``: a 503 always says 1 second, a
    ``RateLimited`` its own wait (whole seconds, at least 1)."""
    response = Response(error_body(exc), exc.status, media_type="application/json")
    if exc.status == 503:
        response.raw_headers.append((b"retry-after", str(RETRY_AFTER_S).encode()))
    elif isinstance(exc, RateLimited):
        response.raw_headers.append((b"retry-after", str(max(1, math.ceil(exc.wait_s))).encode()))
    response.raw_headers.extend(headers)
    return response


async def send_error(send: Any, exc: GatewayError, headers: Iterable[tuple[bytes, bytes]] = ()) -> None:
    """Send ``error_response(exc, headers)`` through a raw ASGI ``send``."""
    response = error_response(exc, headers)
    await send({"type": "http.response.start", "status": response.status_code, "headers": response.raw_headers})
    await send({"type": "http.response.body", "body": response.body})


def error_event(exc: GatewayError) -> bytes:
    """``exc`` as the last SSE event of a stream that is already committed (status 200 went out)."""
    return b"data: " + error_body(exc) + b"\n\n"
