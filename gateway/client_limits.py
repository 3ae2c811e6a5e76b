"""Per-client request rate (``auth.clients.NAME.rpm``), shared by every worker process of one replica.

Each limited client has a file in ``state_dir/clients/`` holding a ring of its last ``rpm`` admission times,
mapped into memory; ``flock`` serialises the read-modify-write across workers. A request is admitted when the
oldest of the last ``rpm`` admissions is at least 60 s old, so no sliding minute ever holds more than ``rpm``
admissions on one replica. Replicas do not share it: N replicas admit up to N * rpm. A changed ``rpm`` starts a
new ring (its own file; a file is never resized, because another worker may have it mapped).

Usage: ``limiter = RateLimiter(state_dir / "clients")``; ``wait = limiter.admit("billing-app", 600)`` is None
(admitted) or the seconds until a request would be (for ``Retry-After``).
"""

from __future__ import annotations

import fcntl
import hashlib
import mmap
import os
import struct
import time
from pathlib import Path

WINDOW_S = 60.0
_INDEX = struct.Struct("<Q")  # the ring's next slot: the oldest of the last rpm admissions
_SLOT = struct.Struct("<d")  # one admission time (unix seconds)


class RateLimiter:
    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.rings: dict[tuple[str, int], tuple[int, mmap.mmap]] = {}  # (client, rpm) -> (fd, map)

    def _ring(self, client: str, rpm: int) -> tuple[int, mmap.mmap]:
        found = self.rings.get((client, rpm))
        if found is not None:
            return found
        self.directory.mkdir(parents=True, exist_ok=True)
        name = hashlib.sha256(client.encode()).hexdigest()[:24]  # a client name is free text; a file name is not
        fd = os.open(self.directory / f"{name}.{rpm}.ring", os.O_RDWR | os.O_CREAT, 0o600)
        size = _INDEX.size + _SLOT.size * rpm
        fcntl.flock(fd, fcntl.LOCK_EX)
        try:
            if os.fstat(fd).st_size < size:  # new: zeros are admissions long ago
                os.ftruncate(fd, size)
        finally:
            fcntl.flock(fd, fcntl.LOCK_UN)
        ring = self.rings[(client, rpm)] = (fd, mmap.mmap(fd, size))
        return ring

    def admit(self, client: str, rpm: int, now: float | None = None) -> float | None:
        """Take one admission for ``client`` if its last minute has room; else the seconds to wait."""
        fd, ring = self._ring(client, rpm)
        now = time.time() if now is None else now
        fcntl.flock(fd, fcntl.LOCK_EX)
        try:
            (index,) = _INDEX.unpack_from(ring, 0)
            offset = _INDEX.size + _SLOT.size * (index % rpm)
            (oldest,) = _SLOT.unpack_from(ring, offset)
            wait = oldest + WINDOW_S - now
            if wait > 0:
                return wait
            _SLOT.pack_into(ring, offset, now)
            _INDEX.pack_into(ring, 0, (index + 1) % rpm)
            return None
        finally:
            fcntl.flock(fd, fcntl.LOCK_UN)

    def close(self) -> None:
        for fd, ring in self.rings.values():
            ring.close()
            os.close(fd)
        self.rings.clear()
