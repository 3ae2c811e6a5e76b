"""Capture end to end: the journal in this process, the loader process writing batches into a real SQLite file."""

from __future__ import annotations

import asyncio
import dataclasses
import sqlite3
import time
from collections.abc import Callable
from pathlib import Path

import orjson
from prometheus_client import CollectorRegistry

from collectors.capture import Capture, CapturePolicy
from collectors.metrics import Metrics
from collectors.store.base import Query, joined
from collectors.store.sqlite import SQLiteStore
from tests.collectors.records import interaction


def make(tmp_path: Path, db: Path | None = None, **kw: int) -> tuple[Capture, CollectorRegistry]:
    registry = CollectorRegistry()
    dsn = f"sqlite:///{db or tmp_path / 's.db'}"
    return Capture(dsn, tmp_path / "state", metrics=Metrics(registry), **kw), registry  # type: ignore[arg-type]


def metric(registry: CollectorRegistry, name: str, **labels: str) -> float:
    return registry.get_sample_value(name, labels) or 0.0


async def until(check: Callable[[], bool], within: float = 10.0) -> None:
    deadline = time.monotonic() + within
    while not check():
        assert time.monotonic() < deadline, "condition not reached"
        await asyncio.sleep(0.02)


async def stored(path: Path) -> dict[str, dict]:  # type: ignore[type-arg]
    store = SQLiteStore(path)
    try:
        return {r["request_id"]: r async for r in joined(store, Query())}
    finally:
        await store.close()


async def test_poison_rows_do_not_sink_a_batch(tmp_path: Path) -> None:
    capture, registry = make(tmp_path)
    await capture.start()
    await until(lambda: not capture.degraded)
    with sqlite3.connect(tmp_path / "s.db") as db:  # the store itself refuses one row
        db.execute(
            "CREATE TRIGGER poison BEFORE INSERT ON interactions WHEN NEW.request_id = 'refused' "
            "BEGIN SELECT RAISE(ABORT, 'refused'); END"
        )
    deep: dict = {}  # type: ignore[type-arg]
    node = deep
    for _ in range(300):  # deeper than JSON libraries serialise
        node["x"] = {}
        node = node["x"]
    poison = {
        "nul": interaction("nul", text="a\x00b"),
        "surrogate": interaction("surrogate", text="a\ud800b"),
        "huge": interaction("huge", text="x" * (5 << 20)),
        "deep": interaction(
            "deep", request={"model": "bot", "messages": [{"role": "user", "content": "d"}], "m": deep}
        ),
        "refused": interaction("refused"),
    }
    ids = [f"ok{i}" for i in range(95)]
    for i, rid in enumerate(ids):
        capture.record(interaction(rid))
        if i % 20 == 0:
            capture.record(poison.popitem()[1])
    await until(lambda: capture.idle)
    await capture.close()
    rows = await stored(tmp_path / "s.db")
    assert set(rows) == {*ids, "nul", "surrogate", "huge", "deep"}
    assert rows["nul"]["request"]["messages"][0]["content"] == "a\ufffdb"
    assert rows["nul"]["sanitized"] == ["request.messages.0.content: nul"]
    assert rows["surrogate"]["request"]["messages"][0]["content"] == "a\ufffdb"
    assert len(rows["huge"]["request"]["messages"][0]["content"]) < (1 << 20) + 100
    assert "truncated by turnout" in rows["huge"]["request"]["messages"][0]["content"]
    assert any("too deep" in note for note in rows["deep"]["sanitized"])
    assert metric(registry, "turnout_capture_dropped_total", reason="store_rejected") == 1
    (dead,) = (tmp_path / "state" / "dead-letter.jsonl").read_bytes().splitlines()
    assert orjson.loads(dead)["record"]["request_id"] == "refused"
    assert metric(registry, "turnout_interactions_captured_total", route="bot") == 100


