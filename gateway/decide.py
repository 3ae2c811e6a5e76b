"""Decide: what to do with one parsed request, as a pure function of the config, the request and an RNG.

``decide`` picks the route, the variant (a forced ``x-turnout-variant`` for the admin, else the sticky
weighted hash of ``policies.routing``), whether the interaction is captured, and which shadows are mirrored
or skipped. It reads no clock and no global state: the request's id and times come in from the caller, and
every random draw comes from ``rng`` (so a seeded RNG gives the same ``Facts`` every time).

Usage::

    routes = route_views(config)  # once per config generation: ``Generation.routes``
    facts = decide(routes, gw.rng, body, headers, caller, len(raw),
                   request_id=new_id(), ts=time.time(), t0=time.perf_counter())
"""

from __future__ import annotations

import random
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from gateway.auth import Caller
from gateway.config import Config
from gateway.errors import BadRequest, NotFound
from policies.capture import should_capture
from policies.routing import choose_variant, unit_id
from policies.shadows import pick_shadows


@dataclass(frozen=True, slots=True)
class RouteView:
    """What ``decide`` reads of one route, taken from the config once per generation (not per request)."""

    experiment: str
    sticky_by: str
    variants: Mapping[str, float]
    sample: float  # capture.sample
    shadows: tuple[tuple[str, float], ...]  # (upstream, sample) of the shadows with a positive sample
    shadow_max_bytes: float  # shadow.max_body_mb in bytes: a larger request is not mirrored
    refused: frozenset[str]  # the named clients whose ``routes`` leave this route out


def route_views(config: Config) -> dict[str, RouteView]:
    max_bytes = config.shadow.max_body_mb * 1024 * 1024
    clients = config.auth.clients
    return {
        name: RouteView(
            experiment=route.experiment or name,
            sticky_by=route.sticky_by,
            variants=route.variants,
            sample=route.capture.sample,
            shadows=tuple((s.upstream, s.sample) for s in route.shadows if s.sample > 0),
            shadow_max_bytes=max_bytes,
            refused=frozenset(c for c, conf in clients.items() if conf.routes is not None and name not in conf.routes),
        )
        for name, route in config.routes.items()
    }


@dataclass(slots=True)
class Facts:
    """What the data path knows about one request once it is parsed and decided."""

    request_id: str
    ts: float
    t0: float
    route: str
    experiment: str
    variant: str
    body: dict[str, Any]
    stream: bool
    capture: bool
    shadows: list[str] = field(default_factory=list)  # sampled: mirror these
    skipped_shadows: list[str] = field(default_factory=list)  # not eligible (opted out, body over the cap)
    unit: str | None = None  # the experiment's unit: a one-way hash of the sticky key
    override_ignored: bool = False  # x-turnout-variant came without the admin key
    client: str | None = None  # the named client (auth.clients) that sent it
    tags: tuple[str, ...] = ()  # x-turnout-tags
    caller: str | None = None  # ``Keys.caller_hash`` of who sent it: feedback joins only from the same caller
    correlation_id: str = ""  # what upstreams and shadows see (never the request id, the feedback key)


_TRUE = (b"1", b"true", b"yes", b"on")
_FALSE = (b"", b"0", b"false", b"no", b"off")


def no_capture(value: bytes | None) -> bool:
    """``x-turnout-no-capture``: any usual truthy value opts out (``1``, ``true``, ``True``, ``yes``, ``on``);
    anything that is neither true nor false is a 400 rather than silently stored."""
    word = (value or b"").strip().lower()
    if word in _TRUE:
        return True
    if word in _FALSE:
        return False
    raise BadRequest("x-turnout-no-capture must be 1/true/yes/on or 0/false/no/off")


def sticky_key(
    sticky_by: str, headers: Mapping[bytes, bytes], body: Mapping[str, Any], api_key: str | None
) -> str | None:
    """The key a request's variant sticks to (``routes.<model>.sticky_by``); None: no key, a random draw."""
    if sticky_by == "none":
        return None
    if sticky_by.startswith("header:"):
        value = headers.get(sticky_by[7:].lower().encode())
        return value.decode("latin-1") if value else None
    if sticky_by == "user":
        user = headers.get(b"x-turnout-user")
        if user:
            return user.decode("latin-1")
        if isinstance(body.get("user"), str) and body["user"]:
            return str(body["user"])
    return api_key


MAX_TAGS = 16
MAX_TAG_CHARS = 64


def request_tags(header: bytes | None) -> tuple[str, ...]:
    """``x-turnout-tags: a, b`` as ``("a", "b")``; too many or too long tags are a 400."""
    if not header:
        return ()
    tags = tuple(dict.fromkeys(t.strip() for t in header.decode("latin-1").split(",") if t.strip()))
    if len(tags) > MAX_TAGS or any(len(t) > MAX_TAG_CHARS for t in tags):
        raise BadRequest(f"x-turnout-tags: at most {MAX_TAGS} comma-separated tags of up to {MAX_TAG_CHARS} characters")
    return tags


def decide(
    routes: Mapping[str, RouteView],
    rng: random.Random,
    body: dict[str, Any],
    headers: Mapping[bytes, bytes],
    caller: Caller,
    size: int,
    *,
    request_id: str,
    ts: float,
    t0: float,
    caller_hash: str | None = None,
    correlation_id: str = "",
) -> Facts:
    """The ``Facts`` of a parsed request of ``size`` bytes; raises ``NotFound`` (no such route, or one outside a
    named client's ``routes``) or ``BadRequest`` (a forced variant the route does not have)."""
    route_name = body["model"]
    route = routes.get(route_name)
    if route is None or (caller.client is not None and caller.client in route.refused):
        raise NotFound(f"unknown model {route_name!r}: no route of that name", param="model")
    experiment = route.experiment
    forced = headers.get(b"x-turnout-variant") if caller.admin else None
    key = sticky_key(route.sticky_by, headers, body, caller.key)
    if forced:
        variant = forced.decode("latin-1")
        if variant not in route.variants:
            raise BadRequest(f"x-turnout-variant: {variant!r} is not a variant of route {route_name!r}")
    else:
        variant = choose_variant(experiment, key, route.variants, rng)
    opted_out = no_capture(headers.get(b"x-turnout-no-capture"))
    capture = should_capture(route.sample, opted_out=opted_out, rng=rng)
    if route.shadows:
        # a request that depends on upstream state (the Responses API's previous_response_id or conversation) is
        # not mirrored: a shadow upstream does not hold that state
        stateful = body.get("previous_response_id") is not None or body.get("conversation") is not None
        eligible = not opted_out and not stateful and size <= route.shadow_max_bytes
        shadows, skipped = pick_shadows(route.shadows, rng, eligible=eligible)
    else:
        shadows, skipped = [], []
    return Facts(
        request_id=request_id,
        ts=ts,
        t0=t0,
        route=route_name,
        experiment=experiment,
        variant=variant,
        body=body,
        stream=bool(body.get("stream")),
        capture=capture,
        shadows=shadows,
        skipped_shadows=skipped,
        unit=None if key is None else unit_id(key),
        override_ignored=not caller.admin and b"x-turnout-variant" in headers,
        client=caller.client,
        tags=request_tags(headers.get(b"x-turnout-tags")),
        caller=caller_hash,
        correlation_id=correlation_id,
    )
