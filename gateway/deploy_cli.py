"""The deployment workflow's commands: ``turnout experiment report``, ``turnout rollout
status|start|approve|pause|abort``, ``turnout promote`` and ``turnout rollback``.

Usage: ``turnout experiment report support-bot -c turnout.yaml --json r.json --html r.html``;
``turnout rollout start support-bot -c turnout.yaml``; ``turnout promote support-bot cand-v4 -c turnout.yaml``.
"""

from __future__ import annotations

import argparse
import asyncio
import getpass
import json
import math
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from collectors import rollouts as stored
from collectors.experiment_data import queries
from collectors.store import UnknownStore, open_store
from collectors.store.base import Store, StoreUnavailable
from gateway.analysis import build_report, render_table
from gateway.config import ConfigError, Loaded, load_config
from gateway.config_edit import set_weights
from gateway.progress import Progress, config_failed
from gateway.report_html import render_html
from gateway.rollout_state import plan_of, state_of
from gateway.rollouts import RolloutError, act, end, start, waiting
from policies.rollout import candidate_percent


def _with_store(args: argparse.Namespace, body: Callable[[Store, Loaded], Awaitable[int]]) -> int:
    try:
        loaded = load_config(args.config, store_only=True)
    except ConfigError as exc:
        return config_failed(exc)
    if getattr(args, "route", None) and args.route not in loaded.config.routes:
        print(f"turnout: {args.config}: no route {args.route!r}", file=sys.stderr)
        return 2

    async def run() -> int:
        store = open_store(loaded.secrets.store_dsn)
        try:
            await store.open()
            return await body(store, loaded)
        finally:
            await store.close()

    try:
        return asyncio.run(run())
    except (UnknownStore, StoreUnavailable, OSError) as exc:
        print(f"turnout {args.command}: {exc}", file=sys.stderr)
        return 1
    except (RolloutError, ValueError) as exc:
        print(f"turnout {args.command}: {exc}", file=sys.stderr)
        return 1


def report(args: argparse.Namespace) -> int:
    found: dict[str, Any] = {}

    async def body(store: Store, loaded: Loaded) -> int:
        series = bool(args.json or args.html)
        label = f"experiment report {args.route}"
        with Progress(label, total=queries(series), unit="step", quiet=args.quiet) as bar:
            found["report"] = await build_report(
                store, loaded.config, args.route, now=time.time(), series=series, client=args.client,
                on_query=bar.update,
            )  # fmt: skip
        return 0

    code = _with_store(args, body)
    if code != 0:
        return code
    data = found["report"]
    if args.json:
        Path(args.json).write_text(json.dumps(_finite(data), indent=2, allow_nan=False) + "\n")
    if args.html:
        Path(args.html).write_text(render_html(data), encoding="utf-8")
    sys.stdout.write(render_table(data))
    return 0


def _finite(value: Any) -> Any:
    """JSON has no infinity: an interval not yet bounded is written as null."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_finite(v) for v in value]
    return value


def _actor(args: argparse.Namespace) -> str:
    return args.actor or getpass.getuser()


def rollout(args: argparse.Namespace) -> int:
    async def body(store: Store, loaded: Loaded) -> int:
        now = time.time()
        if args.action == "start":
            await start(store, loaded.config, args.route, actor=_actor(args), now=now)
        elif args.action != "status":
            await act(store, args.route, args.action, actor=_actor(args), now=now, reason=args.reason or "")
        row = await stored.load(store, args.route)
        if row is None:
            print(f"route {args.route}: no rollout")
            return 0
        plan, state = plan_of(row), state_of(row)
        pct = candidate_percent(plan, state)
        share = "the file's weights" if pct is None else f"{pct} % of users"
        steps = f"steps {list(plan.steps)} every {plan.interval_s:.0f} s"
        print(f"route {args.route}: candidate {plan.candidate}, {state.phase}, {share}; {steps}; {state.reason}")
        if state.phase == "awaiting_approval":
            print(f"  waiting for approval: `turnout rollout approve {args.route}` sends every user to "
                  f"{plan.candidate}; `abort` hands the weights back to the file")  # fmt: skip
        for why in await waiting(store, loaded.config, args.route, now=now):
            print(f"  waiting: {why}")
        for a in await stored.audit_log(store, args.route, limit=args.history):
            stamp = time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(a.ts))
            print(f"  {stamp} {a.actor}: {a.from_phase} {a.from_percent} -> {a.to_phase} {a.to_percent}: {a.reason}")
        return 0

    return _with_store(args, body)


def _rewrite(args: argparse.Namespace, weights_of: Callable[[Loaded], dict[str, float]], why: str) -> int:
    try:
        loaded = load_config(args.config, store_only=True)
    except ConfigError as exc:
        return config_failed(exc)
    if args.route not in loaded.config.routes:
        print(f"turnout: {args.config}: no route {args.route!r}", file=sys.stderr)
        return 2
    try:
        weights = weights_of(loaded)
        set_weights(Path(args.config), args.route, weights)
    except ConfigError as exc:
        return config_failed(exc)
    except ValueError as exc:
        print(f"turnout {args.command}: {exc}", file=sys.stderr)
        return 2
    print(f"{args.config}: routes.{args.route}.variants = {weights}")

    async def body(store: Store, _: Loaded) -> int:
        await end(store, args.route, actor=_actor(args), now=time.time(), reason=why)
        return 0

    return _with_store(args, body)


def promote(args: argparse.Namespace) -> int:
    def weights(loaded: Loaded) -> dict[str, float]:
        variants = loaded.config.routes[args.route].variants
        if args.variant not in variants:
            raise ValueError(f"{args.variant!r} is not a variant of route {args.route!r}")
        return {v: (100.0 if v == args.variant else 0.0) for v in variants}

    return _rewrite(args, weights, f"promoted {args.variant} to 100 % by {_actor(args)}")


def rollback(args: argparse.Namespace) -> int:
    def weights(loaded: Loaded) -> dict[str, float]:
        route = loaded.config.routes[args.route]
        if route.analysis is None:
            raise ValueError(f"routes.{args.route}.analysis.control is needed to know what to roll back to")
        return {v: (100.0 if v == route.analysis.control else 0.0) for v in route.variants}

    return _rewrite(args, weights, f"rolled back to the control by {_actor(args)}")
