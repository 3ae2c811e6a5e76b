"""Graceful shutdown: readiness fails at SIGTERM, open calls drain up to ``server.drain_s``, then are cut.

uvicorn owns SIGTERM (it stops accepting, lets responses finish, then runs the lifespan shutdown).
``hook_sigterm`` chains a handler in front of uvicorn's: it turns readiness off at once and starts the drain
clock, then hands the signal on. Calls still open when the clock runs out are aborted: a stream gets a
terminal error event, a call still waiting for its upstream a 503, and each is recorded as
``shutdown_aborted``. uvicorn's own graceful timeout is set a little longer, as a backstop.

Usage (in the lifespan)::

    restore = hook_sigterm(drain, on_term=lambda: setattr(gw, "ready", False), drain_s=lambda: 25.0)
    ...
    restore()
"""

from __future__ import annotations

import asyncio
import logging
import signal
import threading
from collections.abc import Callable
from types import FrameType
from typing import Any, Protocol

log = logging.getLogger(__name__)


class Abortable(Protocol):
    def abort_for_shutdown(self) -> None: ...


class Drain:
    def __init__(self) -> None:
        self.draining = False
        self.calls: set[Abortable] = set()
        self._timer: asyncio.TimerHandle | None = None

    def begin(self, drain_s: float) -> None:
        """Start draining (on the event loop); open calls are aborted after ``drain_s`` seconds."""
        if self.draining:
            return
        self.draining = True
        log.info("draining %d open call(s) for up to %.1fs", len(self.calls), drain_s)
        self._timer = asyncio.get_running_loop().call_later(drain_s, self.abort_open)

    def abort_open(self) -> None:
        if self.calls:
            log.warning("drain bound reached: aborting %d open call(s)", len(self.calls))
        for call in list(self.calls):
            call.abort_for_shutdown()

    def close(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None


def hook_sigterm(drain: Drain, *, on_term: Callable[[], None], drain_s: Callable[[], float]) -> Callable[[], None]:
    """Chain a SIGTERM handler before the current one (uvicorn's); returns a function that unhooks it.

    Signals can only be handled in the main thread: elsewhere (an in-thread test server) this does nothing.
    """
    if threading.current_thread() is not threading.main_thread():
        return lambda: None
    loop = asyncio.get_running_loop()
    previous = signal.getsignal(signal.SIGTERM)

    def handler(sig: int, frame: FrameType | None) -> None:
        on_term()
        loop.call_soon_threadsafe(drain.begin, drain_s())
        if callable(previous):
            previous(sig, frame)

    signal.signal(signal.SIGTERM, handler)

    def restore() -> None:
        if signal.getsignal(signal.SIGTERM) is handler:
            signal.signal(signal.SIGTERM, _as_handler(previous))

    return restore


def _as_handler(value: Any) -> Any:
    return signal.SIG_DFL if value is None else value
