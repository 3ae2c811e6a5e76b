"""The batch writer: drains journals into the store in bounded batches (in the loader process, off the
serving process: see ``collectors/spool/loader_child.py``).

It tails the serving process's journal (and first replays journals left by processes that died), writes each
batch in one transaction and only then moves the journal checkpoint, so nothing leaves the spool before it is
committed. While the store is unavailable the writer backs off and retries, the journal keeps spooling (up to
its bound) and ``degraded`` is true. A batch the store rejects for its content is split until the bad row is
alone; that row goes to the dead-letter file, counted and logged by id (a journal line that cannot be read
at all goes there too, as text). Once caught up it polls the journal
every ``linger_s`` (the serving process sends no per-append signal), so one batch carries many interactions;
while nothing comes the interval doubles up to ``IDLE_POLL_S`` (each wake-up of an idle loader costs ~0.5 ms).
What it did goes out through ``publish`` as a ``Report`` after each batch or change of state.

Usage::

    writer = Writer(store, Cursor(journal_dir, owned=True), dead_letter=state_dir / "dead-letter.jsonl",
                    publish=lambda report: ...)
    await writer.start()
    await writer.stop(drain_s=10)           # drains what it can
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import os
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import msgspec
import orjson

from collectors.spool.journal import Cursor, adopt, release
from collectors.spool.report import Report
from collectors.store.base import FeedbackRow, InteractionRow, Store, StoreUnavailable

log = logging.getLogger(__name__)

BATCH_LINES = 500
BATCH_BYTES = 512 << 10
LINGER_S = 0.05  # once caught up, look at the journal again after this long
IDLE_POLL_S = 0.4  # the longest wait between looks at a journal where nothing came
ADOPT_EVERY_S = 2.0  # a journal whose process (and loader) just died is picked up within this
BACKOFF_S = (0.1, 5.0)

Item = InteractionRow | FeedbackRow
# runs after each committed batch, before the journal checkpoint moves (so a crash replays both): the review queue
AfterBatch = Callable[[list[InteractionRow], list[FeedbackRow]], Awaitable[None]]


class _Interaction(msgspec.Struct, tag_field="k", tag="i"):
    """The fields of an interaction line that become columns; its bodies (``request``, ``response``) are
    skipped without being built, still checked as JSON."""

    request_id: Any
    ts: Any
    route: Any
    experiment: Any
    variant: Any
    role: Any
    upstream: Any
    endpoint: Any
    status: Any
    outcome: Any
    latency_ms: Any
    parent_id: Any = None
    ttft_ms: Any = None
    stream: Any = None
    response_id: Any = None
    usage: Any = None
    extra: Any = None
    client: Any = None
    tags: Any = None
    cost_usd: Any = None
    caller: Any = None


class _Feedback(msgspec.Struct, tag_field="k", tag="f"):
    feedback_id: Any
    ts: Any
    request_id: Any = None
    response_id: Any = None
    score: Any = None
    label: Any = None
    task_completed: Any = None
    caller: Any = None


# orjson.loads built every message of the bodies only to drop them: 9 -> 3.5 µs a 1.6 KB line
_lines = msgspec.json.Decoder(_Interaction | _Feedback)


def decode(line: bytes | memoryview) -> Item:
    """One journal line as a store row; raises ValueError (``msgspec.DecodeError``: not JSON, not UTF-8, an
    unknown kind, a field missing) or TypeError for a line that is not one."""
    data = _lines.decode(line)
    record = str(line, "utf-8")
    if isinstance(data, _Interaction):
        request_id, role = str(data.request_id), str(data.role)
        extra = data.extra or {}
        return InteractionRow(
            request_id,
            float(data.ts),
            str(data.route),
            str(data.experiment),
            str(data.variant),
            role,
            data.parent_id,
            str(data.upstream),
            str(data.endpoint),
            int(data.status),
            str(data.outcome),
            float(data.latency_ms),
            None if data.ttft_ms is None else float(data.ttft_ms),
            bool(data.stream),
            # feedback finds only primaries by response id: a shadow's (in its record) stays out of that index
            data.response_id if role == "primary" else None,
            record,
            _text(extra.get("unit")) or request_id,  # no sticky key: the request is its own unit
            _number((data.usage or {}).get("total_tokens")),
            _number((extra.get("comparison") or {}).get("similarity")),
            _text(data.client),
            orjson.dumps(data.tags).decode() if data.tags else None,
            _number(data.cost_usd),
            data.caller,
        )
    done = data.task_completed
    return FeedbackRow(
        str(data.feedback_id),
        float(data.ts),
        data.request_id,
        data.response_id,
        None if data.score is None else float(data.score),
        data.label,
        record,
        int(done) if isinstance(done, bool) else None,
        data.caller,
    )


def _text(value: Any) -> str | None:
    return value if isinstance(value, str) else None


def _number(value: Any) -> float | None:
    ok = isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)
    return float(value) if ok else None


def _id(item: Item) -> str:
    return item.request_id if isinstance(item, InteractionRow) else f"feedback {item.feedback_id}"


class Writer:
    def __init__(
        self,
        store: Store,
        own: Cursor,
        *,
        dead_letter: Path,
        publish: Callable[[Report], None],
        batch_lines: int = BATCH_LINES,
        linger_s: float = LINGER_S,
        after: AfterBatch | None = None,
    ) -> None:
        self.store = store
        self.own = own
        self.dead_letter = dead_letter
        self.publish = publish
        self.batch_lines = batch_lines
        self.linger_s = linger_s
        self.after = after
        self.degraded = True  # until the store was opened once
        self._report = Report(degraded=True, adopted=0)
        self._published: tuple[bool, int] | None = None
        self._wake = asyncio.Event()
        self._stopping = False
        self._task: asyncio.Task[None] | None = None
        self._adopted: list[tuple[Cursor, int]] = []
        self._last_adopt = 0.0
        self._backoff = BACKOFF_S[0]

    async def start(self) -> None:
        """Adopt orphaned journals, try the store once (so a healthy start is not "degraded"), report, run."""
        self._adopt()
        try:
            await self._open()
        except Exception as exc:  # a store problem never stops the gateway from serving
            log.error("store unavailable at start, spooling in the journal: %s: %s", type(exc).__name__, exc)
        self._publish()
        self._task = asyncio.create_task(self._run(), name="capture-writer")

    async def _open(self) -> None:
        await self.store.open()
        if self.degraded:
            log.info("store %s available", self.store.name)
        self.degraded = False

    def _adopt(self) -> None:
        self._last_adopt = time.monotonic()
        found = adopt(self.own.directory.parent, self.own.directory)
        if found:
            log.info("replaying %d journal(s) left by earlier processes", len(found))
        self._adopted += found

    def _publish(self) -> None:
        """Send what changed since the last report (nothing when nothing did)."""
        report, state = self._report, (self.degraded, len(self._adopted))
        if state == self._published and not report.stored and not report.dropped:
            return
        report.degraded, report.adopted = state
        self._report = Report(*state)
        self._published = state
        self.publish(report)

    async def _run(self) -> None:
        wait = self.linger_s
        while True:
            try:
                progressed = await self._step()
            except StoreUnavailable as exc:
                if not self.degraded:
                    log.error("store unavailable, spooling in the journal: %s", exc)
                self.degraded = True
                self._publish()
                if self._stopping:
                    return  # the journal keeps the rest for the next start
                await self._pause(self._backoff)
                self._backoff = min(self._backoff * 2, BACKOFF_S[1])
                continue
            except Exception:
                log.exception("capture writer step failed; retrying")
                if self._stopping:
                    return
                await self._pause(self._backoff)
                self._backoff = min(self._backoff * 2, BACKOFF_S[1])
                continue
            self._backoff = BACKOFF_S[0]
            self._publish()
            if progressed == "more":
                continue
            if self._stopping:
                if progressed == "none":
                    return
                continue
            wait = self.linger_s if progressed != "none" else min(wait * 2, IDLE_POLL_S)
            await self._pause(wait)
            if time.monotonic() - self._last_adopt > ADOPT_EVERY_S:
                self._adopt()

    async def _pause(self, seconds: float) -> None:
        """Sleep, cut short by ``stop`` (``asyncio.timeout``: 3.11's ``wait_for`` can swallow a cancellation)."""
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(seconds):
                await self._wake.wait()

    async def _step(self) -> str:
        """Write one batch (adopted journals first): "more" when a full batch was written (a backlog),
        "caught-up" when what was there fitted in one, "none" when there was nothing to write."""
        if self.degraded:
            await self._open()
        while self._adopted:
            cursor, fd = self._adopted[0]
            if await self._batch(cursor) != "none":
                return "more"
            if cursor.torn:
                log.error("journal %s ended in a partial line (a write cut short)", cursor.directory)
                self._drop("journal_error")
            release(cursor, fd)
            self._adopted.pop(0)
        return await self._batch(self.own)

    def _drop(self, reason: str) -> None:
        self._report.dropped[reason] = self._report.dropped.get(reason, 0) + 1

    async def _batch(self, cursor: Cursor) -> str:
        lines, end = cursor.read(BATCH_BYTES, self.batch_lines)
        if not lines:
            return "none"
        items: list[Item] = []
        for line in lines:
            try:
                items.append(decode(line))
            except (ValueError, TypeError) as exc:  # UnicodeDecodeError is a ValueError
                log.error("journal %s: unreadable line of %d bytes near %s", cursor.directory, len(line), end)
                self._drop("journal_error")
                self._keep({"error": f"unreadable journal line: {exc}"[:2000], "line": str(line, "utf-8", "replace")})
        await self._write(items)
        await self._after(items)
        cursor.commit(end)
        report = self._report
        if cursor is self.own:
            report.own = end
            report.own_lines += len(lines)
        report.stored += len(lines)
        for item in items:
            if isinstance(item, InteractionRow):
                report.captured[item.route] = report.captured.get(item.route, 0) + 1
        size = sum(len(x) + 1 for x in lines)
        return "more" if len(lines) >= self.batch_lines or size >= BATCH_BYTES // 2 else "caught-up"

    async def _write(self, items: list[Item]) -> None:
        """Write ``items``; content errors split the batch until each bad item is alone and dead-lettered."""
        interactions = [i for i in items if isinstance(i, InteractionRow)]
        feedback = [i for i in items if isinstance(i, FeedbackRow)]
        try:
            claimed = await self.store.write(interactions, feedback)
        except StoreUnavailable:
            raise
        except Exception as exc:
            if len(items) == 1:
                self._dead_letter(items[0], exc)
                return
            half = len(items) // 2
            await self._write(items[:half])
            await self._write(items[half:])
            return
        self._report.claimed += claimed

    async def _after(self, items: list[Item]) -> None:
        """The ``after`` hook on a committed batch: a store outage retries the batch (both steps are idempotent);
        any other failure is logged and counted, never a reason to hold up capture."""
        if self.after is None:
            return
        interactions = [i for i in items if isinstance(i, InteractionRow)]
        feedback = [i for i in items if isinstance(i, FeedbackRow)]
        try:
            await self.after(interactions, feedback)
        except StoreUnavailable:
            raise
        except Exception:
            log.exception("after-batch step failed for %d interactions", len(interactions))
            self._drop("review_error")

    def _dead_letter(self, item: Item, exc: Exception) -> None:
        log.error("store rejected %s (%s); written to %s", _id(item), type(exc).__name__, self.dead_letter)
        self._drop("store_rejected")
        self._keep({"error": f"{type(exc).__name__}: {exc}"[:2000], "record": orjson.loads(item.record)})

    def _keep(self, entry: dict[str, Any]) -> None:
        """Append ``entry`` to the dead-letter file: what the store did not take is kept for a person to see."""
        fd = os.open(self.dead_letter, os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC, 0o600)
        try:
            os.write(fd, orjson.dumps(entry) + b"\n")
        finally:
            os.close(fd)

    async def stop(self, drain_s: float) -> None:
        """Drain what the store takes within ``drain_s`` (not at all while it is unavailable: waiting would only
        delay the shutdown); the rest stays in the journal for the next start."""
        self._stopping = True
        self._wake.set()
        if self._task is None:
            return
        try:
            await asyncio.wait_for(asyncio.shield(self._task), 0 if self.degraded else drain_s)
        except TimeoutError:
            log.warning("capture writer stopped before the journal was stored; the next start replays the rest")
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        self._publish()
        for cursor, fd in self._adopted:
            cursor.close()
            os.close(fd)
        self._adopted.clear()
        self.own.close()
