"""The review queue as JSON for scripts: the admin Bearer key, or the page's session cookie plus its CSRF token
in ``x-csrf-token`` (a cookie-authenticated POST without it is refused with 403).

- ``GET /admin/review/items?status=pending|done|approved|rejected|scored&route=&variant=&reason=&since=&until=
  &after=&limit=`` -> ``{"items": [...], "next": cursor or null}`` (``since``/``until``: ISO 8601 or 7d)
- ``GET /admin/review/items/{id}`` -> the item
- ``POST /admin/review/items/{id}`` with ``{"action": "approve"|"reject"|"edit"|"score", "answer", "score",
  "reviewer"}`` -> ``{"item": ...}``
"""

from __future__ import annotations

import datetime as dt
import time
from typing import Any

import orjson
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from collectors.review.decisions import Decision, InvalidDecision, decide
from collectors.review.items import Filters, list_items, load_items
from collectors.store.base import StoreUnavailable
from gateway.config import duration_seconds
from gateway.review.service import Access, ReviewService, json_error

MAX_LIMIT = 500


def _time(value: str | None, key: str) -> float | None:
    if not value:
        return None
    try:
        return time.time() - duration_seconds(value)
    except ValueError:
        pass
    try:
        parsed = dt.datetime.fromisoformat(value)
    except ValueError:
        raise ValueError(f"{key}: expected an ISO 8601 time or a duration such as 7d, got {value!r}") from None
    return (parsed if parsed.tzinfo else parsed.replace(tzinfo=dt.UTC)).timestamp()


def filters_from(params: Any) -> Filters:
    """Filters from query parameters; ValueError names the bad one."""
    return Filters(
        status=params.get("status") or "pending",
        route=params.get("route") or None,
        variant=params.get("variant") or None,
        reason=params.get("reason") or None,
        since=_time(params.get("since"), "since"),
        until=_time(params.get("until"), "until"),
    )


def cursor(value: str | None) -> tuple[float, str] | None:
    if not value:
        return None
    ts, sep, item_id = value.partition(":")
    try:
        return (float(ts), item_id) if sep else None
    except ValueError:
        return None


def _service(request: Request) -> tuple[ReviewService, Access | None]:
    review: ReviewService = request.state.review
    return review, review.access(request)


def _denied() -> Response:
    return json_error(401, "the review API needs the admin key (Bearer) or a review page session", "invalid_api_key")


async def items_endpoint(request: Request) -> Response:
    review, access = _service(request)
    if access is None:
        return _denied()
    try:
        filters = filters_from(request.query_params)
        limit = min(max(int(request.query_params.get("limit") or 50), 1), MAX_LIMIT)
    except ValueError as exc:
        return json_error(400, str(exc), "invalid_filter")
    try:
        store = await review.store()
        page = await list_items(store, filters, after=cursor(request.query_params.get("after")), limit=limit)
        items = await load_items(store, [s.id for s in page])
    except StoreUnavailable:
        return json_error(503, "the store is unavailable", "store_unavailable", "server_error")
    nxt = f"{page[-1].ts!r}:{page[-1].id}" if len(page) == limit else None
    return JSONResponse({"items": items, "next": nxt})


async def item_endpoint(request: Request) -> Response:
    review, access = _service(request)
    if access is None:
        return _denied()
    item_id = request.path_params["item_id"]
    if request.method == "POST":
        if access.session is not None:
            signer = review.signer()
            if signer is None or not signer.csrf_ok(access.session, request.headers.get("x-csrf-token")):
                return json_error(403, "missing or wrong CSRF token (x-csrf-token)", "csrf")
        body = await request.body()  # at most server.body_limits_kb.admin (256 KB): BoundedBodies
        try:
            data = orjson.loads(body)
            if not isinstance(data, dict):
                raise InvalidDecision("expected a JSON object")
            score = data.get("score")
            if score is not None and (isinstance(score, bool) or not isinstance(score, int | float)):
                raise InvalidDecision(f"score: expected a number from 0 to 1, got {score!r}")
            answer = data.get("answer")
            if answer is not None and not isinstance(answer, str):
                raise InvalidDecision("answer: expected a string")
            reviewer = access.reviewer or data.get("reviewer") or "admin"
            decision = Decision(str(data.get("action")), str(reviewer), answer, score)
            decision.checked()
        except (orjson.JSONDecodeError, InvalidDecision) as exc:
            return json_error(400, str(exc), "invalid_decision")
        try:
            found = await decide(await review.store(), item_id, decision, now=time.time())
        except StoreUnavailable:
            return json_error(503, "the store is unavailable", "store_unavailable", "server_error")
        if not found:
            return json_error(404, f"no review item {item_id!r}", "not_found")
    try:
        items = await load_items(await review.store(), [item_id])
    except StoreUnavailable:
        return json_error(503, "the store is unavailable", "store_unavailable", "server_error")
    if not items:
        return json_error(404, f"no review item {item_id!r}", "not_found")
    return JSONResponse({"item": items[0]} if request.method == "POST" else items[0])