async def test_long_calls_are_stored_and_an_unreadable_line_is_kept(tmp_path: Path) -> None:
    """A usage of 99,999 tokens once made the stored line invalid JSON (the secret rule for "..._tokens" took
    "99999}" as a value) and the loader dropped the interaction; a line that cannot be read is now kept too."""
    capture, registry = make(tmp_path)
    await capture.start()
    await until(lambda: not capture.degraded)
    usage = {"prompt_tokens": 98_765, "completion_tokens": 1_234, "total_tokens": 99_999}
    capture.record(dataclasses.replace(interaction("long"), usage=usage))
    capture.journal.append(b'{"k": "i", "request_id": "cut sh\n')  # as a torn or foreign line would read
    capture.record(interaction("after"))
    await until(lambda: capture.idle)
    await capture.close()
    rows = await stored(tmp_path / "s.db")
    assert set(rows) == {"long", "after"} and rows["long"]["usage"] == usage
    assert metric(registry, "turnout_capture_dropped_total", reason="journal_error") == 1
    (dead,) = (tmp_path / "state" / "dead-letter.jsonl").read_bytes().splitlines()
    assert orjson.loads(dead)["line"] == '{"k": "i", "request_id": "cut sh'


async def test_store_locked_spools_then_recovers(tmp_path: Path) -> None:
    capture, registry = make(tmp_path)
    await capture.start()
    await until(lambda: not capture.degraded)
    holder = sqlite3.connect(tmp_path / "s.db", timeout=0)
    holder.execute("BEGIN EXCLUSIVE")  # another process holds the database: every write is refused
    try:
        for i in range(30):
            capture.record(interaction(f"r{i}"))
        await until(lambda: capture.degraded, within=20)
        assert metric(registry, "turnout_capture_queue_depth") > 0
    finally:
        holder.rollback()
        holder.close()
    await until(lambda: capture.idle and not capture.degraded, within=20)
    assert metric(registry, "turnout_capture_queue_depth") == 0
    await capture.close()
    assert set(await stored(tmp_path / "s.db")) == {f"r{i}" for i in range(30)}


async def test_spool_bound_counts_drops(tmp_path: Path) -> None:
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("")
    capture, registry = make(tmp_path, db=blocker / "s.db", max_spool_bytes=8000)
    await capture.start()  # the store cannot even be opened
    kept = 0
    for i in range(50):
        before = metric(registry, "turnout_capture_dropped_total", reason="spool_full")
        capture.record(interaction(f"r{i}"))
        kept += metric(registry, "turnout_capture_dropped_total", reason="spool_full") == before
    assert capture.degraded
    assert 0 < kept < 50
    assert metric(registry, "turnout_capture_dropped_total", reason="spool_full") == 50 - kept
    blocker.unlink()
    blocker.mkdir()  # the store comes back without a restart
    await until(lambda: capture.idle and not capture.degraded, within=20)
    await capture.close()
    assert len(await stored(blocker / "s.db")) == kept


async def test_unstored_journal_is_replayed_by_the_next_process(tmp_path: Path) -> None:
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("")
    first, _ = make(tmp_path, db=blocker / "s.db")
    await first.start()
    for i in range(40):
        first.record(interaction(f"r{i}"))
    first.feedback({"request_id": "r3", "label": "good", "score": 1.0})
    await first.close(drain_s=0.3)  # store down: everything stays in the journal
    blocker.unlink()
    blocker.mkdir()
    second, registry = make(tmp_path, db=blocker / "s.db")
    await second.start()
    second.record(interaction("late"))
    await until(lambda: second.idle, within=20)
    await second.close()
    rows = await stored(blocker / "s.db")
    assert set(rows) == {f"r{i}" for i in range(40)} | {"late"}
    assert [f["label"] for f in rows["r3"]["feedback"]] == ["good"]
    assert metric(registry, "turnout_feedback_total", route="bot", variant="v1", label="good") == 1
    assert list((tmp_path / "state" / "journal").iterdir()) == []


