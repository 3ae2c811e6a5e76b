"""Export formats, filters, dedupe and constant memory, from a real SQLite file."""

from __future__ import annotations

import io
import tracemalloc
from pathlib import Path

import orjson
import pytest
from openai.types.chat import ChatCompletionMessageParam, ChatCompletionToolParam
from pydantic import TypeAdapter

from collectors.capture import encode, interaction_payload
from collectors.export import export
from collectors.redact import Redactor
from collectors.spool.writer import decode
from collectors.store.base import Query, Store
from collectors.store.retention import expire
from collectors.store.sqlite import SQLiteStore
from tests.collectors.records import interaction

MESSAGES = TypeAdapter(list[ChatCompletionMessageParam])
TOOLS = TypeAdapter(list[ChatCompletionToolParam])
TOOL = {"type": "function", "function": {"name": "lookup", "parameters": {"type": "object", "properties": {}}}}


def rows(*its):  # type: ignore[no-untyped-def]
    return [decode(encode(interaction_payload(it), Redactor()).rstrip(b"\n")) for it in its]


def fb(fid: str, ts: float, request_id: str, **kw: object):  # type: ignore[no-untyped-def]
    return decode(orjson.dumps({"k": "f", "feedback_id": fid, "ts": ts, "request_id": request_id, **kw}))


@pytest.fixture
async def store(tmp_path: Path):  # type: ignore[no-untyped-def]
    s = SQLiteStore(tmp_path / "s.db")
    await s.open()
    yield s
    await s.close()


async def lines(store: Store, **kw: object) -> list[dict]:  # type: ignore[type-arg]
    out = io.BytesIO()
    n = await export(store, out, **kw)  # type: ignore[arg-type]
    got = [orjson.loads(line) for line in out.getvalue().splitlines()]
    assert n == len(got)
    return got


async def seed(store: Store) -> None:
    tool_call = {"id": "call_1", "type": "function", "function": {"name": "lookup", "arguments": "{}"}}
    with_tools = interaction("tools", ts=104.0, request={"model": "bot", "messages": [{"role": "user", "content": "t"}],
                                                        "tools": [TOOL]})  # fmt: skip
    with_tools.response["choices"][0]["message"] = {"role": "assistant", "content": None, "tool_calls": [tool_call]}  # type: ignore[index]
    await store.write(
        rows(
            interaction("a", ts=100.0, text="q1", answer="a1"),
            interaction(
                "a-shadow",
                ts=100.5,
                role="shadow",
                parent_id="a",
                variant="cand",
                answer="a1 shadow",
                extra={"agreement": 0.8},
            ),
            interaction("b", ts=101.0, text="q1", answer="a1"),  # same conversation as "a"
            interaction("c", ts=102.0, text="q2", answer="wrong"),
            interaction("failed", ts=103.0, outcome="upstream_error", status=502),
            with_tools,
            interaction("other", ts=105.0, route="other", text="q3"),
        ),
        [
            fb("f1", 200.0, "a", label="good", score=0.9),
            fb("f2", 201.0, "c", label="good", score=0.4),
            fb("f3", 202.0, "c", label="bad", correction={"role": "assistant", "content": "right"}),
            fb("f4", 203.0, "b", score=1.0),
        ],
    )


async def test_raw_has_both_roles_and_every_field(store: Store) -> None:
    await seed(store)
    got = await lines(store)
    assert [r["request_id"] for r in got] == ["a", "a-shadow", "b", "c", "failed", "tools", "other"]
    first = got[0]
    for key in ("request_id", "ts", "route", "experiment", "variant", "role", "parent_id", "upstream", "request",
                "response", "status", "latency_ms", "ttft_ms", "usage", "error", "feedback"):  # fmt: skip
        assert key in first
    assert first["ts"] == "1970-01-01T00:01:40.000Z"
    assert first["feedback"][0]["label"] == "good" and first["feedback"][0]["ts"].endswith("Z")
    assert got[1]["parent_id"] == "a" and got[1]["extra"] == {"agreement": 0.8}
    assert [f["feedback_id"] for f in got[3]["feedback"]] == ["f2", "f3"]
    assert [r["request_id"] for r in await lines(store, query=Query(role="shadow"))] == ["a-shadow"]


async def test_openai_chat_lines_are_fine_tuning_examples(store: Store) -> None:
    await seed(store)
    got = await lines(store, fmt="openai-chat")
    # primaries only, no failed call; the correction replaces the wrong answer
    assert [line["messages"][-1].get("content") for line in got] == ["a1", "a1", "right", None, "hi there"]
    for line in got:
        MESSAGES.validate_python(line["messages"])
        assert set(line) <= {"messages", "tools"}
        assert line["messages"][-1]["role"] == "assistant"
    TOOLS.validate_python(got[3]["tools"])
    assert got[3]["messages"][-1]["tool_calls"][0]["function"]["name"] == "lookup"


async def test_filters_and_dedupe(store: Store) -> None:
    await seed(store)
    good = await lines(store, fmt="raw", label="good")
    assert [r["request_id"] for r in good] == ["a"]  # c's latest label is bad
    assert [r["request_id"] for r in await lines(store, min_score=0.5)] == ["a", "b"]
    assert [r["request_id"] for r in await lines(store, query=Query(route="other"))] == ["other"]
    assert [r["request_id"] for r in await lines(store, query=Query(since=104.5))] == ["other"]
    chat = await lines(store, fmt="openai-chat", dedupe=True)
    assert [line["messages"][-1].get("content") for line in chat].count("a1") == 1
    raw = await lines(store, dedupe=True)
    assert "b" not in [r["request_id"] for r in raw] and "a" in [r["request_id"] for r in raw]


async def test_retention_per_route_and_default(store: Store) -> None:
    await seed(store)
    deleted = await expire(store, route_retention={"other": 1000.0}, default=50.0, now=160.0)
    assert deleted == 6  # every "bot" row is older than 50 s; "other" keeps 1000 s
    assert [r["request_id"] for r in await lines(store)] == ["other"]


async def test_export_memory_stays_flat(tmp_path: Path) -> None:
    async def peak(n: int) -> int:
        s = SQLiteStore(tmp_path / f"m{n}.db")
        await s.open()
        for start in range(0, n, 500):
            await s.write(
                rows(*(interaction(f"r{i}", ts=float(i), text="x" * 500) for i in range(start, start + 500))), []
            )
        out = open(tmp_path / "out.jsonl", "wb")  # noqa: ASYNC230
        tracemalloc.start()
        try:
            assert await export(s, out, dedupe=True) == 1  # one conversation, repeated
            return tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()
            out.close()
            await s.close()

    small, large = await peak(1000), await peak(10000)
    assert large < small * 1.5 + 256 * 1024, (small, large)
