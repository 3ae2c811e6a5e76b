"""``turnout export``: stored interactions as JSON lines, streamed page by page (constant memory).

``raw`` writes one object per interaction (both roles unless filtered) with its feedback, oldest first.
``openai-chat`` writes fine-tuning lines ``{"messages": [...]}`` (plus ``tools`` when the request had them)
for answered chat completions and Responses API answers (input and output items as messages) only, primaries
only unless ``role`` says otherwise; the latest feedback ``correction`` replaces the assistant answer.
``label`` and ``min_score`` filter on the latest label and the latest score an interaction received.
``dedupe`` keeps the first line of each identical conversation, using a temporary on-disk set (memory stays
flat for millions of rows).

Usage::

    n = await export(store, sys.stdout.buffer, fmt="openai-chat", query=Query(route="support-bot"),
                     label="good", dedupe=True)
"""

from __future__ import annotations

import datetime as dt
import hashlib
import sqlite3
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any

import orjson

from collectors.record import RECORD_FIELDS
from collectors.response_items import input_messages, output_message
from collectors.store.base import Query, Store, feedback_summary, joined

FORMATS = ("raw", "openai-chat")
MESSAGE_KEYS = ("role", "content", "name", "tool_calls", "tool_call_id")


def iso(ts: float) -> str:
    return dt.datetime.fromtimestamp(ts, dt.UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def raw_line(record: dict[str, Any]) -> dict[str, Any]:
    out = {key: record.get(key) for key in RECORD_FIELDS if key != "caller"}  # the caller hash stays in the store
    out["ts"] = iso(record["ts"])
    out["tags"] = record.get("tags") or []
    metadata = (record.get("request") or {}).get("metadata")
    out["metadata"] = metadata if isinstance(metadata, dict) else None  # OpenAI's request field, as sent
    if record.get("sanitized"):
        out["sanitized"] = record["sanitized"]
    out["feedback"] = [
        {**{k: v for k, v in fb.items() if k not in ("k", "caller")}, "ts": iso(fb["ts"])}
        for fb in record.get("feedback", ())
    ]
    return out


def _message(message: dict[str, Any]) -> dict[str, Any]:
    return {k: message[k] for k in MESSAGE_KEYS if message.get(k) is not None}


def chat_line(record: dict[str, Any]) -> dict[str, Any] | None:
    """The fine-tuning line of one interaction, or None when it is not a usable example."""
    request = record.get("request") or {}
    responses = record.get("endpoint") == "responses"
    if responses:
        given = input_messages(request)
    elif record.get("endpoint") == "chat.completions" and isinstance(request.get("messages"), list):
        given = request["messages"]
    else:
        return None
    _, _, correction = feedback_summary(record.get("feedback", []))
    answer: Any
    if correction is not None:
        answer = correction
    else:
        if record.get("outcome") != "ok" or not 200 <= int(record.get("status") or 0) < 300:
            return None
        if responses:
            answer = output_message(record.get("response"))
        else:
            choices = (record.get("response") or {}).get("choices") or []
            answer = choices[0].get("message") if choices and isinstance(choices[0], dict) else None
        if not isinstance(answer, dict) or (answer.get("content") is None and not answer.get("tool_calls")):
            return None
    messages = [_message(m) for m in given if isinstance(m, dict)]
    if not messages:
        return None
    line: dict[str, Any] = {"messages": [*messages, {**_message(answer), "role": "assistant"}]}
    if isinstance(request.get("tools"), list) and request["tools"]:
        line["tools"] = request["tools"]
    return line


def _conversation(record: dict[str, Any]) -> bytes:
    request = record.get("request") or {}
    asked = request.get("messages", request.get("prompt", request.get("input")))
    choices = (record.get("response") or {}).get("choices") or []
    answered = [c.get("message", c.get("text")) for c in choices if isinstance(c, dict)]
    return orjson.dumps({"e": record.get("endpoint"), "in": asked, "out": answered}, option=orjson.OPT_SORT_KEYS)


@contextmanager
def _seen_set() -> Iterator[sqlite3.Connection]:
    with tempfile.TemporaryDirectory(prefix="turnout-dedupe-") as tmp:
        db = sqlite3.connect(Path(tmp) / "seen.db")
        try:
            db.execute("PRAGMA journal_mode=OFF")
            db.execute("PRAGMA synchronous=OFF")
            db.execute("CREATE TABLE seen (digest BLOB PRIMARY KEY) WITHOUT ROWID")
            yield db
        finally:
            db.close()


async def export(
    store: Store,
    out: IO[bytes],
    *,
    fmt: str = "raw",
    query: Query | None = None,
    label: str | None = None,
    min_score: float | None = None,
    dedupe: bool = False,
) -> int:
    """Write the matching interactions to ``out``; returns the number of lines written."""
    if fmt not in FORMATS:
        raise ValueError(f"unknown format {fmt!r}: expected one of {', '.join(FORMATS)}")
    query = query or Query()
    if fmt == "openai-chat" and query.role is None:
        query = Query(route=query.route, since=query.since, role="primary")
    written = 0
    with _seen_set() as seen:
        async for record in joined(store, query):
            latest_label, latest_score, _ = feedback_summary(record["feedback"])
            if label is not None and latest_label != label:
                continue
            if min_score is not None and (latest_score is None or latest_score < min_score):
                continue
            line = raw_line(record) if fmt == "raw" else chat_line(record)
            if line is None:
                continue
            if dedupe:
                key = orjson.dumps(line, option=orjson.OPT_SORT_KEYS) if fmt != "raw" else _conversation(record)
                digest = hashlib.blake2b(key, digest_size=16).digest()
                if seen.execute("INSERT OR IGNORE INTO seen VALUES (?)", (digest,)).rowcount == 0:
                    continue
            out.write(orjson.dumps(line) + b"\n")
            written += 1
    return written
