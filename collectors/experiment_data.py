"""What the experiment analysis reads from the store, aggregated in SQL: per variant, the per-user sums of
every metric (users, and for each metric sum x, sum y, sum x^2, sum y^2, sum xy over users), and the stored cost
(USD, and how many requests had one). ``client`` limits every figure to one named client's interactions.

The user is the unit (the ``unit`` column: a hash of the sticky key, or the request id for a request without
one): rows are summed per (variant, user), then over users per variant. For the report's charts the same is
done at ``BUCKETS`` points in time (running sums per user with a window). Feedback joins by request id, or by
the upstream response id for feedback that carries only that; several ratings of one answer are averaged.

Usage::

    data = await variant_sums(store, "support-bot", "v4-ab", since=t0, until=time.time())
    data.final["cand"]["error_rate"]   # (users, x, y, xx, yy, xy)
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from collectors.store.base import SAME_CALLER_SQL, Store

BUCKETS = 12
SERIES_ROWS = 200_000  # the series (charts) reads at most about this many interactions: a sample of users beyond
METRICS = ("requests", "error_rate", "latency", "feedback_score", "thumbs_up", "task_completed", "tokens")

# feedback per answer (several ratings of one answer averaged): keyed by request id, or by the upstream's
# response id for feedback that carries only that (exact where response ids are unique, as SPEC says); only
# feedback from the caller that made the request, or from the admin key, counts (SAME_CALLER_SQL). By request
# id, feedback is summed per (request, caller) from the feedback table alone, then joined twice (the request's
# own caller, the admin key): one hash join each, no second pass over the interactions. Feedback is never
# older than its answer; a day's margin covers the replicas' clocks. Rates and scores are floats: numeric
# arithmetic (1.0 is numeric on PostgreSQL) doubled the query's time.
_SUMS = """SUM(score) AS s, COUNT(score) AS ns,
           SUM(CASE WHEN label = 'good' THEN CAST(1 AS DOUBLE PRECISION) WHEN label = 'bad' THEN 0 END) AS up,
           COUNT(CASE WHEN label IN ('good', 'bad') THEN 1 END) AS nup,
           SUM(CAST(task_completed AS DOUBLE PRECISION)) AS dn, COUNT(task_completed) AS ndn"""
_FEEDBACK = f"""
fo AS (
    SELECT request_id AS rid, COALESCE(caller, '') AS who, {_SUMS}
      FROM feedback WHERE request_id IS NOT NULL AND (caller IS NULL OR caller <> '*') AND ts >= $3 - 86400
     GROUP BY request_id, COALESCE(caller, '')
),
fa AS (
    SELECT request_id AS rid, {_SUMS}
      FROM feedback WHERE request_id IS NOT NULL AND caller = '*' AND ts >= $3 - 86400 GROUP BY request_id
),
fr AS (
    SELECT f.response_id AS rid, COALESCE(i.caller, '') AS who, AVG(f.score) AS score,
           AVG(CASE WHEN f.label = 'good' THEN CAST(1 AS DOUBLE PRECISION) WHEN f.label = 'bad' THEN 0 END) AS up,
           AVG(CAST(f.task_completed AS DOUBLE PRECISION)) AS done
      FROM feedback f JOIN interactions i ON i.response_id = f.response_id AND i.role = 'primary'
       AND {SAME_CALLER_SQL}
     WHERE f.request_id IS NULL AND i.route = $1 GROUP BY f.response_id, COALESCE(i.caller, '')
)"""


def _mean(field: str) -> str:
    """The average of a feedback figure over the request's own caller's and the admin's ratings."""
    return (f"(COALESCE(o.{field}, 0) + COALESCE(a.{field}, 0)) / "
            f"NULLIF(COALESCE(o.n{field}, 0) + COALESCE(a.n{field}, 0), 0)")  # fmt: skip


