"""Eval suites run from the gateway: against any configured upstream, through the same upstream seam and retry
loop as traffic, but never captured and never counted as user traffic (the calls bypass the data path and
carry ``x-turnout-eval: 1`` and ``x-turnout-no-capture: 1``, so even a Turnout upstream stores nothing).

``run_suite`` runs one suite on one upstream (the judge calibrated first when the suite has a ``judge_check``)
and stores it; ``compare_upstreams`` runs both sides on the same cases and decides with the paired tests of
``policies.evals`` — the gate a training pipeline (``turnout eval compare``) or a rollout calls.

Usage::

    run = await run_suite(config, load_suite(path), "prod-v3", store=store)
    cmp = await compare_upstreams(config, path, "prod-v3", "cand-v4", store)
    if not cmp.not_worse: print(cmp.summary)
"""

from __future__ import annotations

import asyncio
import logging
import os
import random
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
from prometheus_client import CollectorRegistry

from collectors.datasets.manifest import UnknownVersion, parse_ref
from collectors.evals.answer import Call, Reply, answer_of
from collectors.evals.calibration import judge_pairs, read_gold
from collectors.evals.runner import CaseResult, mean_score, pass_rate, run_cases
from collectors.evals.store import RunHeader, finish_run, start_run
from collectors.evals.suite import Suite, load_suite
from collectors.metrics import Metrics
from collectors.record import new_id
from collectors.store.base import Store
from gateway.auth import Keys
from gateway.config import Config, Loaded, resolve_secrets
from gateway.errors import UpstreamFailure
from gateway.generation import Generation
from gateway.resilience import Resilience
from gateway.retry import Attempts
from gateway.upstream import Client, close_clients, make_client
from policies.evals import Decision, cohen_kappa, compare

log = logging.getLogger(__name__)

EVAL_HEADERS = {"x-turnout-eval": "1", "x-turnout-no-capture": "1"}


class EvalError(Exception):
    """An eval that cannot start: an unknown upstream, a judge missing from the config, a bad gold file."""


@dataclass(frozen=True)
class SuiteRun:
    header: RunHeader
    results: list[CaseResult]
    finished: float
    judge_kappa: float | None = None
    notes: list[str] = field(default_factory=list)

    @property
    def pass_rate(self) -> float:
        return pass_rate(self.results)

    @property
    def score(self) -> float:
        return mean_score(self.results)

    @property
    def passed(self) -> bool:
        return self.pass_rate >= self.header.threshold

    def to_dict(self) -> dict[str, Any]:
        return {
            **{k: getattr(self.header, k) for k in self.header.__dataclass_fields__},
            "finished": self.finished,
            "pass_rate": self.pass_rate,
            "score": self.score,
            "passed": self.passed,
            "judge_kappa": self.judge_kappa,
            "notes": self.notes,
            "results": [r.to_dict() for r in self.results],
        }


class UpstreamCaller:
    """The ``Call`` handed to the runner: one client per upstream on a private session, the upstream's own
    retries and timeout (``gateway.retry.Attempts``, no fallbacks: the upstream named is the one evaluated)."""

    def __init__(self, config: Config, environ: Mapping[str, str] | None = None) -> None:
        secrets, _ = resolve_secrets(config, os.environ if environ is None else environ)
        self.config = config
        self.keys = secrets.upstream_keys
        self.session: aiohttp.ClientSession | None = None
        self.clients: dict[str, Client] = {}
        self.guard = Resilience(Metrics(CollectorRegistry()), random.Random())
        self.generation: Generation | None = None

    async def __aenter__(self) -> UpstreamCaller:
        self.session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0), auto_decompress=True)
        self.clients = {
            name: make_client(name, up, self.keys.get(name), self.session, EVAL_HEADERS)
            for name, up in self.config.upstreams.items()
        }
        loaded = Loaded(self.config, resolve_secrets(self.config, {})[0], "", Path())
        self.generation = Generation(loaded, Keys((), None), self.clients, ())
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.guard.close()
        await close_clients(self.clients.values())
        if self.session is not None:
            await self.session.close()

    async def __call__(self, upstream: str, body: dict[str, Any]) -> Reply:
        assert self.generation is not None, "use UpstreamCaller as an async context manager"
        conf = self.config.upstreams[upstream]
        t0 = time.monotonic()
        attempts = Attempts(self.generation, candidates=[upstream], deadline=t0 + conf.timeout_s, guard=self.guard)
        try:
            _, reply = await attempts.run("chat.completions", body, stream=False, request_id="eval-" + new_id())
        except UpstreamFailure as exc:
            return Reply(None, b"", (time.monotonic() - t0) * 1000, exc.message)
        return Reply(reply.status, reply.body, (time.monotonic() - t0) * 1000)


