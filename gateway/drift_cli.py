"""``turnout drift check|report ROUTE -c FILE [--json F]`` and ``turnout drift models -c FILE``.

``check`` runs a route's drift check now (what the ``drift:ROUTE`` job does on its schedule) and prints its
report; ``report`` prints the route's latest published check (what ``turnout_drift_score`` shows; the latest
check of any kind when none was published yet); ``models`` reads the answers stored since the last
scan and prints the model and fingerprint each upstream answers with. Errors go to stderr, exit 1 (2 for a
config file that does not validate).

Usage: ``turnout drift check support-bot -c turnout.yaml --json drift.json`` (arguments in ``gateway/subcommands.py``).
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, TypeVar

import orjson

from collectors.drift import models
from collectors.drift.store import Check, checks, last_published
from collectors.store import UnknownStore, open_store
from collectors.store.base import Store, StoreUnavailable
from gateway.config import ConfigError, Loaded, load_config
from gateway.drift import DriftError, check_route
from gateway.drift_report import render
from gateway.progress import config_failed

T = TypeVar("T")


def _with_store(loaded: Loaded, work: Callable[[Store], Awaitable[T]]) -> T:
    async def run() -> T:
        store = open_store(loaded.secrets.store_dsn)
        try:
            await store.open()
            return await work(store)
        finally:
            await store.close()

    return asyncio.run(run())


def _route_check(args: argparse.Namespace, loaded: Loaded) -> Check | None:
    config = loaded.config
    if args.action == "check":
        return _with_store(loaded, lambda s: check_route(s, config, args.route, time.time()))

    async def latest(store: Store) -> Check | None:
        return await last_published(store, args.route) or next(iter(await checks(store, args.route)), None)

    return _with_store(loaded, latest)


def _models(loaded: Loaded) -> list[models.UpstreamModel]:
    async def work(store: Store) -> list[models.UpstreamModel]:
        await models.scan(store, time.time())
        return await models.current_models(store)

    return _with_store(loaded, work)


def drift(args: argparse.Namespace) -> int:
    try:
        loaded = load_config(args.config, store_only=True)
    except ConfigError as exc:
        return config_failed(exc)
    if args.action != "models":
        route = loaded.config.routes.get(args.route)
        if route is None or route.drift is None:
            what = "no such route" if route is None else "no drift block"
            print(f"turnout drift: routes.{args.route}: {what} in {args.config}", file=sys.stderr)
            return 1
    try:
        if args.action == "models":
            for m in _models(loaded):
                since = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime(m.since))
                print(f"{m.upstream}: {m.model} fingerprint {m.fingerprint or '-'} since {since} ({m.changes} changes)")
            return 0
        check = _route_check(args, loaded)
    except (UnknownStore, StoreUnavailable, DriftError, OSError) as exc:
        print(f"turnout drift: {exc}", file=sys.stderr)
        return 1
    if check is None:
        print(f"turnout drift: no check of route {args.route} stored yet; run `turnout drift check`", file=sys.stderr)
        return 1
    if args.json:
        doc: dict[str, Any] = {
            "route": check.route, "checked_at": check.checked_at, "window_start": check.window_start,
            "window_end": check.window_end, "reference": check.reference, "published": check.published,
            "closed": check.closed, **check.data(),
        }  # fmt: skip
        Path(args.json).write_bytes(orjson.dumps(doc, option=orjson.OPT_INDENT_2))
    sys.stdout.write(render(check))
    return 0
