"""Where interactions and feedback are kept: a ``Store`` chosen by the ``store:`` URL.

Usage: ``store = open_store("sqlite:///turnout.db")`` (a path relative to the working directory;
``sqlite:////abs/path.db`` for an absolute one) or ``open_store("postgresql://user:pw@host/db")``.
"""

from __future__ import annotations

from collectors.store.base import Store


class UnknownStore(ValueError):
    """The store URL names no backend Turnout has."""


def open_store(url: str) -> Store:
    if url.startswith("sqlite://"):
        from collectors.store.sqlite import SQLiteStore

        path = url.removeprefix("sqlite://")
        if not path.startswith("/") or path == "/":
            raise UnknownStore(
                f"sqlite store URL needs a path: sqlite:///relative.db or sqlite:////absolute.db, got {url!r}"
            )
        return SQLiteStore(path[1:])
    if url.startswith(("postgresql://", "postgres://")):
        from collectors.store.postgres import PostgresStore

        return PostgresStore(url)
    raise UnknownStore(f"unknown store URL scheme in {url.split('://')[0]!r}: expected sqlite:// or postgresql://")
