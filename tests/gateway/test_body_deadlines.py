"""``BodyDeadlines``: one timer for every body read of a process, each read cancelled at its own deadline as
``TimeoutError``; a read in time, or a cancel from elsewhere (shutdown), is left as it was. The served 408 is in
``test_limits`` (a real process and a slow client)."""

from __future__ import annotations

import asyncio
import time

import pytest

from gateway.body_limits import BodyDeadlines


async def read_forever(deadlines: BodyDeadlines, timeout_s: float) -> float:
    started = time.monotonic()
    with pytest.raises(TimeoutError), deadlines.watch(timeout_s):
        await asyncio.Event().wait()
    return time.monotonic() - started


async def test_each_read_ends_at_its_own_deadline_and_nothing_stays_watched() -> None:
    deadlines = BodyDeadlines()
    slow = asyncio.gather(*(read_forever(deadlines, s) for s in (0.3, 0.1, 0.2)))
    with deadlines.watch(0.05):  # a read in time: untouched, its deadline passes unseen
        await asyncio.sleep(0.01)
    took = await slow
    for took_s, timeout_s in zip(took, (0.3, 0.1, 0.2), strict=True):
        assert timeout_s - 0.01 <= took_s < timeout_s + 0.25, took  # loop timers may fire a hair early
    assert not deadlines.reading
    await asyncio.sleep(0.1)  # the task that read in time was never cancelled late
    assert asyncio.current_task().cancelling() == 0  # type: ignore[union-attr]


async def test_a_shorter_timeout_after_a_longer_one_is_not_kept_waiting() -> None:
    deadlines = BodyDeadlines()
    long = asyncio.ensure_future(read_forever(deadlines, 5.0))
    await asyncio.sleep(0)
    assert await read_forever(deadlines, 0.1) < 1.0  # the timer was armed for 5 s: re-armed for 0.1
    long.cancel()
    with pytest.raises(asyncio.CancelledError):
        await long


async def test_a_cancel_from_elsewhere_stays_a_cancel() -> None:
    deadlines = BodyDeadlines()

    async def read() -> None:
        with deadlines.watch(10):
            await asyncio.Event().wait()

    task = asyncio.ensure_future(read())
    await asyncio.sleep(0.01)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert not deadlines.reading
