"""After a bench run: every call a capturing Turnout subject answered is in its store exactly once (LD-1).

The gateway's own count of finished calls (``turnout_requests_total``, by role, every status: answered,
failed, cancelled when wrk stops mid-request) is compared with the rows of its SQLite store, once the
capture loader has caught up. Duplicated request ids are counted too.

Usage: ``line = ledger.check(subject, store_path)`` before the subject is stopped.
"""

from __future__ import annotations

import contextlib
import sqlite3
import time
import urllib.request
from pathlib import Path

from bench.subjects import Subject

CATCH_UP_S = 120.0


def answered(url: str) -> dict[str, int]:
    """Finished calls by role, from the gateway's /metrics."""
    text = urllib.request.urlopen(url + "/metrics", timeout=10).read().decode()
    counts: dict[str, int] = {}
    for line in text.splitlines():
        if line.startswith("turnout_requests_total{"):
            labels, value = line.rsplit(" ", 1)
            role = labels.split('role="', 1)[1].split('"', 1)[0]
            counts[role] = counts.get(role, 0) + int(float(value))
    return counts


def stored(db: Path) -> tuple[dict[str, int], int]:
    """Rows by role, and how many request ids appear more than once."""
    with contextlib.closing(sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=10)) as conn:
        rows = dict(conn.execute("SELECT role, count(*) FROM interactions GROUP BY role").fetchall())
        twice = conn.execute(
            "SELECT count(*) FROM (SELECT request_id FROM interactions GROUP BY request_id HAVING count(*) > 1)"
        ).fetchone()[0]
    return rows, twice


def check(subject: Subject, db: Path) -> str:
    """One report line; waits (bounded) for the loader to store what the gateway finished."""
    deadline = time.monotonic() + CATCH_UP_S
    while True:
        want = answered(subject.url)
        have, twice = stored(db)
        if have == want or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    verdict = "every call stored once" if have == want and not twice else "MISMATCH"
    parts = ", ".join(f"{role}: {want.get(role, 0):,} answered, {have.get(role, 0):,} stored" for role in sorted(want))
    return f"{subject.name}: {parts}; {twice} duplicated ids: {verdict}"
