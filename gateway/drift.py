"""Drift checks and the upstream model watch: the jobs ``turnout serve`` runs, the ``turnout drift`` commands'
work, and the reader that publishes their stored results as metrics in every serving process.

A route with a ``drift:`` block gets a job ``drift:ROUTE`` every ``drift.every``: it compares the route's
current window (interactions since the last published check) with its reference (``window:D``, the span D
before that, or ``dataset``, the serving variant's dataset version) and stores the result. Any drift block
also starts ``upstream-models`` every minute (or as often as the most frequent check), which records the model
and fingerprint each answer reports.

Usage: ``jobs_for`` calls ``drift_jobs(config)``; ``await check_route(store, config, "support-bot", now)``;
``stored_state.READERS`` holds ``read_drift``.
"""

from __future__ import annotations

import dataclasses
import random
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, Protocol

import orjson

from collectors.datasets.manifest import UnknownVersion, read_rows
from collectors.drift import models
from collectors.drift.store import (
    SAMPLE,
    Check,
    describe_record,
    forget_descriptors,
    latest_published,
    record_check,
    window_descriptors,
    window_start,
)
from collectors.store.base import Store
from collectors.stored_metrics import Snapshot
from gateway.config import Config
from gateway.schedule import Job, JobContext, Schedule
from policies.drift import ALPHA, MIN_SAMPLES
from policies.drift_signals import compare

KEEP_CHECKS_S = 90 * 86400.0
MODEL_SCAN_S = 60.0  # the upstream-models job: this often, or as often as the most frequent drift check


class Reading(Protocol):
    """What ``read_drift`` needs of ``gateway.stored_state.ReadContext`` (which imports this module)."""

    @property
    def store(self) -> Store: ...
    @property
    def config(self) -> Config: ...
    @property
    def out(self) -> Snapshot: ...


class DriftError(Exception):
    """A check that cannot run as configured (a dataset version that is not there)."""


def drift_jobs(config: Config) -> list[Job]:
    routes = {name: route.drift for name, route in config.routes.items() if route.drift is not None}
    if not routes:
        return []

    async def scan(ctx: JobContext) -> None:
        await models.scan(ctx.store, ctx.now())

    def check(route: str) -> Callable[[JobContext], Awaitable[None]]:
        async def run(ctx: JobContext) -> None:
            await check_route(ctx.store, ctx.config, route, ctx.now())

        return run

    return [
        Job("upstream-models", Schedule(every_s=min(MODEL_SCAN_S, *(d.every for d in routes.values()))), scan),
        *(Job(f"drift:{name}", Schedule(every_s=d.every), check(name)) for name, d in routes.items()),
    ]


def _serving_dataset(config: Config, route: str) -> str:
    variants = config.routes[route].variants
    heaviest = max(variants, key=lambda v: variants[v])
    dataset = config.upstreams[heaviest].dataset
    if not dataset:
        raise DriftError(f"routes.{route}.drift.reference: upstreams.{heaviest}.dataset is not set")
    return dataset


def dataset_descriptors(root: Path, version: str, limit: int = SAMPLE) -> list[dict[str, Any]]:
    """Descriptors of a dataset version's examples (prompt: the messages before the last answer), a uniform
    sample of ``limit`` when it has more."""
    try:
        rows = list(read_rows(root, version))
    except (UnknownVersion, OSError) as exc:
        raise DriftError(f"dataset {version}: {exc}") from None
    if len(rows) > limit:
        rows = random.Random(0).sample(rows, limit)
    found = []
    for row in rows:
        messages = row.get("messages") or []
        if not messages or messages[-1].get("role") != "assistant":
            continue
        answer = {"choices": [{"message": messages[-1], "finish_reason": None}]}
        described = describe_record({"request": {"messages": messages[:-1]}, "response": answer})
        described.pop("finish_reason", None)  # a training example has none
        found.append(described)
    return found


async def check_route(store: Store, config: Config, route: str, now: float) -> Check:
    """Compare the route's current window with its reference and store the result (published or not)."""
    drift = config.routes[route].drift
    if drift is None:
        raise DriftError(f"routes.{route}: no drift block")
    start = await window_start(store, route)
    start = now - drift.every if start is None else start
    current = await window_descriptors(store, route, start, now)
    window = drift.window_s()
    if window is None:
        version = _serving_dataset(config, route)
        reference, label = dataset_descriptors(Path(config.datasets_dir), version), f"dataset:{version}"
    else:
        reference, label = await window_descriptors(store, route, start - window, start), drift.reference
    result = compare(reference, current, max_psi=drift.max_psi)
    data = {**dataclasses.asdict(result), "max_psi": drift.max_psi, "alpha": ALPHA, "min_samples": MIN_SAMPLES}
    closed = result.published or (window is not None and len(reference) < MIN_SAMPLES)
    check = Check(route, now, start, now, label, result.published, closed, orjson.dumps(data).decode())
    await record_check(store, check, keep_s=KEEP_CHECKS_S)
    await forget_descriptors(store, route, start - (window or 0.0))  # no later check reads what is older
    return check


async def read_drift(ctx: Reading) -> None:
    """``drift_score{route,signal}``, the last check's time, and the upstreams' reported models."""
    routes = {name for name, route in ctx.config.routes.items() if route.drift is not None}
    if not routes:
        return
    for route, check in sorted((await latest_published(ctx.store)).items()):
        if route not in routes:
            continue
        data = check.data()
        scores = [(s["signal"], s["score"]) for s in data["signals"]] + sorted(data["scores"].items())
        for signal, score in scores:
            ctx.out.gauge(
                "drift_score", "Drift of a route's prompts or answers (PSI scale)", {"route": route, "signal": signal},
                score,
            )  # fmt: skip
        ctx.out.gauge(
            "drift_last_check_timestamp_seconds", "When the published drift scores were computed", {"route": route},
            check.checked_at,
        )  # fmt: skip
    found = {m.upstream: m for m in await models.current_models(ctx.store)}
    for upstream in sorted(set(ctx.config.upstreams) | set(found)):
        m = found.get(upstream)
        if m is not None:
            labels = {"upstream": upstream, "model": m.model, "fingerprint": m.fingerprint}
            ctx.out.gauge("upstream_model_info", "The model and fingerprint an upstream answers with", labels, 1)
        ctx.out.counter(
            "upstream_model_changes_total", "Times an upstream started answering with a model or fingerprint new to it",
            {"upstream": upstream}, m.changes if m else 0,
        )  # fmt: skip