def targets(config: Config, route: str) -> list[str]:
    """What a route's evals cover (``--route`` and scheduled runs): every serving variant and every shadow."""
    conf = config.routes[route]
    serving = [name for name, weight in conf.variants.items() if weight > 0]
    return list(dict.fromkeys([*serving, *(s.upstream for s in conf.shadows)]))


def _check_upstreams(config: Config, suite: Suite, upstreams: list[str]) -> None:
    for name in [*upstreams, *([suite.judge] if suite.judge else [])]:
        if name not in config.upstreams:
            raise EvalError(f"unknown upstream {name!r} (configured: {', '.join(sorted(config.upstreams))})")
    for case in suite.cases:
        for spec in case.assertions:
            named = getattr(spec, "upstream", None)
            if named is not None and named not in config.upstreams:
                raise EvalError(f"case {case.id}: llm_judge upstream {named!r} is not configured")


async def calibrate(suite: Suite, call: Call, *, concurrency: int = 8) -> tuple[float | None, list[str]]:
    """Cohen's kappa of the judge against the suite's gold file, and the notes the run records."""
    if suite.judge_check is None or suite.judge is None:
        return None, []
    try:
        examples = read_gold(suite.path.parent / suite.judge_check.gold)
    except (OSError, ValueError) as exc:
        raise EvalError(f"judge_check.gold: {exc}") from None
    judge = suite.judge

    async def ask(body: dict[str, Any]) -> Any:
        return answer_of(await call(judge, body))

    pairs = await judge_pairs(examples, ask, concurrency=concurrency)
    kappa = cohen_kappa([h for h, _ in pairs], [j for _, j in pairs])
    floor = suite.judge_check.min_kappa
    if kappa < floor:
        note = (
            f"judge {judge!r} not calibrated: Cohen's kappa {kappa:.2f} < {floor} on {len(pairs)} gold examples;"
            " llm_judge results are recorded but not counted in scores"
        )
        return kappa, [note]
    return kappa, [f"judge {judge!r} calibrated: Cohen's kappa {kappa:.2f} >= {floor} on {len(pairs)} examples"]


def lineage(dataset: str | None) -> str | None:
    """The dataset version an evaluated model was trained on, spelled as ``turnout dataset list`` does."""
    if dataset is None:
        return None
    try:
        return "@".join(parse_ref(dataset))
    except UnknownVersion:
        return dataset


async def run_suite(
    config: Config,
    suite: Suite,
    upstream: str,
    *,
    store: Store | None = None,
    route: str | None = None,
    source: str = "cli",
    concurrency: int = 16,
    call: Call | None = None,
    calibration: tuple[float | None, list[str]] | None = None,
    on_done: Callable[[CaseResult], None] | None = None,
    environ: Mapping[str, str] | None = None,
) -> SuiteRun:
    """One suite on one upstream, stored (when ``store`` is given) as running, then complete."""
    _check_upstreams(config, suite, [upstream])
    if call is None:
        async with UpstreamCaller(config, environ) as caller:
            return await run_suite(
                config,
                suite,
                upstream,
                store=store,
                route=route,
                source=source,
                concurrency=concurrency,
                call=caller,
                calibration=calibration,
                on_done=on_done,
            )
    conf = config.upstreams[upstream]
    header = RunHeader(
        new_id(), suite.name, suite.sha256, upstream, conf.model, route, lineage(conf.dataset), source, time.time(),
        len(suite.cases), suite.threshold,
    )  # fmt: skip
    if store is not None:
        await start_run(store, header)
    kappa, notes = calibration if calibration is not None else await calibrate(suite, call)
    judge_counted = kappa is None or suite.judge_check is None or kappa >= suite.judge_check.min_kappa
    results = await run_cases(
        suite, upstream, call, concurrency=concurrency, judge_counted=judge_counted, on_done=on_done
    )
    finished = time.time()
    errors = sum(r.error is not None for r in results)
    if errors:
        notes = [*notes, f"{errors} of {len(results)} cases got no answer"]
    if store is not None:
        await finish_run(store, header.run_id, results, finished=finished, notes=notes, judge_kappa=kappa)
    log.info("eval %s on %s: pass rate %.3f over %d cases", suite.name, upstream, pass_rate(results), len(results))
    return SuiteRun(header, results, finished, kappa, notes)