async def test_redaction_per_route(tmp_path: Path) -> None:
    capture, _ = make(tmp_path)
    capture.configure(CapturePolicy(redact={"bot": frozenset({"email", "phone"})}, secrets=("canary-key-123",)))
    await capture.start()
    text = "mail bob@example.com, call +1 (415) 555-0100, key sk-proj-abcdefghijklmnopqrstuv canary-key-123"
    capture.record(interaction("a", text=text))
    capture.record(interaction("b", text=text, route="plain"))
    await until(lambda: capture.idle)
    await capture.close()
    rows = await stored(tmp_path / "s.db")
    assert rows["a"]["request"]["messages"][0]["content"] == (
        "mail [redacted:email], call [redacted:phone], key [redacted:secret] [redacted:secret]"
    )
    assert rows["b"]["request"]["messages"][0]["content"] == (
        "mail bob@example.com, call +1 (415) 555-0100, key [redacted:secret] [redacted:secret]"
    )


async def test_retention_runs_in_the_background(tmp_path: Path) -> None:
    registry = CollectorRegistry()
    capture = Capture(
        f"sqlite:///{tmp_path / 's.db'}", tmp_path / "state", metrics=Metrics(registry), retention_interval=0.1
    )
    capture.configure(CapturePolicy(retention=86400.0, route_retention={"long": 30 * 86400.0}))
    await capture.start()
    old = time.time() - 2 * 86400
    capture.record(interaction("old", ts=old))
    capture.record(interaction("old-but-kept", ts=old, route="long"))
    capture.record(interaction("new"))
    await until(lambda: capture.idle)

    async def ids() -> set[str]:
        return set(await stored(tmp_path / "s.db"))

    deadline = time.monotonic() + 10
    while "old" in await ids():
        assert time.monotonic() < deadline, "retention never ran"
        await asyncio.sleep(0.05)
    await capture.close()
    assert await ids() == {"old-but-kept", "new"}


async def test_a_retention_policy_given_after_start_reaches_the_loader(tmp_path: Path) -> None:
    registry = CollectorRegistry()
    db = tmp_path / "s.db"
    capture = Capture(f"sqlite:///{db}", tmp_path / "state", metrics=Metrics(registry), retention_interval=0.1)
    await capture.start()  # as in the gateway: the config's policy comes after start, and again on each reload
    capture.configure(CapturePolicy(retention=30 * 86400.0))
    old = time.time() - 2 * 86400
    capture.record(interaction("old", ts=old))
    capture.record(interaction("new"))
    await until(lambda: capture.idle)
    await asyncio.sleep(0.5)  # several retention rounds under the first policy
    assert set(await stored(db)) == {"old", "new"}
    capture.configure(CapturePolicy(retention=86400.0))  # a reload shortened it
    deadline = time.monotonic() + 10
    while "old" in await stored(db):
        assert time.monotonic() < deadline, "the new retention policy never applied"
        await asyncio.sleep(0.05)
    await capture.close()
    assert set(await stored(db)) == {"new"}


async def test_a_store_outage_does_not_hold_up_the_shutdown(tmp_path: Path) -> None:
    capture, _ = make(tmp_path)
    await capture.start()
    holder = sqlite3.connect(tmp_path / "s.db", timeout=0)
    holder.execute("BEGIN EXCLUSIVE")  # every write is refused (after the store's 2 s busy wait)
    try:
        for i in range(20):
            capture.record(interaction(f"r{i}"))
        await until(lambda: capture.degraded, within=20)
        started = time.monotonic()
        await capture.close(drain_s=30)
        assert time.monotonic() - started < 5  # not the 30 s drain: the journal keeps them for the next start
    finally:
        holder.rollback()
        holder.close()
    assert capture.loader.proc is not None and capture.loader.proc.returncode == 0
    assert len(list((tmp_path / "state" / "journal").iterdir())) == 1  # kept, not removed