_REQUEST = f"""
           CASE WHEN i.outcome IN ('upstream_error', 'timeout') OR i.status >= 500 THEN 1 ELSE 0 END AS err,
           LN(CASE WHEN i.latency_ms > 0.01 THEN i.latency_ms ELSE 0.01 END) AS lat,
           COALESCE(i.tokens, 0) AS tok, COALESCE({_mean("s")}, fr.score) AS score,
           COALESCE({_mean("up")}, fr.up) AS up, COALESCE({_mean("dn")}, fr.done) AS done, i.cost_usd AS cost
      FROM interactions i
      LEFT JOIN fo o ON o.rid = i.request_id AND o.who = COALESCE(i.caller, '')
      LEFT JOIN fa a ON a.rid = i.request_id
      LEFT JOIN fr ON fr.rid = i.response_id AND fr.who = COALESCE(i.caller, '')
     WHERE i.route = $1 AND i.experiment = $2 AND i.role = 'primary' AND i.ts >= $3 AND i.ts < $4 CLIENT"""
_PER_GROUP = """COUNT(*) AS n, SUM(err) AS err, SUM(lat) AS lat, SUM(tok) AS tok,
           COALESCE(SUM(score), 0) AS sc, COUNT(score) AS nsc, COALESCE(SUM(up), 0) AS up, COUNT(up) AS nup,
           COALESCE(SUM(done), 0) AS dn, COUNT(done) AS ndn, COALESCE(SUM(cost), 0) AS cst,
           COUNT(cost) AS ncst"""
_OVER_USERS = """COUNT(*),
       SUM(n), SUM(n * n),
       SUM(err), SUM(err * err), SUM(err * n),
       SUM(lat), SUM(lat * lat), SUM(lat * n),
       SUM(sc), SUM(nsc), SUM(sc * sc), SUM(nsc * nsc), SUM(sc * nsc),
       SUM(up), SUM(nup), SUM(up * up), SUM(nup * nup), SUM(up * nup),
       SUM(dn), SUM(ndn), SUM(dn * dn), SUM(ndn * ndn), SUM(dn * ndn),
       SUM(tok), SUM(tok * tok), SUM(tok * n)"""

# the decision: per user, then per variant (users are grouped by the unit column alone so the planner can use
# its statistics and hash the groups instead of sorting a million rows)
_SQL = f"""
WITH {_FEEDBACK},
per_request AS (SELECT i.variant AS v, i.unit AS u, {_REQUEST}),
per_user AS (SELECT v, u, {_PER_GROUP} FROM per_request GROUP BY v, u)
SELECT v, {_OVER_USERS}, SUM(cst), SUM(ncst) FROM per_user GROUP BY v
"""

# the same figures at BUCKETS points in time: per (user, bucket), running sums per user (a window), each user's
# running sums counted in every snapshot from their bucket until their next active one. Over more than
# SERIES_ROWS interactions only a random share of users is drawn (units are uniform hex hashes: unit < $7).
_SERIES_SQL = f"""
WITH {_FEEDBACK},
per_request AS (SELECT i.variant AS v, i.unit AS u, CAST(FLOOR((i.ts - $3) / $5) AS INTEGER) AS b, {_REQUEST}
                AND i.unit < $7),
per_bucket AS (SELECT v, u, b, {_PER_GROUP} FROM per_request GROUP BY v, u, b),
running AS (
    SELECT v, u, b, LEAD(b) OVER (PARTITION BY v, u ORDER BY b) AS nb,
           SUM(n) OVER w AS n, SUM(err) OVER w AS err, SUM(lat) OVER w AS lat, SUM(tok) OVER w AS tok,
           SUM(sc) OVER w AS sc, SUM(nsc) OVER w AS nsc, SUM(up) OVER w AS up, SUM(nup) OVER w AS nup,
           SUM(dn) OVER w AS dn, SUM(ndn) OVER w AS ndn
      FROM per_bucket WINDOW w AS (PARTITION BY v, u ORDER BY b ROWS UNBOUNDED PRECEDING)
)
SELECT v, b, COALESCE(nb, $6) AS nb, {_OVER_USERS}
  FROM running GROUP BY v, b, COALESCE(nb, $6)
"""

