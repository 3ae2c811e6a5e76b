"""Stored rollouts: one state row per route (what every replica serves) and the audit trail of transitions.

A state row holds the plan as it was when the rollout started (JSON), so a config edit in the middle of a
rollout cannot change what a step means. ``save`` writes the new state and its audit row in one
transaction, and only if the row still holds the state it was read in (``expect``): two writers (the
controller and a person at the CLI) can never both apply a transition from the same state.

Usage::

    row = await load(store, "support-bot")
    ok = await save(store, new_row, expect=row, audit=Audit(...))
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import orjson

from collectors.store.base import Store


@dataclass(frozen=True)
class RolloutRow:
    route: str
    plan: dict[str, Any]
    phase: str
    step: int
    since: float
    started_at: float
    resume: str
    reason: str
    updated_at: float


@dataclass(frozen=True)
class Audit:
    route: str
    ts: float
    actor: str  # "controller" or the person's name
    from_phase: str
    from_percent: int | None
    to_phase: str
    to_percent: int | None
    reason: str
    figures: dict[str, Any]


_COLUMNS = "route, plan, phase, step, since, started_at, resume, reason, updated_at"


def _row(r: tuple[Any, ...]) -> RolloutRow:
    return RolloutRow(r[0], orjson.loads(r[1]), r[2], int(r[3]), float(r[4]), float(r[5]), r[6], r[7], float(r[8]))


async def load_all(store: Store) -> list[RolloutRow]:
    return [_row(r) for r in await store.fetch(f"SELECT {_COLUMNS} FROM rollout_state ORDER BY route")]


async def load(store: Store, route: str) -> RolloutRow | None:
    rows = await store.fetch(f"SELECT {_COLUMNS} FROM rollout_state WHERE route = $1", route)
    return _row(rows[0]) if rows else None


def _values(row: RolloutRow) -> tuple[Any, ...]:
    return (row.route, orjson.dumps(row.plan).decode(), row.phase, row.step, row.since, row.started_at,
            row.resume, row.reason, row.updated_at)  # fmt: skip


# the audit row is written only when the state row now holds this very transition (same transaction)
_AUDIT = (
    "INSERT INTO rollout_audit (route, ts, actor, from_phase, from_percent, to_phase, to_percent, reason, figures) "
    "SELECT CAST($1 AS TEXT), CAST($2 AS DOUBLE PRECISION), CAST($3 AS TEXT), CAST($4 AS TEXT), "
    "CAST($5 AS INTEGER), CAST($6 AS TEXT), CAST($7 AS INTEGER), CAST($8 AS TEXT), CAST($9 AS TEXT) "
    "FROM rollout_state WHERE route = $1 AND phase = $6 AND updated_at = CAST($10 AS DOUBLE PRECISION)"
)


async def save(store: Store, row: RolloutRow, *, expect: RolloutRow | None, audit: Audit) -> bool:
    """Write ``row`` and its audit in one transaction if the stored state is still ``expect`` (None: no row);
    False when someone else moved first."""
    if expect is None:
        write = (
            f"INSERT INTO rollout_state ({_COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9) "
            "ON CONFLICT (route) DO NOTHING",
            _values(row),
        )
    else:
        write = (
            "UPDATE rollout_state SET plan = $2, phase = $3, step = $4, since = $5, started_at = $6, resume = $7, "
            "reason = $8, updated_at = $9 WHERE route = $1 AND phase = $10 AND step = $11 AND updated_at = $12",
            (*_values(row), expect.phase, expect.step, expect.updated_at),
        )
    a = audit
    values = (a.route, a.ts, a.actor, a.from_phase, a.from_percent, a.to_phase, a.to_percent, a.reason,
              orjson.dumps(a.figures).decode(), row.updated_at)  # fmt: skip
    changed = await store.transact([write, (_AUDIT, values)])
    return changed[0] == 1


async def delete(store: Store, route: str) -> None:
    await store.execute("DELETE FROM rollout_state WHERE route = $1", route)


async def audit_log(store: Store, route: str, limit: int = 50) -> list[Audit]:
    rows = await store.fetch(
        "SELECT route, ts, actor, from_phase, from_percent, to_phase, to_percent, reason, figures FROM rollout_audit "
        "WHERE route = $1 ORDER BY ts DESC, id DESC LIMIT $2",
        route,
        limit,
    )
    return [Audit(*(*r[:8], orjson.loads(r[8]))) for r in rows]


async def transition_counts(store: Store) -> list[tuple[str, str, int]]:
    """(route, to_phase, count) for ``turnout_rollout_transitions_total``."""
    rows = await store.fetch("SELECT route, to_phase, COUNT(*) FROM rollout_audit GROUP BY route, to_phase")
    return [(r[0], r[1], int(r[2])) for r in rows]
