"""What a scheduled job is: its ``Schedule`` (``every: 6h`` or a cron line), the ``JobContext`` it runs with, and
the ``Job`` itself. Apart from the runner (``gateway/jobs.py``) so that each feature's job builder can name
them without importing the runner, which imports every builder.

Usage: ``Job("drift:support-bot", Schedule.parse("1h"), run)`` where ``async def run(ctx: JobContext)``.
"""

from __future__ import annotations

import datetime as dt
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path

from cronsim import CronSim, CronSimError

from collectors.store.base import Store
from gateway.config import Config, duration_seconds


@dataclass(frozen=True)
class Schedule:
    """``every`` seconds after the last start, or the ticks of a five-field cron line (UTC)."""

    every_s: float | None = None
    cron: str | None = None

    @classmethod
    def parse(cls, text: str | float) -> Schedule:
        """``Schedule.parse("6h")`` or ``Schedule.parse("0 */6 * * *")``; ValueError with the reason."""
        if isinstance(text, int | float) or " " not in str(text).strip():
            seconds = duration_seconds(str(text)) if not isinstance(text, int | float) else float(text)
            if seconds <= 0:
                raise ValueError("a schedule must be longer than 0s")
            return cls(every_s=seconds)
        try:
            CronSim(str(text), dt.datetime.now(dt.UTC))
        except CronSimError as exc:
            raise ValueError(f"invalid cron line {text!r}: {exc}") from None
        return cls(cron=str(text))

    def next_after(self, t: float) -> float:
        """The first tick strictly after ``t`` (unix seconds)."""
        if self.every_s is not None:
            return t + self.every_s
        assert self.cron is not None
        start = dt.datetime.fromtimestamp(t, dt.UTC).replace(microsecond=0)
        return next(CronSim(self.cron, start)).timestamp()

    def due(self, last_started: float | None, now: float) -> bool:
        return last_started is None or self.next_after(last_started) <= now


@dataclass(frozen=True)
class JobContext:
    """What a running job gets: the config generation it was started with, and the open store."""

    config: Config
    config_path: Path
    store: Store
    clock: Callable[[], float] = time.time

    def now(self) -> float:
        return self.clock()


@dataclass(frozen=True)
class Job:
    name: str  # e.g. "eval:support-golden", "dataset:support", "rollout:support-bot"
    schedule: Schedule
    run: Callable[[JobContext], Awaitable[None]] = field(compare=False)
