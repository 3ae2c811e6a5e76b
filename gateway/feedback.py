"""``POST /v1/feedback``: validate a feedback object and make it durable (the capture journal) before ``202``.

The key is ``request_id`` (Turnout's, from ``x-turnout-request-id``) or ``response_id`` (the ``id`` of the
answer body); an id not (yet) stored is accepted too: feedback is joined to its interaction when read, and
only when it comes from the caller that made the request or from the admin key (``Keys.caller_hash`` is
stored with it). Feedback from anyone else is answered the same 202 and never joined. Wrong types are a 400
naming the field; unknown fields are ignored. The body is at most ``server.body_limits_kb.feedback`` (64 KB).

Usage: ``Route("/v1/feedback", feedback_endpoint, methods=["POST"])``.
"""

from __future__ import annotations

import time
from typing import Any

import orjson
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from collectors.capture import CaptureUnavailable
from gateway.auth import ADMIN_CALLER
from gateway.errors import BadRequest, GatewayError, Overloaded, RateLimited, error_response
from gateway.runtime import Gateway

MAX_ID = 256
LABELS = ("good", "bad")


def _id(body: dict[str, Any], key: str) -> str | None:
    value = body.get(key)
    if value is None:
        return None
    if not isinstance(value, str) or not value or len(value) > MAX_ID:
        raise BadRequest(f"'{key}' must be a non-empty string of at most {MAX_ID} characters", param=key)
    return value


def _correction(value: Any) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise BadRequest("'correction' must be an assistant message object", param="correction")
    if value.get("role", "assistant") != "assistant":
        raise BadRequest("'correction.role' must be 'assistant'", param="correction")
    content = value.get("content")
    if content is not None and not isinstance(content, str | list):
        raise BadRequest("'correction.content' must be a string or an array of parts", param="correction")
    calls = value.get("tool_calls")
    if calls is not None and not (isinstance(calls, list) and all(isinstance(c, dict) for c in calls)):
        raise BadRequest("'correction.tool_calls' must be an array of objects", param="correction")
    if content is None and not calls:
        raise BadRequest("'correction' needs 'content' or 'tool_calls'", param="correction")
    return {**value, "role": "assistant"}


def validate(body: Any) -> dict[str, Any]:
    """The feedback fields to store; raises ``BadRequest`` naming the first wrong field."""
    if not isinstance(body, dict):
        raise BadRequest("feedback must be a JSON object")
    fields: dict[str, Any] = {"request_id": _id(body, "request_id"), "response_id": _id(body, "response_id")}
    if fields["request_id"] is None and fields["response_id"] is None:
        raise BadRequest("'request_id' (or 'response_id') is required", param="request_id")
    score = body.get("score")
    if score is not None:
        if isinstance(score, bool) or not isinstance(score, int | float) or not 0 <= score <= 1:
            raise BadRequest("'score' must be a number from 0 to 1", param="score")
        fields["score"] = float(score)
    label = body.get("label")
    if label is not None:
        if label not in LABELS:
            raise BadRequest("'label' must be 'good' or 'bad'", param="label")
        fields["label"] = label
    done = body.get("task_completed")
    if done is not None:
        if not isinstance(done, bool):
            raise BadRequest("'task_completed' must be a boolean", param="task_completed")
        fields["task_completed"] = done
    if body.get("correction") is not None:
        fields["correction"] = _correction(body["correction"])
    comment = body.get("comment")
    if comment is not None:
        if not isinstance(comment, str):
            raise BadRequest("'comment' must be a string", param="comment")
        fields["comment"] = comment
    return fields


async def feedback_endpoint(request: Request) -> Response:
    gw: Gateway = request.state.gateway
    try:
        keys = gw.generation.keys
        caller = keys.client(request.headers.get("authorization", "").encode("latin-1") or None)
        raw = await request.body()  # at most server.body_limits_kb.feedback (64 KB): BoundedBodies
        try:
            body = orjson.loads(raw)
        except orjson.JSONDecodeError as exc:
            raise BadRequest(f"request body is not valid JSON: {exc.msg}") from None
        fields = validate(body)
        user = request.headers.get("x-turnout-user") or (body["user"] if isinstance(body.get("user"), str) else None)
        # joined only to this caller's interactions (the admin key: any); the answer is the same either way
        fields["caller"] = who = keys.caller_hash(caller, user)
        if who != ADMIN_CALLER and (wait := gw.feedback_rate.take(who, time.monotonic())):
            raise RateLimited(f"over {gw.feedback_rate.per_minute} feedback posts a minute", wait_s=wait)
        try:
            feedback_id = gw.sink.feedback(fields)
        except CaptureUnavailable as exc:
            raise Overloaded(f"feedback not accepted: {exc}", code="capture_unavailable") from None
    except GatewayError as exc:
        return error_response(exc)
    return JSONResponse({"id": feedback_id, "object": "feedback", "status": "accepted"}, status_code=202)
