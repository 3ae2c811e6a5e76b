"""Interaction capture: redact and sanitise, append to the journal (the durable step, on the request path),
and let the loader process (batch writer and retention, ``collectors/spool/loader_child.py``) take it from there.

Usage (in the app lifespan)::

    capture = Capture("sqlite:///turnout.db", state_dir, metrics=metrics)
    await capture.start()
    capture.configure(CapturePolicy(redact={"support-bot": frozenset({"email"})}, secrets=(...,)))
    pending = capture.record(interaction)  # never raises: a failure is counted and logged
    if pending is not None: await asyncio.shield(pending)  # a large record is encoded off the event loop
    feedback_id = capture.feedback({...})  # raises CaptureUnavailable when it could not be made durable
    await capture.close(timeout=10)
"""

from __future__ import annotations

import asyncio
import logging
import operator
import time
from collections.abc import Awaitable, Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson

from collectors.metrics import Metrics
from collectors.record import RECORD_FIELDS, Interaction, new_id
from collectors.redact import Redactor
from collectors.review.queue import ReviewPolicy
from collectors.sanitize import MAX_STRING, sanitize
from collectors.spool.journal import Journal, SpoolFull
from collectors.spool.loader_supervisor import LoaderSupervisor

log = logging.getLogger(__name__)

MAX_LINE = 24 << 20  # a record larger than this keeps its metadata and loses its bodies (marked)
# a record larger than this is redacted and encoded in a worker thread: the event loop keeps serving (the
# regex engine holds the GIL for one search at a time, and every pattern is linear, so it yields often)
OFFLOAD_BYTES = 128 << 10
RETENTION_INTERVAL_S = 600.0


class CaptureUnavailable(Exception):
    """Feedback could not be made durable (spool full or the local disk failing)."""


@dataclass(frozen=True)
class CapturePolicy:
    redact: Mapping[str, frozenset[str]] = field(default_factory=dict)  # route -> {"email", "phone"}
    secrets: tuple[str, ...] = ()  # configured key values, masked wherever they appear
    retention: float | None = None  # seconds, every route without its own
    route_retention: Mapping[str, float] = field(default_factory=dict)
    review: ReviewPolicy = field(default_factory=ReviewPolicy)  # what the loader queues for a person


def _bodies_too_large(payload: dict[str, Any], size: int) -> dict[str, Any]:
    for key in ("request", "response", "correction"):
        if key in payload:
            payload[key] = {"turnout_removed": f"record was {size} bytes, over the {MAX_LINE} byte limit"}
    payload["sanitized"] = [*payload.get("sanitized", ()), "record: bodies removed (too large)"]
    return payload


def _dumps(value: Any) -> bytes | None:
    try:
        return orjson.dumps(value, default=str)
    except (TypeError, orjson.JSONEncodeError):  # lone surrogates, huge integers, nesting past 255
        return None


def encode(payload: dict[str, Any], redactor: Redactor) -> bytes:
    """One journal line: sanitised, redacted JSON of ``payload`` ending in a newline.

    Sanitising comes first, so no pattern ever scans more than ``MAX_LINE`` bytes of a record."""
    return _encode(payload, _dumps(payload), redactor)


def _encode(payload: dict[str, Any], line: bytes | None, redactor: Redactor) -> bytes:
    value = payload
    # the common case: serialised as it is, nothing to sanitise (no NUL, no string over the limit)
    if line is None or len(line) > MAX_STRING or b"\\u0000" in line:
        value, notes = sanitize(value)
        if notes:
            value = {**value, "sanitized": notes}
        line = orjson.dumps(value, default=str)
        if len(line) > MAX_LINE:
            value = _bodies_too_large(dict(value), len(line))
            line = orjson.dumps(value, default=str)
    redacted = redactor.optional(value)
    if redacted is not value:
        line = orjson.dumps(redacted, default=str)
    return redactor.line(line) + b"\n"


_record_values = operator.attrgetter(*RECORD_FIELDS)


def interaction_payload(it: Interaction) -> dict[str, Any]:
    """The journal record of ``it``: kind ``"i"`` and every field of ``RECORD_FIELDS``."""
    payload: dict[str, Any] = {"k": "i"}
    payload.update(zip(RECORD_FIELDS, _record_values(it), strict=True))
    return payload


