"""Read what a served gateway hands its sink: every finished ``Interaction``, in order.

Usage: ``seen = tap(served_gateway)``; make requests; ``seen[-1].extra["attempts"]``. The tap keeps the real
sink in the path (metrics still count); it only keeps a copy of each interaction.
"""

from __future__ import annotations

from collectors.record import Interaction
from gateway.runtime import Gateway
from tests.harness import Served


def gateway_of(served: Served) -> Gateway:
    """The ``Gateway`` behind an in-thread served app (from uvicorn's lifespan state)."""
    return served.server.lifespan.state["gateway"]  # type: ignore[attr-defined,no-any-return]


class _Tap:
    def __init__(self, inner: object, seen: list[Interaction]) -> None:
        self.inner = inner
        self.seen = seen

    def finish(self, it: Interaction) -> None:
        self.seen.append(it)
        self.inner.finish(it)  # type: ignore[attr-defined]

    def __getattr__(self, name: str) -> object:
        return getattr(self.inner, name)


def tap(served: Served) -> list[Interaction]:
    gw = gateway_of(served)
    seen: list[Interaction] = []
    gw.sink = _Tap(gw.sink, seen)  # type: ignore[assignment]
    return seen
