"""The models the upstreams say they are: each stored answer's ``model`` and ``system_fingerprint``, kept per
upstream as (model, fingerprint) pairs with when each was first and last seen.

An upstream's current pair is the one seen last; a *change* is a pair the upstream had never answered with
before (so an upstream alternating between two known fingerprints, or rolled back, is not a new change).
The scan reads interactions in stored order from where it stopped (the first one: the last day), less a margin
for late arrivals; pairs keep min/max times, so reading a row twice changes nothing.

Usage::

    await scan(store, now=time.time())            # in the drift job
    for m in await current_models(store): m.upstream, m.model, m.fingerprint, m.changes
"""

from __future__ import annotations

from dataclasses import dataclass

import orjson

from collectors.store.base import Query, Store

POSITION = "upstream_models"
LATE_S = 300.0  # interactions stored up to this long after they arrived are still read
PAGE = 1000
FIRST_SCAN_S = 86400.0  # the first scan reads the last day, not a store's whole history
MAX_LABEL = 128  # model and fingerprint become metric labels: an upstream's odd values are cut


@dataclass(frozen=True)
class UpstreamModel:
    upstream: str
    model: str
    fingerprint: str  # "" when the upstream reports none
    since: float  # first answer with this pair
    changes: int  # pairs this upstream answered with, less one


def reported(record: dict[str, object]) -> tuple[str, str] | None:
    """(model, system_fingerprint) of an answered interaction, None when it has no answer body."""
    response = record.get("response")
    if not isinstance(response, dict) or not isinstance(response.get("model"), str):
        return None
    fingerprint = response.get("system_fingerprint")
    return response["model"][:MAX_LABEL], fingerprint[:MAX_LABEL] if isinstance(fingerprint, str) else ""


async def scan(store: Store, now: float) -> int:
    """Record the pairs of every answer stored since the last scan; returns how many answers were read."""
    rows = await store.fetch("SELECT position FROM scan_positions WHERE name = $1", POSITION)
    since = float(rows[0][0]) - LATE_S if rows else now - FIRST_SCAN_S
    seen: dict[tuple[str, str, str], list[float]] = {}
    after: tuple[float, str] | None = None
    read, last = 0, float(rows[0][0]) if rows else 0.0
    while True:
        page = await store.page(Query(since=since), after, PAGE)
        for row in page:
            pair = reported(orjson.loads(row.record))
            if pair is not None:
                span = seen.setdefault((row.upstream, *pair), [row.ts, row.ts])
                span[0], span[1] = min(span[0], row.ts), max(span[1], row.ts)
                read += 1
            last = max(last, row.ts)
        if len(page) < PAGE:
            break
        after = (page[-1].ts, page[-1].request_id)
    await _merge(store, seen, min(last, now))
    return read


async def _merge(store: Store, seen: dict[tuple[str, str, str], list[float]], position: float) -> None:
    rows = await store.fetch("SELECT upstream, model, fingerprint, first_seen, last_seen FROM upstream_models")
    known = {(str(u), str(m), str(f)): (float(a), float(b)) for u, m, f, a, b in rows}
    statements: list[tuple[str, tuple[object, ...]]] = []
    for key, (first, last) in seen.items():
        if key not in known:
            statements.append(
                ("INSERT INTO upstream_models (upstream, model, fingerprint, first_seen, last_seen) "
                 "VALUES ($1, $2, $3, $4, $5)", (*key, first, last))
            )  # fmt: skip
        elif first < known[key][0] or last > known[key][1]:
            statements.append(
                ("UPDATE upstream_models SET first_seen = $4, last_seen = $5 "
                 "WHERE upstream = $1 AND model = $2 AND fingerprint = $3",
                 (*key, min(first, known[key][0]), max(last, known[key][1])))
            )  # fmt: skip
    statements.append(("DELETE FROM scan_positions WHERE name = $1", (POSITION,)))
    statements.append(("INSERT INTO scan_positions (name, position) VALUES ($1, $2)", (POSITION, position)))
    await store.transact(statements)


async def current_models(store: Store) -> list[UpstreamModel]:
    """Each upstream's latest (model, fingerprint), and how many times it changed to a new one."""
    rows = await store.fetch(
        "SELECT upstream, model, fingerprint, first_seen, last_seen FROM upstream_models ORDER BY upstream, last_seen"
    )
    latest: dict[str, tuple[str, str, float]] = {}
    pairs: dict[str, int] = {}
    for upstream, model, fingerprint, first, _ in rows:
        latest[str(upstream)] = (str(model), str(fingerprint), float(first))
        pairs[str(upstream)] = pairs.get(str(upstream), 0) + 1
    return [UpstreamModel(u, m, f, since, pairs[u] - 1) for u, (m, f, since) in sorted(latest.items())]
