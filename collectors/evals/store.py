"""Stored eval runs and their per-case results, on either store backend (the store's SQL seam).

A run is inserted as ``running`` before its first case is sent and turned ``complete`` only in the
transaction that writes its results, so a run killed half way is never reported as complete (``list``
shows it as ``running`` until ``STALE_S`` passes, then as ``abandoned``).

Usage::

    await start_run(store, header)
    await finish_run(store, header.run_id, results, finished=time.time(), notes=[...], judge_kappa=None)
    runs = await list_runs(store, suite="support-golden")
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import orjson

from collectors.store.base import Store

if TYPE_CHECKING:
    from collectors.evals.runner import CaseResult

STALE_S = 6 * 3600.0  # a run still "running" after this long was killed

_RUN_COLUMNS = (
    "run_id, suite, suite_sha256, upstream, model, route, dataset, source, status, started, finished, cases,"
    " passed, pass_rate, score, threshold, judge_kappa, notes"
)


@dataclass(frozen=True)
class RunHeader:
    run_id: str
    suite: str
    suite_sha256: str
    upstream: str
    model: str
    route: str | None  # the route the upstream was evaluated for (schedule, --route), else None
    dataset: str | None  # lineage: upstreams.X.dataset of the model evaluated
    source: str  # cli | schedule | compare
    started: float
    cases: int
    threshold: float


@dataclass(frozen=True)
class StoredRun:
    run_id: str
    suite: str
    suite_sha256: str
    upstream: str
    model: str
    route: str | None
    dataset: str | None
    source: str
    status: str  # running | complete | abandoned
    started: float
    finished: float | None
    cases: int
    passed: int | None
    pass_rate: float | None
    score: float | None
    threshold: float
    judge_kappa: float | None
    notes: list[str]

    def to_dict(self) -> dict[str, Any]:
        return {k: getattr(self, k) for k in self.__dataclass_fields__}


def _run(row: Sequence[Any], now: float) -> StoredRun:
    values = list(row)
    values[-1] = orjson.loads(values[-1])
    run = StoredRun(*values)
    if run.status == "running" and now - run.started > STALE_S:
        return StoredRun(**{**run.to_dict(), "status": "abandoned"})
    return run


async def start_run(store: Store, h: RunHeader) -> None:
    await store.execute(
        f"INSERT INTO eval_runs ({_RUN_COLUMNS}) VALUES"
        " ($1, $2, $3, $4, $5, $6, $7, $8, 'running', $9, NULL, $10, NULL, NULL, NULL, $11, NULL, '[]')",
        h.run_id,
        h.suite,
        h.suite_sha256,
        h.upstream,
        h.model,
        h.route,
        h.dataset,
        h.source,
        h.started,
        h.cases,
        h.threshold,
    )


async def finish_run(
    store: Store,
    run_id: str,
    results: Sequence[CaseResult],
    *,
    finished: float,
    notes: Sequence[str],
    judge_kappa: float | None,
) -> None:
    """Write every case result and mark the run complete, in one transaction."""
    from collectors.evals.runner import mean_score, pass_rate  # here: a serving process reads runs, never runs one

    insert = (
        "INSERT INTO eval_results (run_id, case_id, passed, score, latency_ms, error, record)"
        " VALUES ($1, $2, $3, $4, $5, $6, $7)"
    )
    statements: list[tuple[str, Sequence[Any]]] = [
        (insert, (run_id, r.case_id, int(r.passed), r.score, r.latency_ms, r.error, orjson.dumps(r.to_dict()).decode()))
        for r in results
    ]
    statements.append(
        (
            "UPDATE eval_runs SET status = 'complete', finished = $2, passed = $3, pass_rate = $4, score = $5,"
            " judge_kappa = $6, notes = $7 WHERE run_id = $1",
            (
                run_id,
                finished,
                sum(r.passed for r in results),
                pass_rate(results),
                mean_score(results),
                judge_kappa,
                orjson.dumps(list(notes)).decode(),
            ),
        )
    )
    await store.transact(statements)


async def list_runs(
    store: Store, *, now: float, suite: str | None = None, upstream: str | None = None, limit: int = 50
) -> list[StoredRun]:
    """Runs newest first, optionally of one suite and/or one upstream."""
    where: list[str] = []
    args: list[Any] = []
    for column, value in (("suite", suite), ("upstream", upstream)):
        if value is not None:
            args.append(value)
            where.append(f"{column} = ${len(args)}")
    args.append(limit)
    rows = await store.fetch(
        f"SELECT {_RUN_COLUMNS} FROM eval_runs {'WHERE ' + ' AND '.join(where) if where else ''}"
        f" ORDER BY started DESC, run_id LIMIT ${len(args)}",
        *args,
    )
    return [_run(r, now) for r in rows]


async def run_results(store: Store, run_id: str) -> list[dict[str, Any]]:
    rows = await store.fetch("SELECT record FROM eval_results WHERE run_id = $1 ORDER BY case_id", run_id)
    return [orjson.loads(r[0]) for r in rows]


async def latest_complete(store: Store) -> list[StoredRun]:
    """The newest complete run of every (suite, route, upstream): what the metrics show."""
    rows = await store.fetch(
        f"SELECT {_RUN_COLUMNS} FROM eval_runs r WHERE status = 'complete' AND finished = ("
        " SELECT MAX(finished) FROM eval_runs l WHERE l.status = 'complete' AND l.suite = r.suite"
        " AND l.upstream = r.upstream AND COALESCE(l.route, '') = COALESCE(r.route, ''))"
    )
    return [_run(r, 0.0) for r in rows]


@dataclass(frozen=True)
class Pair:
    """The newest complete runs of two upstreams on one suite version, case by case (the experiment report's
    evidence for ``primary: eval_score``)."""

    suite: str
    baseline_run: str
    candidate_run: str
    finished: float  # the later of the two runs
    scores: list[tuple[float, float]]  # (baseline, candidate) score of every case both ran

    @property
    def means(self) -> tuple[float, float]:
        n = len(self.scores) or 1
        return sum(b for b, _ in self.scores) / n, sum(c for _, c in self.scores) / n


async def latest_pair(store: Store, baseline: str, candidate: str) -> Pair | None:
    """The candidate's newest complete run and the baseline's newest on the same suite file (same cases)."""
    runs = await store.fetch(
        "SELECT c.suite, b.run_id, c.run_id, c.finished, b.finished FROM eval_runs c JOIN eval_runs b"
        " ON b.suite = c.suite AND b.suite_sha256 = c.suite_sha256 AND b.upstream = $1 AND b.status = 'complete'"
        " WHERE c.upstream = $2 AND c.status = 'complete' ORDER BY c.finished DESC, b.finished DESC LIMIT 1",
        baseline,
        candidate,
    )
    if not runs:
        return None
    suite, base_run, cand_run, cand_done, base_done = runs[0]
    rows = await store.fetch(
        "SELECT b.score, c.score FROM eval_results b JOIN eval_results c ON c.case_id = b.case_id AND c.run_id = $2"
        " WHERE b.run_id = $1 ORDER BY b.case_id",
        base_run,
        cand_run,
    )
    scores = [(float(b), float(c)) for b, c in rows]
    return Pair(suite, base_run, cand_run, max(float(cand_done), float(base_done)), scores)
