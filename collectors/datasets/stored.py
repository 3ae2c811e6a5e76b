"""Dataset versions as rows in the store, beside the files: what every replica's metrics read
(``dataset_examples``, ``dataset_version_timestamp_seconds``, ``dataset_pending``).

Usage::

    await record_version(store, manifest, created=time.time())   # after a version was published
    await latest_versions(store)                                  # {"support": ("v0004", 1733390000.0, 812)}
    await pending(store, "support-bot", after=1733390000.0)       # approved since that version was built
"""

from __future__ import annotations

from typing import Any

from collectors.store.base import Store

_RECORD = (
    "INSERT INTO dataset_versions (name, version, created_at, examples, sha256, parent) "
    "VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (name, version) DO NOTHING"
)


async def record_version(store: Store, manifest: dict[str, Any], *, created: float) -> None:
    args = (manifest["name"], manifest["version"], created, int(manifest["counts"]["examples"]), manifest["sha256"])
    await store.execute(_RECORD, *args, manifest.get("parent"))


async def latest_versions(store: Store) -> dict[str, tuple[str, float, int]]:
    """name -> (version, created_at, examples) of each dataset's newest version."""
    rows = await store.fetch("SELECT name, version, created_at, examples FROM dataset_versions ORDER BY name, version")
    return {str(name): (str(version), float(created), int(n)) for name, version, created, n in rows}


async def pending(store: Store, route: str, *, after: float | None) -> int:
    """Approved review items of ``route`` decided after ``after`` (the latest version's time; None: ever)."""
    sql = "SELECT COUNT(*) FROM review_items WHERE route = $1 AND status = 'approved'"
    rows = (
        await store.fetch(sql + " AND decided_at > $2", route, after)
        if after is not None
        else await store.fetch(sql, route)
    )
    return int(rows[0][0])
