"""Scheduled evals inside ``turnout serve`` (``evals:`` in the config) and the metrics read back from their runs.

Each ``evals:`` entry is one job (``eval:ROUTE:SUITE_PATH``), run on one process across all replicas by the
jobs runner: the suite against every serving variant and shadow of the route, each run stored. A run below
the suite's threshold is a result, not a job failure; a suite that cannot be read, or a store that cannot take
the run, fails the job (``turnout_job_runs_total{result="failure"}``, ``TurnoutJobFailing``).

``read_evals`` is the serving process's reader (``gateway/stored_state.py``): from the newest complete stored
runs it publishes ``turnout_eval_score{route,variant,suite}`` (pass rate), ``turnout_eval_last_run_timestamp_
seconds{suite,upstream}`` and ``turnout_eval_interval_seconds{suite}`` (the schedule, for ``TurnoutEvalStale``),
so every replica's ``/metrics`` agrees whichever process ran the suite.

Usage: ``gateway/jobs.py`` adds ``eval_jobs(config)``; ``stored_state.READERS`` lists ``read_evals``.
"""

from __future__ import annotations

import datetime as dt
import functools
import logging
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from cronsim import CronSim

from collectors.store.base import Store
from gateway.config import Config, EvalSchedule
from gateway.schedule import Job, JobContext, Schedule

if TYPE_CHECKING:
    from collectors.evals.suite import Suite

# the evals themselves (gateway/evals.py, collectors/evals/: ~50 ms of import) are imported where a suite is
# read or run: every serving process imports this module, most never run an eval

log = logging.getLogger(__name__)


def job_name(entry: EvalSchedule) -> str:
    return f"eval:{entry.route}:{entry.suite}"


def suite_path(config_path: Path, entry: EvalSchedule) -> Path:
    return (config_path.parent / entry.suite).absolute()


async def run_scheduled(ctx: JobContext, entry: EvalSchedule) -> None:
    """One tick: the suite against each of the route's targets, every run stored; raises when it cannot run."""
    from collectors.evals.suite import load_suite
    from gateway.evals import run_targets, targets

    suite = load_suite(suite_path(ctx.config_path, entry))
    config = ctx.config
    runs = await run_targets(
        config, suite, targets(config, entry.route), store=ctx.store, route=entry.route, source="schedule",
        concurrency=entry.concurrency,
    )  # fmt: skip
    for run in runs:
        log.info(
            "scheduled eval %s on %s/%s: pass rate %.3f", suite.name, entry.route, run.header.upstream, run.pass_rate
        )


def eval_jobs(config: Config) -> list[Job]:
    """One job per ``evals:`` entry, for ``gateway.jobs.jobs_for``."""
    return [
        Job(job_name(e), Schedule.parse(e.cron if e.cron is not None else float(e.every or 0)),
            functools.partial(run_scheduled, entry=e))
        for e in config.evals
    ]  # fmt: skip


def interval_s(entry: EvalSchedule, now: float) -> float:
    """The schedule's period: ``every``, or the gap between the next two cron ticks."""
    if entry.every is not None:
        return entry.every
    ticks = CronSim(str(entry.cron), dt.datetime.fromtimestamp(now, dt.UTC))
    first = next(ticks)
    return (next(ticks) - first).total_seconds()


@functools.lru_cache(maxsize=64)
def _suite(path: str, stamp: tuple[int, int]) -> Suite:
    from collectors.evals.suite import load_suite

    return load_suite(path)


def cached_suite(path: Path) -> Suite | None:
    """The suite at ``path``, re-read only when the file changes; None when it cannot be read."""
    from collectors.evals.suite import SuiteError

    try:
        st = os.stat(path)
        return _suite(str(path), (st.st_mtime_ns, st.st_size))
    except (OSError, SuiteError):
        return None


class _ReadContext(Protocol):  # gateway.stored_state.ReadContext
    @property
    def store(self) -> Store: ...
    @property
    def config(self) -> Config: ...
    @property
    def out(self) -> Any: ...
    @property
    def gateway(self) -> Any: ...
    @property
    def now(self) -> float: ...


async def read_evals(ctx: _ReadContext) -> None:
    """Publish the eval gauges of the configured suites from the newest complete runs in the store."""
    config = ctx.config
    if not config.evals:
        return
    from collectors.evals.store import latest_complete
    from gateway.evals import targets

    config_path = ctx.gateway.generation.loaded.path
    wanted: dict[str, set[tuple[str, str]]] = {}  # suite name -> {(route, upstream)}
    for entry in config.evals:
        suite = cached_suite(suite_path(config_path, entry))
        if suite is None:
            continue
        wanted.setdefault(suite.name, set()).update((entry.route, u) for u in targets(config, entry.route))
        every = interval_s(entry, ctx.now)
        ctx.out.gauge("eval_interval_seconds", "How often the suite is scheduled", {"suite": suite.name}, every)
    last: dict[tuple[str, str], float] = {}
    for run in await latest_complete(ctx.store):
        pairs = wanted.get(run.suite, set())
        if run.route is not None and (run.route, run.upstream) in pairs and run.pass_rate is not None:
            ctx.out.gauge(
                "eval_score",
                "Latest eval pass rate (0..1) of a suite on a variant of a route",
                {"route": run.route, "variant": run.upstream, "suite": run.suite},
                run.pass_rate,
            )
        if any(u == run.upstream for _, u in pairs) and run.finished is not None:
            key = (run.suite, run.upstream)
            last[key] = max(last.get(key, 0.0), run.finished)
    for (suite_name, upstream), finished in sorted(last.items()):
        ctx.out.gauge(
            "eval_last_run_timestamp_seconds",
            "When the suite last completed a run on the upstream",
            {"suite": suite_name, "upstream": upstream},
            finished,
        )
