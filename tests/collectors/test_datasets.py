"""Dataset versions: build from reviewed items, immutability, determinism, diff, lineage, a crash mid-build."""

from __future__ import annotations

import asyncio
import hashlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path

import orjson
import pytest

from collectors.datasets.build import Spec, build, prompt_key
from collectors.datasets.diff import diff
from collectors.datasets.lineage import chain, resolved
from collectors.datasets.manifest import UnknownVersion, read_manifest, read_rows, versions
from collectors.review.decisions import Decision, decide
from collectors.review.queue import ReviewPolicy, enqueue
from collectors.store import open_store
from collectors.store.base import Store
from tests.collectors.pg import pg_dsn, postgres_server  # noqa: F401
from tests.collectors.test_store import feedback, row

ROOT = Path(__file__).resolve().parents[2]


async def fill(store: Store, n: int, *, start: int = 0, text: str = "question {i}", approve: bool = True) -> list[str]:
    rows = [
        row(f"q{i:05d}", ts=1000.0 + i, text=text.format(i=i), answer=f"answer {i}") for i in range(start, start + n)
    ]
    for s in range(0, len(rows), 500):
        await store.write(rows[s : s + 500], [])
        await enqueue(store, rows[s : s + 500], [], ReviewPolicy(sample=1.0), now=1.0)
    if approve:
        await store.transact([("UPDATE review_items SET status = 'approved' WHERE status = 'pending'", ())])
    return [r.request_id for r in rows]


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[Store]:
    s = open_store(f"sqlite:///{tmp_path}/store.db")
    await s.open()
    try:
        yield s
    finally:
        await s.close()


def lines(path: Path) -> list[dict]:  # type: ignore[type-arg]
    return [orjson.loads(x) for x in (path / "train.jsonl").read_bytes().splitlines()]


async def test_build_twice_with_nothing_new_writes_one_version(store: Store, tmp_path: Path) -> None:
    root = tmp_path / "datasets"
    ids = await fill(store, 5)
    first = await build(store, root, Spec("support", route="bot"), now=2e9)
    assert first.version == "v0001" and first.path is not None
    again = await build(store, root, Spec("support", route="bot"), now=2e9 + 60)
    assert again.version is None and "nothing new since v0001" in again.reason
    assert versions(root, "support") == ["v0001"]
    manifest = read_manifest(root, "support@v1")
    assert manifest["ids"] == ids and manifest["parent"] is None and manifest["counts"]["examples"] == 5
    assert manifest["sha256"] == hashlib.sha256((first.path / "train.jsonl").read_bytes()).hexdigest()
    assert lines(first.path)[0] == {
        "messages": [{"role": "user", "content": "question 0"}, {"role": "assistant", "content": "answer 0"}]
    }
    assert sorted(os.listdir(root / "support")) == ["v0001"]


