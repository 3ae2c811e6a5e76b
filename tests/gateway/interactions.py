"""Read what a served gateway hands its sink: every finished ``Interaction`` (primaries and shadows), in order.

Usage: ``seen = tap(served_gateway)``; make requests; ``seen[-1].extra["attempts"]``. The served app was
created with a ``RecordingSink`` (``tests/harness.py``), the real sink that also keeps a copy of each
interaction from the moment ``tap`` is called.
"""

from __future__ import annotations

from collectors.record import Interaction
from gateway.runtime import Gateway
from tests.harness import Served


def gateway_of(served: Served) -> Gateway:
    """The ``Gateway`` behind an in-thread served app (from uvicorn's lifespan state)."""
    return served.server.lifespan.state["gateway"]  # type: ignore[attr-defined,no-any-return]


def tap(served: Served) -> list[Interaction]:
    seen: list[Interaction] = []
    served.sink.seen = seen
    return seen