async def run_targets(
    config: Config,
    suite: Suite,
    upstreams: list[str],
    *,
    store: Store | None = None,
    route: str | None = None,
    source: str = "cli",
    concurrency: int = 16,
    on_done: Callable[[CaseResult], None] | None = None,
    environ: Mapping[str, str] | None = None,
) -> list[SuiteRun]:
    """The suite on each upstream in turn (``--route``, a scheduled tick): one caller, the judge calibrated once."""
    _check_upstreams(config, suite, upstreams)
    async with UpstreamCaller(config, environ) as caller:
        calibration = await calibrate(suite, caller)
        return [
            await run_suite(
                config, suite, upstream, store=store, route=route, source=source, concurrency=concurrency,
                call=caller, calibration=calibration, on_done=on_done,
            )
            for upstream in upstreams
        ]  # fmt: skip


@dataclass(frozen=True)
class Comparison:
    """Both runs on the same cases and the paired decision; ``not_worse`` is the gate."""

    baseline: SuiteRun
    candidate: SuiteRun
    decision: Decision

    @property
    def not_worse(self) -> bool:
        return self.decision.not_worse

    @property
    def flipped(self) -> list[tuple[str, str]]:
        """(case id, "regressed" | "fixed") for every case whose pass/fail differs."""
        out = []
        for b, c in zip(self.baseline.results, self.candidate.results, strict=True):
            if b.passed != c.passed:
                out.append((b.case_id, "regressed" if b.passed else "fixed"))
        return out

    def by_assertion(self) -> list[tuple[str, int, float, float]]:
        """(assertion type, count, baseline pass rate, candidate pass rate) over every case's assertions."""
        rows: dict[str, list[int]] = {}
        for b, c in zip(self.baseline.results, self.candidate.results, strict=True):
            for rb, rc in zip(b.assertions, c.assertions, strict=False):
                row = rows.setdefault(rb.type, [0, 0, 0])
                row[0] += 1
                row[1] += rb.passed
                row[2] += rc.passed
        return [(t, n, ok_b / n, ok_c / n) for t, (n, ok_b, ok_c) in sorted(rows.items())]

    @property
    def summary(self) -> str:
        d = self.decision
        verdict = "not worse" if d.not_worse else "WORSE"
        return (
            f"{self.candidate.header.upstream} vs {self.baseline.header.upstream} on {self.baseline.header.suite}"
            f" ({d.cases} cases): {verdict} at {d.confidence:.0%} confidence; pass rate"
            f" {d.candidate_pass_rate:.1%} vs {d.baseline_pass_rate:.1%}; " + "; ".join(d.reasons)
        )

    def to_dict(self) -> dict[str, Any]:
        d = self.decision
        return {
            "suite": self.baseline.header.suite,
            "baseline": self.baseline.header.upstream,
            "candidate": self.candidate.header.upstream,
            "not_worse": d.not_worse,
            "summary": self.summary,
            "decision": {k: getattr(d, k) for k in d.__dataclass_fields__},
            "by_assertion": [
                {"type": t, "count": n, "baseline_pass_rate": b, "candidate_pass_rate": c}
                for t, n, b, c in self.by_assertion()
            ],
            "flipped": [{"case_id": i, "change": change} for i, change in self.flipped],
            "runs": {"baseline": self.baseline.header.run_id, "candidate": self.candidate.header.run_id},
        }


async def compare_upstreams(
    config: Config,
    suite_path: Path | str,
    baseline: str,
    candidate: str,
    store: Store | None,
    *,
    confidence: float = 0.95,
    concurrency: int = 16,
    source: str = "compare",
    environ: Mapping[str, str] | None = None,
    on_done: Callable[[CaseResult], None] | None = None,
) -> Comparison:
    """Run ``suite_path`` on both upstreams (concurrently, same cases, one judge calibration) and decide.

    Raises ``SuiteError`` for a bad suite file and ``EvalError`` for an upstream the config lacks; a case that
    fails to get an answer is a failed case on that side, never an aborted comparison."""
    suite = load_suite(suite_path)
    _check_upstreams(config, suite, [baseline, candidate])
    async with UpstreamCaller(config, environ) as caller:
        calibration = await calibrate(suite, caller)
        base_run, cand_run = await asyncio.gather(
            *(
                run_suite(
                    config, suite, name, store=store, source=source, concurrency=concurrency, call=caller,
                    calibration=calibration, on_done=on_done,
                )
                for name in (baseline, candidate)
            )
        )  # fmt: skip
    decision = compare(
        [r.passed for r in base_run.results],
        [r.passed for r in cand_run.results],
        [r.score for r in base_run.results],
        [r.score for r in cand_run.results],
        confidence=confidence,
    )
    return Comparison(base_run, cand_run, decision)
