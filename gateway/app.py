"""The ASGI application: one route table and a lifespan that opens and closes every resource.

Usage: ``app = create_app(load_config(path))`` (``sink=`` to watch every finished interaction); serve it with
uvicorn. ``from_environment`` is the factory ``turnout serve`` hands to uvicorn (it reads ``TURNOUT_CONFIG``),
so ``--workers N`` works.
"""

from __future__ import annotations

import gc
import logging
import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import orjson
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from prometheus_client.multiprocess import MultiProcessCollector
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from collectors.capture import Capture
from collectors.metrics import Metrics, prune_dead_gauges
from collectors.sink import Sink
from collectors.stored_metrics import StoredMetrics
from gateway.admission import Admission, BoundedBodies
from gateway.config import ConfigError, Loaded, load_config
from gateway.config_view import redacted
from gateway.errors import BadRequest, GatewayError, NotFound, RouteError, error_response
from gateway.feedback import feedback_endpoint
from gateway.jobs_process import JobsProcess
from gateway.openapi import openapi_endpoint
from gateway.proxy import Endpoint
from gateway.reload import Reloader
from gateway.review.pages import ROUTES as review_routes
from gateway.review.service import ReviewService
from gateway.runtime import Gateway, review_policy
from gateway.shutdown import hook_sigterm
from gateway.stored_state import StoredState

log = logging.getLogger(__name__)


def _gateway(request: Request) -> Gateway:
    return request.state.gateway  # type: ignore[no-any-return]


def _model(name: str) -> dict[str, Any]:
    return {"id": name, "object": "model", "created": 0, "owned_by": "turnout"}


async def models(request: Request) -> Response:
    gen = _gateway(request).generation
    try:
        gen.keys.client(request.headers.get("authorization", "").encode("latin-1") or None)
    except GatewayError as exc:
        return error_response(exc)
    data = [_model(name) for name in gen.config.routes]
    return Response(orjson.dumps({"object": "list", "data": data}), media_type="application/json")


async def model(request: Request) -> Response:
    gen = _gateway(request).generation
    name = request.path_params["model"]
    try:
        gen.keys.client(request.headers.get("authorization", "").encode("latin-1") or None)
        if name not in gen.config.routes:
            raise NotFound(f"unknown model {name!r}: no route of that name", param="model")
    except GatewayError as exc:
        return error_response(exc)
    return Response(orjson.dumps(_model(name)), media_type="application/json")


async def healthz(request: Request) -> Response:
    return JSONResponse({"status": "ok"})


async def readyz(request: Request) -> Response:
    gw = _gateway(request)
    if not gw.ready:
        return JSONResponse({"status": "not ready"}, status_code=503)
    status = "degraded" if gw.sink.degraded else "ok"  # store outage: still serving, spooling to the journal
    return JSONResponse({"status": status, "config_sha256": gw.generation.loaded.sha256})


async def metrics_endpoint(request: Request) -> Response:
    registry: CollectorRegistry = request.state.registry
    if directory := os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        prune_dead_gauges(directory)
        registry = CollectorRegistry()
        MultiProcessCollector(registry)
        registry.register(request.state.stored_metrics)
    return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)


def _admin(request: Request) -> GatewayError | None:
    try:
        _gateway(request).generation.keys.admin(request.headers.get("authorization", "").encode("latin-1") or None)
    except GatewayError as exc:
        return exc
    return None


async def admin_config(request: Request) -> Response:
    if (denied := _admin(request)) is not None:
        return error_response(denied)
    loaded = _gateway(request).generation.loaded
    return JSONResponse({"path": str(loaded.path), "sha256": loaded.sha256, "config": redacted(loaded.config)})


async def admin_reload(request: Request) -> Response:
    if (denied := _admin(request)) is not None:
        return error_response(denied)
    reloader: Reloader = request.state.reloader
    try:
        loaded = reloader.reload()
    except ConfigError as exc:
        return error_response(BadRequest(str(exc), code="invalid_config"))
    return JSONResponse({"status": "applied", "sha256": loaded.sha256})


async def http_error(request: Request, exc: Exception) -> Response:
    status = getattr(exc, "status_code", 500)
    message = {404: f"no such path: {request.url.path}", 405: "method not allowed"}.get(status, "error")
    return error_response(RouteError(status, message))


def capture_sink(loaded: Loaded, metrics: Metrics) -> Sink:
    """The sink a served gateway hands every finished interaction: its metrics, and the capture journal (with
    the loader child that stores it)."""
    server = loaded.config.server
    capture = Capture(
        loaded.secrets.store_dsn,
        Path(server.state_dir),
        metrics=metrics,
        max_spool_bytes=int(server.capture_spool_mb * (1 << 20)),
        review=review_policy(loaded.config),
    )
    return Sink(metrics, capture)