_LATENCY_SQL = """
SELECT variant, CAST(FLOOR(LN(CASE WHEN latency_ms > 0.01 THEN latency_ms ELSE 0.01 END) * 20) AS INTEGER) AS k,
       COUNT(*)
  FROM interactions i WHERE route = $1 AND experiment = $2 AND role = 'primary' AND ts >= $3 AND ts < $4 CLIENT
 GROUP BY variant, CAST(FLOOR(LN(CASE WHEN latency_ms > 0.01 THEN latency_ms ELSE 0.01 END) * 20) AS INTEGER)
"""

Sums = tuple[int, float, float, float, float, float]  # users, x, y, xx, yy, xy


@dataclass
class VariantData:
    since: float
    until: float
    final: dict[str, dict[str, Sums]]  # variant -> metric -> Sums over the whole window
    times: list[float] = field(default_factory=list)  # the end of each snapshot's bucket (with the series)
    snapshots: list[dict[str, dict[str, Sums]]] = field(default_factory=list)  # cumulative, per bucket
    series_share: float = 1.0  # the share of users the series was drawn from
    latency_quantiles: dict[str, dict[str, float]] = field(default_factory=dict)  # variant -> p50/p95 ms
    cost: dict[str, tuple[float, int]] = field(default_factory=dict)  # variant -> (USD, requests with a cost)


def _metric_sums(users: int, r: Sequence[float]) -> dict[str, Sums]:
    n, nn = r[0], r[1]
    out: dict[str, Sums] = {"requests": (users, n, float(users), nn, float(users), n)}
    # error_rate, latency and tokens are per request: y = requests (n); the rest have their own y
    out["error_rate"] = (users, r[2], n, r[3], nn, r[4])
    out["latency"] = (users, r[5], n, r[6], nn, r[7])
    for i, name in enumerate(("feedback_score", "thumbs_up", "task_completed")):
        x, y, xx, yy, xy = r[8 + 5 * i : 13 + 5 * i]
        out[name] = (users, x, y, xx, yy, xy)
    out["tokens"] = (users, r[23], n, r[24], nn, r[25])
    return out


async def variant_sums(
    store: Store,
    route: str,
    experiment: str,
    *,
    since: float,
    until: float,
    series: bool = False,
    max_rows: int = SERIES_ROWS,
    client: str | None = None,
    on_query: Callable[[], None] = lambda: None,
) -> VariantData:
    """The per-user sums of every variant over [since, until); with ``series`` also at ``BUCKETS`` points;
    with ``client`` only that named client's interactions. ``on_query`` is called as each query completes
    (``queries(series)`` in all: a command's progress)."""
    only = (client,) if client is not None else ()

    async def counted(rows: Awaitable[Any]) -> Any:
        found = await rows
        on_query()
        return found

    async def latency_then_series() -> tuple[dict[str, dict[int, int]], tuple[float, list[tuple[Any, ...]]]]:
        hist: dict[str, dict[int, int]] = {}
        latency = store.fetch(_only(_LATENCY_SQL, client, 5), route, experiment, since, until, *only)
        for v, k, count in await counted(latency):
            hist.setdefault(v, {})[int(k)] = int(count)
        if not series:
            return hist, (1.0, [])
        requests = sum(sum(h.values()) for h in hist.values())  # the series' sample depends on it
        return hist, await counted(_series_rows(store, route, experiment, since, until, requests, max_rows, client))

    # the decision's query beside the others (PostgreSQL: the pool's two connections, two cores)
    rows, (hist, (share, series_rows)) = await asyncio.gather(
        counted(store.fetch(_only(_SQL, client, 5), route, experiment, since, until, *only)), latency_then_series()
    )
    final = {v: _metric_sums(int(users), [float(x or 0) for x in figures]) for v, users, *figures in rows}
    data = VariantData(since, until, final)
    data.cost = {r[0]: (float(r[-2] or 0), int(r[-1] or 0)) for r in rows}
    data.latency_quantiles = {v: _quantiles(h) for v, h in hist.items()}
    if series:
        _snapshots(data, share, series_rows)
    return data


