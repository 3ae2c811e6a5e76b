"""A process admitting requests through a shared ``RateLimiter`` (``test_clients``): in a module of its own, so
each spawned process imports the limiter alone and not the test module's gateway, clients and fixtures (~1.6 s of
CPU each)."""

from __future__ import annotations

import multiprocessing
from pathlib import Path

from gateway.client_limits import RateLimiter


def admit_many(directory: str, n: int, out: multiprocessing.Queue) -> None:  # type: ignore[type-arg]
    limiter = RateLimiter(Path(directory))
    out.put(sum(limiter.admit("shared", 30) is None for _ in range(n)))
    limiter.close()