def create_app(
    loaded: Loaded,
    *,
    registry: CollectorRegistry | None = None,
    reload_interval: float = 0.5,
    sink: Sink | None = None,
) -> TurnoutApp:
    """The app serving ``loaded``; its metrics go to ``registry``. ``sink`` (built on ``Metrics(registry)``, like
    ``capture_sink``) replaces the default one: the primary calls and the shadow runner all hand it theirs."""
    registry = registry if registry is not None else CollectorRegistry()
    metrics = sink.metrics if sink is not None else Metrics(registry)
    sink = sink if sink is not None else capture_sink(loaded, metrics)
    gw = Gateway(loaded, metrics=metrics, sink=sink)
    reloader = Reloader(gw, loaded.path, interval=reload_interval)
    stored_metrics = StoredMetrics()
    registry.register(stored_metrics)
    stored_state = StoredState(loaded.secrets.store_dsn, gw, stored_metrics)
    jobs = JobsProcess(loaded.path, lambda: gw.generation.config)

    review = ReviewService(gw, loaded.secrets.store_dsn)

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[dict[str, Any]]:
        if not loaded.config.auth.client_keys_env and not loaded.config.auth.clients:
            log.warning("neither auth.client_keys_env nor auth.clients is set: any client may call this gateway")
        await sink.start()
        await gw.start()
        reloader.start()
        stored_state.start()
        jobs.start()
        unhook = hook_sigterm(
            gw.resilience.drain,
            on_term=lambda: setattr(gw, "ready", False),
            drain_s=lambda: gw.generation.config.server.drain_s,
        )
        try:
            yield {
                "gateway": gw,
                "reloader": reloader,
                "registry": registry,
                "stored_metrics": stored_metrics,
                "review": review,
            }
        finally:
            unhook()
            gw.ready = False
            await review.close()
            await jobs.close()
            await stored_state.close()
            await reloader.stop()
            await gw.close()
            await sink.close()

    routes = [
        Route("/v1/chat/completions", Endpoint("chat.completions"), methods=["POST"]),
        Route("/v1/completions", Endpoint("completions"), methods=["POST"]),
        Route("/v1/embeddings", Endpoint("embeddings"), methods=["POST"]),
        Route("/v1/responses", Endpoint("responses"), methods=["POST"]),
        Route("/v1/models", models, methods=["GET"]),
        Route("/v1/models/{model:path}", model, methods=["GET"]),
        Route("/v1/feedback", feedback_endpoint, methods=["POST"]),
        Route("/healthz", healthz, methods=["GET"]),
        Route("/readyz", readyz, methods=["GET"]),
        Route("/metrics", metrics_endpoint, methods=["GET"]),
        Route("/openapi.json", openapi_endpoint, methods=["GET"]),
        Route("/admin/config", admin_config, methods=["GET"]),
        Route("/admin/reload", admin_reload, methods=["POST"]),
        *review_routes,
    ]
    return TurnoutApp(gw, routes=routes, lifespan=lifespan, exception_handlers={HTTPException: http_error})


class TurnoutApp(Starlette):
    """Starlette, with load shedding (``Admission``) and the hop to the proxied endpoints (``HotRoutes``) in
    front of its whole middleware stack: a proxied request skips the route search (~20 µs in the profile) and
    the error middleware that wraps every ``send`` (~5 µs). An exception there still becomes a 500 (uvicorn's)."""

    def __init__(self, gateway: Gateway, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.gateway = gateway

    def build_middleware_stack(self) -> Any:
        hot = {r.path: r.app for r in self.routes if isinstance(r, Route) and isinstance(r.app, Endpoint)}
        routes = BoundedBodies(super().build_middleware_stack(), gateway=self.gateway)  # server.body_limits_kb
        return Admission(HotRoutes(routes, endpoints=hot), gateway=self.gateway)


class HotRoutes:
    """``POST`` to a proxied endpoint goes straight to its raw ASGI app. The route table still lists these
    endpoints (for the OpenAPI document and the tests); this only skips the search."""

    def __init__(self, app: Any, *, endpoints: dict[str, Any]) -> None:
        self.app = app
        self.endpoints = endpoints

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "http" and scope["method"] == "POST" and (hot := self.endpoints.get(scope["path"])):
            await hot(scope, receive, send)
            return
        await self.app(scope, receive, send)


def from_environment() -> TurnoutApp:
    """uvicorn factory: the config path comes from ``TURNOUT_CONFIG`` (set by ``turnout serve``)."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    app = create_app(load_config(os.environ["TURNOUT_CONFIG"]))
    tune_gc()
    return app


def tune_gc() -> None:
    """Garbage collection for a server process: measured at 64 connections, the collector took ~23 µs a request
    with Python's defaults. The objects of the requests in flight (~1,000) kept the young generation over its
    threshold of 700, so it was scanned every ~3 requests; 10,000 leaves room for them and cut the collections
    from 1,550 to 4 in a 5 s run. ``freeze`` takes what start-up built (modules, config) out of every scan."""
    gc.freeze()
    gc.set_threshold(10_000, 10, 10)
