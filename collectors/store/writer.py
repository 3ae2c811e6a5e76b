"""The batch writer: drains journals into the store off the request path, in bounded batches.

One asyncio task tails this process's journal (and first replays journals left by processes that died),
writes each batch in one transaction and only then moves the journal checkpoint, so nothing leaves the
spool before it is committed. While the store is unavailable the writer backs off and retries, the journal
keeps spooling (up to its bound) and ``degraded`` is true. A batch the store rejects for its content is
split until the bad row is alone; that row goes to the dead-letter file, counted and logged by id.

Usage::

    writer = Writer(store, journal, metrics=metrics, dead_letter=state_dir / "dead-letter.jsonl")
    await writer.start(); writer.notify()   # after each append
    await writer.stop(timeout=10)           # drains what it can
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import time
from pathlib import Path
from typing import Any

import orjson

from collectors.journal import Cursor, Journal, release
from collectors.metrics import Metrics
from collectors.store.base import Claimed, FeedbackRow, InteractionRow, Store, StoreUnavailable

log = logging.getLogger(__name__)

BATCH_LINES = 500
BATCH_BYTES = 512 << 10
DECODE_SLICE = 64
LINGER_S = 0.05  # once caught up, wait this long after a wake-up so one batch carries many interactions
ADOPT_EVERY_S = 30.0
BACKOFF_S = (0.1, 5.0)

Item = InteractionRow | FeedbackRow


def decode(line: bytes) -> Item:
    """One journal line as a store row; raises ValueError/KeyError/TypeError for a line that is not one."""
    data = orjson.loads(line)
    record = line.decode()
    if data["k"] == "i":
        return InteractionRow(
            str(data["request_id"]),
            float(data["ts"]),
            str(data["route"]),
            str(data["experiment"]),
            str(data["variant"]),
            str(data["role"]),
            data.get("parent_id"),
            str(data["upstream"]),
            str(data["endpoint"]),
            int(data["status"]),
            str(data["outcome"]),
            float(data["latency_ms"]),
            None if data.get("ttft_ms") is None else float(data["ttft_ms"]),
            bool(data.get("stream")),
            data.get("response_id"),
            record,
        )
    if data["k"] == "f":
        score = data.get("score")
        return FeedbackRow(
            str(data["feedback_id"]),
            float(data["ts"]),
            data.get("request_id"),
            data.get("response_id"),
            None if score is None else float(score),
            data.get("label"),
            record,
        )
    raise ValueError(f"unknown journal record kind {data['k']!r}")


def _id(item: Item) -> str:
    return item.request_id if isinstance(item, InteractionRow) else f"feedback {item.feedback_id}"


class Writer:
    def __init__(
        self,
        store: Store,
        journal: Journal,
        *,
        metrics: Metrics,
        dead_letter: Path,
        batch_lines: int = BATCH_LINES,
        linger_s: float = LINGER_S,
    ) -> None:
        self.store = store
        self.journal = journal
        self.metrics = metrics
        self.dead_letter = dead_letter
        self.batch_lines = batch_lines
        self.linger_s = linger_s
        self.degraded = True  # until the store was opened once
        self.stored = 0  # lines committed by this writer (all journals)
        self._wake = asyncio.Event()
        self._stopping = False
        self._task: asyncio.Task[None] | None = None
        self._own: Cursor | None = None
        self._adopted: list[tuple[Cursor, int]] = []
        self._last_adopt = 0.0
        self._backoff = BACKOFF_S[0]

    async def start(self) -> None:
        """Adopt orphaned journals, try the store once (so a healthy start is not "degraded"), run."""
        self._own = self.journal.cursor()
        self._adopt()
        try:
            await self._open()
        except Exception as exc:  # a store problem never stops the gateway from serving
            log.error("store unavailable at start, spooling in the journal: %s: %s", type(exc).__name__, exc)
        self._task = asyncio.create_task(self._run(), name="capture-writer")

    async def _open(self) -> None:
        await self.store.open()
        if self.degraded:
            log.info("store %s available", self.store.name)
        self.degraded = False

    def notify(self) -> None:
        self._wake.set()

    def _adopt(self) -> None:
        self._last_adopt = time.monotonic()
        found = self.journal.adopt()
        if found:
            log.info("replaying %d journal(s) left by earlier processes", len(found))
        self._adopted += found

    @property
    def idle(self) -> bool:
        """Everything journaled so far is in the store."""
        return not self._adopted and self.journal.pending_bytes == 0

    async def _run(self) -> None:
        while True:
            try:
                progressed = await self._step()
            except StoreUnavailable as exc:
                if not self.degraded:
                    log.error("store unavailable, spooling in the journal: %s", exc)
                self.degraded = True
                await asyncio.sleep(self._backoff)
                self._backoff = min(self._backoff * 2, BACKOFF_S[1])
                continue
            except Exception:
                log.exception("capture writer step failed; retrying")
                await asyncio.sleep(self._backoff)
                self._backoff = min(self._backoff * 2, BACKOFF_S[1])
                continue
            self._backoff = BACKOFF_S[0]
            if progressed == "more":
                await asyncio.sleep(0)  # a backlog: let requests run between batches, then go on
                continue
            if self._stopping:
                if progressed == "none":
                    return
                continue
            self._wake.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), timeout=1.0)
                if not self._stopping:
                    await asyncio.sleep(self.linger_s)
            if time.monotonic() - self._last_adopt > ADOPT_EVERY_S:
                self._adopt()

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
                self.metrics.capture_dropped.labels("journal_error").inc()
            release(cursor, fd)
            self._adopted.pop(0)
        assert self._own is not None
        return await self._batch(self._own)

    async def _batch(self, cursor: Cursor) -> str:
        lines, end = cursor.read(BATCH_BYTES, self.batch_lines)
        if not lines:
            return "none"
        items: list[Item] = []
        for n, line in enumerate(lines, 1):
            if n % DECODE_SLICE == 0:
                await asyncio.sleep(0)  # decoding is CPU on the serving loop: let requests in between
            try:
                items.append(decode(line))
            except (ValueError, KeyError, TypeError, UnicodeDecodeError):
                log.error("journal %s: unreadable line of %d bytes near %s", cursor.directory, len(line), end)
                self.metrics.capture_dropped.labels("journal_error").inc()
        await self._write(items)
        cursor.commit(end)
        size = sum(len(x) + 1 for x in lines)
        if cursor is self._own:
            self.journal.stored_bytes += size
            self.journal.stored_lines += len(lines)
        self.stored += len(lines)
        self.metrics.capture_queue_depth.set(self.journal.pending_lines)
        for item in items:
            if isinstance(item, InteractionRow):
                self.metrics.captured.labels(item.route).inc()
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
        self._count_feedback(claimed)

    def _count_feedback(self, claimed: list[Claimed]) -> None:
        for claim in claimed:
            label = claim.label if claim.label in ("good", "bad") else "none"
            self.metrics.feedback.labels(claim.route, claim.variant, label).inc()
            # a bare good/bad vote counts as 1.0/0.0, so label-only ratings move the score alert too
            score = claim.score if claim.score is not None else {"good": 1.0, "bad": 0.0}.get(label)
            if score is not None:
                self.metrics.feedback_score.labels(claim.route, claim.variant).observe(score)

    def _dead_letter(self, item: Item, exc: Exception) -> None:
        log.error("store rejected %s (%s); written to %s", _id(item), type(exc).__name__, self.dead_letter)
        self.metrics.capture_dropped.labels("store_rejected").inc()
        entry: dict[str, Any] = {"error": f"{type(exc).__name__}: {exc}"[:2000], "record": orjson.loads(item.record)}
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
            log.warning("capture writer: %d bytes left in the journal for the next start", self.journal.pending_bytes)
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        for cursor, fd in self._adopted:
            cursor.close()
            os.close(fd)
        self._adopted.clear()
        if self._own is not None:
            self._own.close()
