"""The error tree; every error knows its HTTP status and OpenAI error ``type``.

    GatewayError
    ├── BadRequest          400 invalid_request_error
    │   └── NotFound        404 invalid_request_error (model_not_found)
    ├── Unauthorized        401 authentication_error
    ├── RequestTimeout      408 invalid_request_error (the body came too slowly)
    ├── PayloadTooLarge     413 invalid_request_error
    ├── HeadersTooLarge     431 invalid_request_error
    ├── Overloaded          503 server_error (with Retry-After)
    └── UpstreamFailure     502 upstream_error
        ├── UpstreamUnreachable 502 upstream_error (no connection: always safe to retry)
        └── UpstreamTimeout 504 upstream_error

Usage: ``raise BadRequest("messages must be a list", param="messages")``; ``error_body(exc)`` renders the
OpenAI body ``{"error": {"message", "type", "code", "param"}}``.
"""

from __future__ import annotations

import orjson


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


class UpstreamFailure(GatewayError):
    status = 502
    type = "upstream_error"
    code = "upstream_failed"


class UpstreamUnreachable(UpstreamFailure):
    code = "upstream_unreachable"


class UpstreamTimeout(UpstreamFailure):
    status = 504
    code = "upstream_timeout"


def error_payload(message: str, type_: str, code: str | None, param: str | None = None) -> dict[str, object]:
    return {"error": {"message": message, "type": type_, "code": code, "param": param}}


def error_body(exc: GatewayError) -> bytes:
    return orjson.dumps(error_payload(exc.message, exc.type, exc.code, exc.param))
