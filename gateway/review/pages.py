"""The review page for a person: ``/admin/review`` (log in, then one item at a time), ``/admin/review/list``
(filters: route, variant, reason, date, status), decisions posted as forms with a CSRF token.

Templates are Jinja2 with autoescaping on: every captured string (prompts, answers, comments) is rendered as text.
Every page is sent with a Content-Security-Policy allowing only this origin's script and style, so even markup
that escaped would not run. Keyboard shortcuts live in ``static/review.js``.

Usage: the routes in ``ROUTES`` join the app's route table; they reach ``request.state.review``.
"""

from __future__ import annotations

import functools
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qs, urlencode

import orjson
from starlette.requests import Request
from starlette.responses import HTMLResponse, RedirectResponse, Response
from starlette.routing import Route

from collectors.review.decisions import Decision, InvalidDecision, decide
from collectors.review.items import Filters, backlog, count_items, list_items, load_items
from collectors.store.base import StoreUnavailable
from gateway.review.api import cursor, filters_from, item_endpoint, items_endpoint
from gateway.review.service import Access, ReviewService
from gateway.review.session import COOKIE, TTL_S, Session

if TYPE_CHECKING:
    import jinja2

HERE = Path(__file__).parent
CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; form-action 'self'; "
    "connect-src 'self'; base-uri 'none'; frame-ancestors 'none'"
)
STATIC = {"review.js": "text/javascript; charset=utf-8", "review.css": "text/css; charset=utf-8"}
FILTER_KEYS = ("route", "variant", "reason", "since", "until")
PAGE = 50


@functools.cache
def _templates() -> jinja2.Environment:
    import jinja2  # on the first page served, not at start-up (~40 ms)

    env = jinja2.Environment(loader=jinja2.FileSystemLoader(HERE / "templates"), autoescape=True)
    env.filters["json"] = lambda value: orjson.dumps(value, option=orjson.OPT_INDENT_2).decode()
    env.filters["when"] = lambda ts: time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(ts)) if ts else ""
    return env


def _html(name: str, status: int = 200, **context: Any) -> Response:
    body = _templates().get_template(name).render(**context)
    headers = {"content-security-policy": CSP, "cache-control": "no-store", "x-content-type-options": "nosniff"}
    return HTMLResponse(body, status_code=status, headers=headers)


async def _form(request: Request) -> dict[str, str]:
    """An urlencoded form (the page's only kind; at most ``server.body_limits_kb.admin``, 256 KB: BoundedBodies);
    the last value of a repeated field wins."""
    body = await request.body()
    return {k: v[-1] for k, v in parse_qs(body.decode("utf-8", "replace"), keep_blank_values=True).items()}


