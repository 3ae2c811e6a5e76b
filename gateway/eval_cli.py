"""``turnout eval run|compare|list``: eval suites from a terminal or a training pipeline.

- ``run SUITE -c FILE (--upstream NAME | --route NAME)``: exit 0 when every evaluated upstream reaches the
  suite's ``threshold.pass_rate``, 1 when one does not, 2 on a bad suite, config or store.
- ``compare SUITE -c FILE --baseline A --candidate B``: exit 0 only when B is not worse than A at
  ``--confidence`` (paired tests on the same cases), 1 when it is worse, 2 on errors.
- ``list -c FILE``: stored runs, newest first (``--json`` for scripts).

Runs are stored when the store can be reached (a warning otherwise: the verdict and ``--json`` still stand).
Progress: a bar on a terminal's stderr, plain lines when piped, nothing with ``--quiet`` (gateway/progress.py).

Usage: ``turnout eval compare evals/support.yaml -c turnout.yaml --baseline prod-v3 --candidate cand-v4``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import orjson

from collectors.evals.store import list_runs
from collectors.evals.suite import SuiteError, load_suite
from collectors.store import UnknownStore, open_store
from collectors.store.base import Store, StoreUnavailable
from gateway.config import ConfigError, Loaded, load_config
from gateway.eval_schedule import suite_path
from gateway.evals import Comparison, EvalError, SuiteRun, compare_upstreams, run_targets, targets
from gateway.progress import Progress


def _err(message: str) -> int:
    print(f"turnout eval: {message}", file=sys.stderr)
    return 2


@contextlib.asynccontextmanager
async def _store(loaded: Loaded, wanted: bool) -> AsyncIterator[Store | None]:
    """The open store, or None (with a warning) when it is not wanted or cannot be reached."""
    store = open_store(loaded.secrets.store_dsn) if wanted else None
    try:
        if store is not None:
            try:
                await store.open()
            except StoreUnavailable as exc:
                print(f"turnout eval: warning: results not stored ({exc})", file=sys.stderr)
                await store.close()
                store = None
        yield store
    finally:
        if store is not None:
            await store.close()


def _write_json(path: str | None, data: Any) -> None:
    if path is None:
        return
    blob = orjson.dumps(data, option=orjson.OPT_INDENT_2)
    if path == "-":
        sys.stdout.buffer.write(blob + b"\n")
        sys.stdout.flush()
    else:
        Path(path).write_bytes(blob + b"\n")


def _load(args: argparse.Namespace) -> Loaded:
    return load_config(args.config, store_only=True)


def check_suites(loaded: Loaded) -> list[str]:
    """``evals.N.suite: ...`` for every scheduled suite that cannot be read or names an unknown upstream."""
    errors = []
    for i, entry in enumerate(loaded.config.evals):
        path = suite_path(loaded.path, entry)
        try:
            suite = load_suite(path)
        except SuiteError as exc:
            errors += [f"evals.{i}.suite: {entry.suite}: {e}" for e in exc.errors]
            continue
        if suite.judge is not None and suite.judge not in loaded.config.upstreams:
            errors.append(f"evals.{i}.suite: {entry.suite}: judge.upstream: unknown upstream {suite.judge!r}")
    return errors


def _print_run(run: SuiteRun) -> None:
    h = run.header
    for r in run.results:
        if not r.passed:
            why = r.error or "; ".join(f"{a.type}: {a.reason}" for a in r.assertions if a.counted and not a.passed)
            print(f"  FAIL {r.case_id}: {why}")
    verdict = "PASS" if run.passed else "FAIL"
    print(
        f"{verdict} {h.suite} on {h.upstream} ({h.model}): pass rate {run.pass_rate:.1%}"
        f" ({sum(r.passed for r in run.results)}/{len(run.results)}), threshold {h.threshold:.0%},"
        f" mean score {run.score:.3f}"
    )
    for note in run.notes:
        print(f"  note: {note}")


def run(args: argparse.Namespace) -> int:
    try:
        loaded = _load(args)
        suite = load_suite(args.suite)
    except ConfigError as exc:
        return _err("; ".join(f"{exc.path}: {e}" for e in exc.errors))
    except SuiteError as exc:
        return _err(str(exc))
    config = loaded.config
    if args.route is not None and args.route not in config.routes:
        return _err(f"unknown route {args.route!r}")
    upstreams = [args.upstream] if args.upstream else targets(config, args.route)

    async def go() -> list[SuiteRun]:
        async with _store(loaded, not args.no_store) as store:
            label = f"eval {suite.name} on {', '.join(upstreams)}"
            with Progress(label, total=len(suite.cases) * len(upstreams), unit="case", quiet=args.quiet) as bar:
                return await run_targets(
                    config, suite, upstreams, store=store, route=args.route, concurrency=args.concurrency,
                    on_done=lambda _: bar.update(),
                )  # fmt: skip

    try:
        runs = asyncio.run(go())
    except (EvalError, StoreUnavailable, UnknownStore) as exc:
        return _err(str(exc))
    for one in runs:
        _print_run(one)
    _write_json(args.json, {"runs": [r.to_dict() for r in runs], "passed": all(r.passed for r in runs)})
    return 0 if all(r.passed for r in runs) else 1


def _print_comparison(cmp: Comparison) -> None:
    d = cmp.decision
    base, cand = cmp.baseline.header.upstream, cmp.candidate.header.upstream
    width = max(len("case pass rate"), *(len(t) for t, *_ in cmp.by_assertion()))
    print(f"{'assertion':<{width}}  {'n':>5}  {base:>12}  {cand:>12}")
    for kind, n, b, c in cmp.by_assertion():
        print(f"{kind:<{width}}  {n:>5}  {b:>12.1%}  {c:>12.1%}")
    print(f"{'case pass rate':<{width}}  {d.cases:>5}  {d.baseline_pass_rate:>12.1%}  {d.candidate_pass_rate:>12.1%}")
    flipped = cmp.flipped
    if flipped:
        print(f"flipped cases ({len(flipped)}):")
        for case_id, change in flipped:
            print(f"  {change:<9} {case_id}")
    print(f"McNemar exact p={d.mcnemar_p:.3g} (two-sided), paired t on scores p(worse)={d.t_p_worse:.3g}")
    print(("NOT WORSE: " if d.not_worse else "WORSE: ") + cmp.summary)


def compare(args: argparse.Namespace) -> int:
    try:
        loaded = _load(args)
    except ConfigError as exc:
        return _err("; ".join(f"{exc.path}: {e}" for e in exc.errors))

    async def go() -> Comparison:
        label = f"eval compare {args.baseline} vs {args.candidate}"
        async with _store(loaded, not args.no_store) as store:
            with Progress(label, unit="case", quiet=args.quiet) as bar:
                return await compare_upstreams(
                    loaded.config, args.suite, args.baseline, args.candidate, store, confidence=args.confidence,
                    concurrency=args.concurrency, source="cli-compare", on_done=lambda _: bar.update(),
                )  # fmt: skip

    try:
        cmp = asyncio.run(go())
    except SuiteError as exc:
        return _err(str(exc))
    except (EvalError, StoreUnavailable, UnknownStore, ValueError) as exc:
        return _err(str(exc))
    _print_comparison(cmp)
    _write_json(args.json, cmp.to_dict())
    return 0 if cmp.not_worse else 1


def list_command(args: argparse.Namespace) -> int:
    try:
        loaded = _load(args)
    except ConfigError as exc:
        return _err("; ".join(f"{exc.path}: {e}" for e in exc.errors))

    async def go() -> list[Any]:
        async with _store(loaded, True) as store:
            if store is None:
                raise StoreUnavailable("the store cannot be reached")
            return await list_runs(store, now=time.time(), suite=args.suite, upstream=args.upstream, limit=args.limit)

    try:
        runs = asyncio.run(go())
    except (StoreUnavailable, UnknownStore) as exc:
        return _err(str(exc))
    if args.json:
        _write_json("-", [r.to_dict() for r in runs])
        return 0
    print(f"{'started (UTC)':<20} {'suite':<20} {'upstream':<14} {'status':<9} {'pass rate':>9} {'cases':>6}  run id")
    for r in runs:
        started = time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(r.started))
        rate = f"{r.pass_rate:.1%}" if r.pass_rate is not None else "-"
        print(f"{started:<20} {r.suite:<20} {r.upstream:<14} {r.status:<9} {rate:>9} {r.cases:>6}  {r.run_id}")
    return 0