async def test_same_data_on_two_machines_gives_the_same_sha256(
    store: Store, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    other = open_store(str(request.getfixturevalue("pg_dsn")))
    await other.open()
    try:
        await fill(other, 30)
        await fill(store, 30)
        a = await build(store, tmp_path / "a", Spec("d", route="bot"), now=2e9)
        b = await build(other, tmp_path / "b", Spec("d", route="bot"), now=2e9 + 3600)
    finally:
        await other.close()
    assert a.manifest["sha256"] == b.manifest["sha256"]
    assert a.path is not None and b.path is not None
    assert (a.path / "train.jsonl").read_bytes() == (b.path / "train.jsonl").read_bytes()


async def test_edits_rejections_and_new_items_make_a_diff_matching_the_set_difference(
    store: Store, tmp_path: Path
) -> None:
    root = tmp_path / "datasets"
    ids = await fill(store, 10)
    await build(store, root, Spec("support", route="bot"), now=2e9)
    new_ids = await fill(store, 4, start=10)
    await decide(store, ids[2], Decision("reject", "ana"), now=5.0)
    await decide(store, ids[7], Decision("reject", "ana"), now=5.0)
    await decide(store, ids[4], Decision("edit", "ana", answer="A much better answer about refunds."), now=5.0)
    second = await build(store, root, Spec("support", route="bot"), now=2e9 + 10)
    assert second.version == "v0002" and second.manifest["parent"] == "v0001"
    d = diff(root, "support@v1", "support@v0002")
    assert set(d["added"]) == set(new_ids) - set()  # the hand-computed differences
    assert set(d["removed"]) == {ids[2], ids[7]}
    assert d["changed"] == [ids[4]]
    assert d["stats"]["a"]["examples"] == 10 and d["stats"]["b"]["examples"] == 12
    assert d["stats"]["b"]["by_source"] == {"approved": 11, "edited": 1}
    assert d["stats"]["added"]["examples"] == 4
    assert not d["identical"]
    assert {"term": "question", "count": 2} in d["top_new_terms"]  # 4 added, 2 removed
    edited = [x for x in read_rows(root, "support@v2") if "refunds" in x["messages"][-1]["content"]]
    assert len(edited) == 1
    same = diff(root, "support@v2", "support@v2")
    assert same["identical"] and not same["added"] and not same["removed"] and not same["changed"]


async def test_near_duplicates_collapse_to_the_latest(store: Store, tmp_path: Path) -> None:
    await fill(store, 1, start=0, text="How do I get a REFUND?")
    await fill(store, 1, start=1, text="how do i get a refund")
    await fill(store, 1, start=2, text="  How   do I get a refund!!  ")
    await fill(store, 1, start=3, text="How do I get a refund for order 42?")
    result = await build(store, tmp_path / "d", Spec("x", route="bot"), now=2e9)
    assert result.manifest["ids"] == ["q00002", "q00003"]
    assert result.manifest["counts"]["collapsed"] == 2
    a = {
        "messages": [
            {"role": "user", "content": "\uff28\uff4f\uff57  do\u2014I get"},
            {"role": "assistant", "content": "x"},
        ]
    }
    b = {"messages": [{"role": "user", "content": "how do i get"}, {"role": "assistant", "content": "y"}]}
    assert prompt_key(a) == prompt_key(b)


async def test_redaction_and_feedback_filters(store: Store, tmp_path: Path) -> None:
    secret = "sk-" + "a1B2" * 8
    rows = [
        row("p1", ts=1.0, text=f"my key is {secret}, mail me at ana@example.com"),
        row("p2", ts=2.0, text="second"),
        row("p3", ts=3.0, text="third"),
    ]
    fb = [
        feedback("f1", 5.0, request_id="p1", label="good", score=0.9),
        feedback("f2", 5.0, request_id="p2", label="bad"),
        feedback("f3", 5.0, request_id="p3", label="good", correction={"role": "assistant", "content": "fixed"}),
    ]
    await store.write(rows, fb)
    await enqueue(store, rows, fb, ReviewPolicy(sample=1.0), now=1.0)
    await decide(store, "p3", Decision("reject", "ana"), now=6.0)
    spec = Spec("good", route="bot", reviewed=None, label="good", redact=frozenset({"email"}))
    result = await build(store, tmp_path / "d", spec, now=2e9)
    assert result.manifest["ids"] == ["p1"]  # p2 is labelled bad, p3 was rejected by a person
    text = (tmp_path / "d" / "good" / "v0001" / "train.jsonl").read_text()
    assert secret not in text and "ana@example.com" not in text
    assert "[redacted:secret]" in text and "[redacted:email]" in text
    await decide(store, "p3", Decision("approve", "ana"), now=7.0)
    await decide(store, "p1", Decision("edit", "ana", answer=f"use the key {secret} or bo@example.org"), now=7.0)
    reviewed = await build(store, tmp_path / "r", Spec("r", route="bot", redact=frozenset({"email"})), now=2e9)
    edited = (tmp_path / "r" / "r" / "v0001" / "train.jsonl").read_text()
    assert reviewed.manifest["ids"] == ["p1", "p3"] and secret not in edited and "bo@example.org" not in edited
    assert "use the key [redacted:secret] or [redacted:email]" in edited
    result = await build(store, tmp_path / "d", spec, now=2e9)
    assert (
        result.manifest["ids"] == ["p1", "p3"]
        and list(read_rows(tmp_path / "d", "good@v2"))[1]["messages"][-1]["content"] == "fixed"
    )


async def test_nothing_to_build_and_dry_run_write_nothing(store: Store, tmp_path: Path) -> None:
    root = tmp_path / "d"
    assert (await build(store, root, Spec("x", route="bot"), now=2e9)).version is None
    await fill(store, 3)
    dry = await build(store, root, Spec("x", route="bot"), now=2e9, dry_run=True)
    assert dry.version is None and dry.manifest["version"] == "v0001" and versions(root, "x") == []


async def test_lineage_chain(store: Store, tmp_path: Path) -> None:
    root = tmp_path / "d"
    await fill(store, 2)
    await build(store, root, Spec("s", route="bot"), now=2e9)
    await fill(store, 3, start=2)
    await build(store, root, Spec("s", route="bot"), now=2e9 + 86400)
    got = chain(root, "s@v2")
    assert [(c["ref"], c["examples"]) for c in got] == [("s@v0002", 5), ("s@v0001", 2)]
    assert got[0]["created_at"] == "2033-05-19T03:33:20Z"
    assert resolved(root, "s@v1") == "s@v0001" and resolved(root, "s@v9") is None and resolved(root, None) is None
    with pytest.raises(UnknownVersion):
        chain(root, "s@v7")
    with pytest.raises(UnknownVersion, match="expected NAME@vN"):
        chain(root, "s-v7")


BUILDER = """
import asyncio, sys
from pathlib import Path
from collectors.datasets.build import Spec, build
from collectors.store import open_store

async def main():
    store = open_store(sys.argv[1])
    await store.open()
    print("start", flush=True)
    await build(store, Path(sys.argv[2]), Spec("big", route="bot"), now=2e9)
    print("done", flush=True)

asyncio.run(main())
"""


def test_sigkill_during_a_build_leaves_the_previous_version_and_no_partial_directory(tmp_path: Path) -> None:
    root = tmp_path / "d"
    url = f"sqlite:///{tmp_path}/store.db"

    async def prepare() -> None:
        store = open_store(url)
        await store.open()
        await fill(store, 100)
        await build(store, root, Spec("big", route="bot"), now=2e9)
        await fill(store, 6000, start=100, text="a long question {i} " + "lorem ipsum " * 40)
        await store.close()

    async def finish() -> None:
        store = open_store(url)
        await store.open()
        result = await build(store, root, Spec("big", route="bot"), now=2e9)  # clears what the dead builds left
        await store.close()
        assert versions(root, "big")[-1] == "v0002" and (result.version or "v0002") == "v0002"

    asyncio.run(prepare())
    before = (root / "big" / "v0001" / "train.jsonl").read_bytes()
    killed_in_flight = 0
    for delay in (0.3, 0.6, 0.9, 1.2, 1.5, 1.8):
        proc = subprocess.Popen(
            [sys.executable, "-c", BUILDER, url, str(root)], cwd=ROOT, stdout=subprocess.PIPE, text=True
        )
        assert proc.stdout is not None and proc.stdout.readline() == "start\n"
        time.sleep(delay)
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
        proc.stdout.close()
        found = versions(root, "big")
        assert sorted(os.listdir(root / "big")) == found  # nothing half-written beside the versions
        assert (root / "big" / "v0001" / "train.jsonl").read_bytes() == before
        for v in found:
            m = read_manifest(root, f"big@{v}")
            assert m["sha256"] == hashlib.sha256((root / "big" / v / "train.jsonl").read_bytes()).hexdigest()
        if found == ["v0001"]:
            killed_in_flight += 1
        else:
            break
    assert killed_in_flight >= 1  # at least one kill landed mid-build
    asyncio.run(finish())
    assert [p.name for p in (root / ".building").iterdir()] == ["big.lock"]