def _text(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        parts = [str(p["text"]) for p in content if isinstance(p, dict) and isinstance(p.get("text"), str)]
        if len(parts) == len(content):
            return "\n".join(parts)
    return "" if content is None else orjson.dumps(content, option=orjson.OPT_INDENT_2).decode()


def _answer(response: Any) -> str:
    choices = (response or {}).get("choices") if isinstance(response, dict) else None
    message = choices[0].get("message") if choices and isinstance(choices[0], dict) else None
    if not isinstance(message, dict):
        return ""
    text = _text(message.get("content"))
    if message.get("tool_calls"):
        text += ("\n" if text else "") + orjson.dumps(message["tool_calls"], option=orjson.OPT_INDENT_2).decode()
    return text


def view(item: dict[str, Any]) -> dict[str, Any]:
    """What the item page shows, as plain strings (the template escapes them)."""
    request = item.get("request") or {}
    messages: list[Any] = request["messages"] if isinstance(request.get("messages"), list) else []
    decision = item.get("decision") or {}
    shadow = item.get("shadow")
    return {
        **item,
        "messages": [(str(m.get("role", "?")), _text(m.get("content"))) for m in messages if isinstance(m, dict)],
        "answer": _answer(item.get("response")),
        "edited": decision.get("answer"),
        "shadow_answer": _answer(shadow.get("response")) if shadow else None,
        "after": f"{item['ts']!r}:{item['id']}",
    }


def _kept(params: Any) -> dict[str, str]:
    return {k: params[k] for k in FILTER_KEYS if params.get(k)}


def _secure(request: Request) -> bool:
    return request.url.scheme == "https" or request.headers.get("x-forwarded-proto") == "https"


async def _login_form(request: Request, error: str | None = None, status: int = 200) -> Response:
    return _html("login.html", status, error=error, closed=request.state.review.signer() is None)


async def login(request: Request) -> Response:
    review: ReviewService = request.state.review
    if request.method == "GET":
        return await _login_form(request)
    address = request.client.host if request.client else "unknown"
    now = time.time()
    wait = review.limiter.retry_after(address, now)
    if wait > 0:
        response = await _login_form(request, f"Too many wrong keys: try again in {int(wait) + 1} s.", 429)
        response.headers["retry-after"] = str(int(wait) + 1)
        return response
    form = await _form(request)
    key, reviewer = str(form.get("key") or ""), str(form.get("reviewer") or "").strip()
    signer = review.signer()
    if not key:
        return await _login_form(request, "Enter the admin key.", 400)
    if signer is None or not review.key_ok(key):
        review.limiter.failed(address, now)
        return await _login_form(request, "That is not the admin key.", 401)
    if not reviewer or len(reviewer) > 100:
        return await _login_form(request, "Enter your name (it is stored with each decision).", 400)
    response = RedirectResponse("/admin/review", status_code=303)
    response.set_cookie(
        COOKIE, signer.issue(reviewer, now), max_age=int(TTL_S), path="/admin/review", httponly=True,
        samesite="strict", secure=_secure(request),
    )  # fmt: skip
    return response


def _session(request: Request) -> tuple[ReviewService, Access | None]:
    review: ReviewService = request.state.review
    access = review.access(request)
    return review, access if access is not None and access.session is not None else None


async def _counts(review: ReviewService) -> dict[str, Any]:
    left = await backlog(await review.store())
    return {"total": sum(left.values()), "routes": sorted(left.items())}


async def _show(request: Request, review: ReviewService, session: Session, item_id: str | None) -> Response:
    params = request.query_params
    try:
        filters = filters_from(params)
    except ValueError as exc:
        return _html("error.html", 400, message=str(exc))
    store = await review.store()
    kept = _kept(params)
    if item_id is None:
        after = cursor(params.get("after"))
        pending = Filters("pending", filters.route, filters.variant, filters.reason, filters.since, filters.until)
        page = await list_items(store, pending, after=after, limit=1)
        if not page and after is not None:  # past the end: wrap round to what was skipped
            page = await list_items(store, pending, limit=1)
        item_id = page[0].id if page else None
    items = await load_items(store, [item_id]) if item_id else []
    if item_id and not items:
        return _html("error.html", 404, message=f"No review item {item_id}.")
    signer = review.signer()
    assert signer is not None
    return _html(
        "item.html",
        item=view(items[0]) if items else None,
        counts=await _counts(review),
        reviewer=session.reviewer,
        csrf=signer.csrf(session),
        query=urlencode(kept),
        kept=kept,
    )


async def page(request: Request) -> Response:
    review, access = _session(request)
    if access is None or access.session is None:
        return await _login_form(request)
    try:
        return await _show(request, review, access.session, request.path_params.get("item_id"))
    except StoreUnavailable:
        return _html("error.html", 503, message="The store is unavailable; try again shortly.")


async def decide_form(request: Request) -> Response:
    review, access = _session(request)
    form = await _form(request)
    signer = review.signer()
    if access is None or access.session is None or signer is None:
        return _html("error.html", 401, message="Log in first.")
    if not signer.csrf_ok(access.session, str(form.get("csrf") or "")):
        return _html("error.html", 403, message="This form is stale or did not come from this page (CSRF).")
    item_id = request.path_params["item_id"]
    action = str(form.get("action") or "")
    stars = str(form.get("stars") or "")
    score = (int(stars) - 1) / 4 if stars in ("1", "2", "3", "4", "5") else None
    answer = str(form["answer"]) if action == "edit" and form.get("answer") is not None else None
    try:
        found = await decide(
            await review.store(), item_id, Decision(action, access.session.reviewer, answer, score), now=time.time()
        )
    except InvalidDecision as exc:
        return _html("error.html", 400, message=str(exc))
    except StoreUnavailable:
        return _html("error.html", 503, message="The store is unavailable; your decision was not saved.")
    if not found:
        return _html("error.html", 404, message=f"No review item {item_id}.")
    kept = {k: str(form[k]) for k in FILTER_KEYS if form.get(k)}
    return RedirectResponse(f"/admin/review?{urlencode({**kept, 'after': str(form.get('after') or '')})}", 303)


async def list_page(request: Request) -> Response:
    review, access = _session(request)
    if access is None:
        return await _login_form(request)
    params = request.query_params
    try:
        filters = filters_from(params)
        store = await review.store()
        rows = await list_items(store, filters, after=cursor(params.get("after")), limit=PAGE)
        total = await count_items(store, filters)
    except ValueError as exc:
        return _html("error.html", 400, message=str(exc))
    except StoreUnavailable:
        return _html("error.html", 503, message="The store is unavailable; try again shortly.")
    kept = {**_kept(params), "status": filters.status}
    more = urlencode({**kept, "after": f"{rows[-1].ts!r}:{rows[-1].id}"}) if len(rows) == PAGE else None
    return _html("list.html", rows=rows, total=total, kept=kept, more=more, counts=await _counts(review))


async def logout(request: Request) -> Response:
    response = RedirectResponse("/admin/review", status_code=303)
    response.delete_cookie(COOKIE, path="/admin/review")
    return response


async def static(request: Request) -> Response:
    name = request.path_params["name"]
    if name not in STATIC:
        return Response("not found", 404)
    return Response((HERE / "static" / name).read_bytes(), media_type=STATIC[name],
                    headers={"cache-control": "max-age=300", "x-content-type-options": "nosniff"})  # fmt: skip


ROUTES = [
    Route("/admin/review", page, methods=["GET"]),
    Route("/admin/review/login", login, methods=["GET", "POST"]),
    Route("/admin/review/logout", logout, methods=["POST"]),
    Route("/admin/review/list", list_page, methods=["GET"]),
    Route("/admin/review/item/{item_id}", page, methods=["GET"]),
    Route("/admin/review/item/{item_id}", decide_form, methods=["POST"]),
    Route("/admin/review/items", items_endpoint, methods=["GET"]),
    Route("/admin/review/items/{item_id}", item_endpoint, methods=["GET", "POST"]),
    Route("/admin/review/static/{name}", static, methods=["GET"]),
]
