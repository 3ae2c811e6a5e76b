"""The one error builder: every error class answers with the OpenAI body, 503s say Retry-After, SSE framing."""

from __future__ import annotations

import orjson
import pytest

from gateway import errors
from gateway.errors import GatewayError, error_event, error_response

KINDS: list[GatewayError] = [
    errors.BadRequest("bad", param="messages"),
    errors.NotFound("no route", param="model"),
    errors.Unauthorized("who"),
    errors.RequestTimeout("slow"),
    errors.PayloadTooLarge("big"),
    errors.HeadersTooLarge("head"),
    errors.Overloaded("full"),
    errors.Overloaded("stopping", code="shutting_down"),
    errors.RouteError(405, "method not allowed"),
    errors.RateLimited("slow down", wait_s=2.2),
    errors.RateLimited("at once", wait_s=0.01),
    errors.UpstreamFailure("down"),
    errors.UpstreamUnreachable("refused"),
    errors.StreamBroken("cut"),
    errors.UpstreamTimeout("late"),
]


@pytest.mark.parametrize("exc", KINDS, ids=lambda e: f"{type(e).__name__}-{e.code}")
def test_error_response_is_the_openai_shape_and_503_says_retry_after(exc: GatewayError) -> None:
    response = error_response(exc, [(b"connection", b"close")])
    assert response.status_code == exc.status
    body = orjson.loads(response.body)
    assert body == {"error": {"message": exc.message, "type": exc.type, "code": exc.code, "param": exc.param}}
    headers = dict(response.raw_headers)
    assert headers[b"content-type"] == b"application/json"
    assert headers[b"content-length"] == str(len(response.body)).encode()
    assert headers[b"connection"] == b"close"
    if isinstance(exc, errors.RateLimited):  # its own wait, in whole seconds, at least 1
        assert headers[b"retry-after"] == (b"3" if exc.wait_s > 2 else b"1")
    else:
        assert (headers.get(b"retry-after") == b"1") == (exc.status == 503)


@pytest.mark.parametrize("exc", KINDS, ids=lambda e: f"{type(e).__name__}-{e.code}")
def test_error_event_is_one_sse_event_with_the_same_body(exc: GatewayError) -> None:
    event = error_event(exc)
    assert event.startswith(b"data: ") and event.endswith(b"\n\n") and event.count(b"\n\n") == 1
    assert orjson.loads(event[6:]) == orjson.loads(error_response(exc).body)