def queries(series: bool) -> int:
    """How many queries ``variant_sums`` runs."""
    return 3 if series else 2


def _only(sql: str, client: str | None, arg: int) -> str:
    """The query with its interactions limited to one named client (parameter ``$arg``), or not limited."""
    return sql.replace(" CLIENT", "" if client is None else f" AND i.client = ${arg}")


async def _series_rows(
    store: Store,
    route: str,
    experiment: str,
    since: float,
    until: float,
    requests: int,
    max_rows: int,
    client: str | None,
) -> tuple[float, list[tuple[Any, ...]]]:
    """(the share of users drawn, the series query's rows): at most about ``max_rows`` of ``requests``."""
    width = max((until - since) / BUCKETS, 1e-6)
    share = min(1.0, max_rows / requests) if requests else 1.0
    below = "g" if share >= 1.0 else f"{min(int(share * 16**6), 16**6 - 1):06x}"  # every hex unit is below "g"
    only = (client,) if client is not None else ()
    sql = _only(_SERIES_SQL, client, 8)
    rows = await store.fetch(sql, route, experiment, since, until, width, BUCKETS, below, *only)
    return (1.0 if share >= 1.0 else int(below, 16) / 16**6), rows


def _snapshots(data: VariantData, share: float, rows: list[tuple[Any, ...]]) -> None:
    width = max((data.until - data.since) / BUCKETS, 1e-6)
    acc: list[dict[str, list[float]]] = [{} for _ in range(BUCKETS)]
    for v, b, nb, users, *figures in rows:
        start, end = min(int(b), BUCKETS - 1), min(int(nb), BUCKETS)
        for k in range(start, max(end, start + 1)):
            cur = acc[k].setdefault(v, [0.0] * 27)
            cur[0] += users
            for i, value in enumerate(figures):
                cur[i + 1] += float(value or 0)
    data.series_share = share
    data.snapshots = [{v: _metric_sums(int(vals[0]), vals[1:]) for v, vals in bucket.items()} for bucket in acc]
    data.times = [data.since + width * (k + 1) for k in range(BUCKETS)]


def _quantiles(hist: dict[int, int]) -> dict[str, float]:
    """p50 and p95 from a histogram of ln(latency) in bins of 1/20 (about 5 % wide; the bin's middle)."""
    total = sum(hist.values())
    out, seen = {}, 0
    wanted = [("p50", 0.5), ("p95", 0.95)]
    for k in sorted(hist):
        seen += hist[k]
        while wanted and seen >= wanted[0][1] * total:
            name, _ = wanted.pop(0)
            out[name] = round(math.exp((k + 0.5) / 20), 3)
    return out


_SHADOW_SQL = """
SELECT COUNT(*), AVG(similarity),
       AVG(CASE WHEN outcome IN ('upstream_error', 'timeout') OR status >= 500 THEN 1.0 ELSE 0.0 END)
  FROM interactions WHERE route = $1 AND upstream = $2 AND role = 'shadow' AND ts >= $3
   AND outcome NOT IN ('dropped', 'client_cancelled', 'shutdown_aborted')
"""


async def shadow_stats(store: Store, route: str, upstream: str, since: float) -> tuple[int, float, float]:
    """(comparisons, mean agreement, error rate) of ``upstream`` mirrored on ``route`` since ``since``."""
    rows = await store.fetch(_SHADOW_SQL, route, upstream, since)
    n, agreement, errors = rows[0] if rows else (0, None, None)
    return int(n or 0), float(agreement or 0.0), float(errors or 0.0)