class Capture:
    def __init__(
        self,
        store_dsn: str,
        state_dir: Path,
        *,
        metrics: Metrics,
        max_spool_bytes: int = 1 << 30,
        retention_interval: float = RETENTION_INTERVAL_S,
        review: ReviewPolicy | None = None,
    ) -> None:
        self.metrics = metrics
        self.journal = Journal(state_dir / "journal", max_pending_bytes=max_spool_bytes)
        self.loader = LoaderSupervisor(
            store_dsn,
            self.journal,
            metrics=metrics,
            dead_letter=state_dir / "dead-letter.jsonl",
            retention_interval=retention_interval,
            review=(review or ReviewPolicy()).to_json(),  # the loader's first batch (a replay) is queued under it
        )
        self.policy = CapturePolicy()
        self._redactors: dict[str, Redactor] = {}
        self._default = Redactor()
        self._feedback_redactor = Redactor()
        self._encoder = ThreadPoolExecutor(max_workers=1, thread_name_prefix="turnout-redact")
        self._pending: set[asyncio.Task[None]] = set()

    def configure(self, policy: CapturePolicy) -> None:
        """Take a new policy (each config generation); applies to what is captured from now on."""
        self.policy = policy
        self._default = Redactor(secrets=policy.secrets)
        self._redactors = {route: Redactor(kinds, policy.secrets) for route, kinds in policy.redact.items() if kinds}
        # feedback does not name its route: mask whatever any route masks
        union = frozenset().union(*policy.redact.values()) if policy.redact else frozenset()
        self._feedback_redactor = Redactor(union, policy.secrets)
        self.loader.retention(policy.route_retention, policy.retention)
        self.loader.review(policy.review.to_json())

    @property
    def degraded(self) -> bool:
        """The store is unavailable (or its loader is being restarted): interactions spool in the journal."""
        return self.loader.degraded

    @property
    def idle(self) -> bool:
        """Everything journaled so far is in the store."""
        return self.loader.idle

    async def start(self) -> None:
        self.journal.open()
        await self.loader.start()

    def _append(self, line: bytes) -> None:
        self.journal.append(line)
        self.metrics.capture_queue_depth.set(self.journal.pending_lines)

    def record(self, it: Interaction) -> Awaitable[None] | None:
        """Make ``it`` durable in the journal; on failure count the drop and log its id (never raises).

        A large record is encoded in a worker thread: the returned awaitable is done once it is journaled
        (``asyncio.shield`` it: cancelling the waiter must not cancel the write)."""
        payload = interaction_payload(it)
        redactor = self._redactors.get(it.route, self._default)
        line = _dumps(payload)
        if line is not None and len(line) <= OFFLOAD_BYTES:
            self._journal(lambda: _encode(payload, line, redactor), it.request_id)
            return None
        task = asyncio.get_running_loop().create_task(self._offload(payload, redactor, it.request_id))
        self._pending.add(task)
        task.add_done_callback(self._pending.discard)
        return task

    async def _offload(self, payload: dict[str, Any], redactor: Redactor, request_id: str) -> None:
        try:
            line = await asyncio.get_running_loop().run_in_executor(self._encoder, encode, payload, redactor)
        except Exception:
            self.metrics.capture_dropped.labels("journal_error").inc()
            log.exception("encoding failed: dropped interaction %s", request_id)
            return
        self._journal(lambda: line, request_id)

    def _journal(self, line: Callable[[], bytes], request_id: str) -> None:
        try:
            self._append(line())
        except SpoolFull:
            self.metrics.capture_dropped.labels("spool_full").inc()
            log.error(
                "capture spool full (%d bytes pending): dropped interaction %s", self.journal.pending_bytes, request_id
            )
        except Exception:
            self.metrics.capture_dropped.labels("journal_error").inc()
            log.exception("journal append failed: dropped interaction %s", request_id)

    def feedback(self, fields: Mapping[str, Any]) -> str:
        """Journal one feedback object (already validated); returns its id once durable."""
        feedback_id = new_id()  # in time order, as request ids: the feedback table's key grows at its end
        payload = {"k": "f", "feedback_id": feedback_id, "ts": time.time(), **fields}
        try:
            self._append(encode(payload, self._feedback_redactor))
        except SpoolFull:
            self.metrics.capture_dropped.labels("spool_full").inc()
            log.error("capture spool full: refused feedback %s", feedback_id)
            raise CaptureUnavailable("the capture spool is full") from None
        except OSError as exc:
            self.metrics.capture_dropped.labels("journal_error").inc()
            log.error("journal append failed: refused feedback %s (%s)", feedback_id, exc.strerror)
            raise CaptureUnavailable("the capture journal cannot be written") from None
        return feedback_id

    async def close(self, drain_s: float = 10.0) -> None:
        """Drain to the store for up to ``drain_s``; what is left stays in the journal for the next start."""
        if self._pending:
            await asyncio.wait(set(self._pending), timeout=drain_s)
        self._encoder.shutdown(wait=False, cancel_futures=True)
        await self.loader.close(drain_s)
        self.journal.close(remove=self.journal.pending_bytes == 0)
