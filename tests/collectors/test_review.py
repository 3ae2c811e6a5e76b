"""The review queue and decisions on a real SQLite file and a real PostgreSQL server."""

from __future__ import annotations

import math
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from scipy.stats import binomtest

from collectors.review.decisions import Decision, InvalidDecision, decide
from collectors.review.items import Filters, backlog, count_items, list_items, load_items, status_counts
from collectors.review.queue import ReviewPolicy, enqueue, sampled
from collectors.store import open_store
from collectors.store.base import Store
from collectors.store.retention import expire
from tests.collectors.pg import pg_dsn, postgres_server  # noqa: F401
from tests.collectors.test_store import feedback, row

FLAGS = ReviewPolicy(label="bad", max_score=0.5, max_shadow_agreement=0.5)


@pytest.fixture(params=["sqlite", "postgres"])
async def store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Store]:
    url = f"sqlite:///{tmp_path}/store.db" if request.param == "sqlite" else str(request.getfixturevalue("pg_dsn"))
    s = open_store(url)
    await s.open()
    try:
        yield s
    finally:
        await s.close()


async def queued(store: Store) -> dict[str, str]:
    return {str(i): str(r) for i, r in await store.fetch("SELECT id, reason FROM review_items ORDER BY id")}


async def write(store: Store, interactions: list, fb: list, policy: ReviewPolicy) -> int:  # type: ignore[type-arg]
    await store.write(interactions, fb)
    return await enqueue(store, interactions, fb, policy, now=100.0)


async def test_flags_queue_by_label_score_and_shadow_in_either_order(store: Store) -> None:
    # feedback first, its interaction later; and the other way round; and by the upstream response id
    assert await write(store, [], [feedback("f1", 1.0, request_id="early", label="bad")], FLAGS) == 0
    batch = [row("early", ts=10.0), row("late", ts=11.0), row("byresp", ts=12.0, response_id="resp-1")]
    batch += [row("fine", ts=13.0), row("disagreed", ts=14.0)]
    batch += [row("sh", ts=14.5, role="shadow", parent_id="disagreed", extra={"comparison": {"similarity": 0.2}})]
    batch += [row("sh2", ts=14.6, role="shadow", parent_id="fine", extra={"comparison": {"similarity": 0.9}})]
    assert await write(store, batch, [], FLAGS) == 2
    assert await write(store, [], [feedback("f2", 20.0, request_id="late", score=0.3)], FLAGS) == 1
    assert await write(store, [], [feedback("f3", 21.0, response_id="resp-1", label="bad")], FLAGS) == 1
    assert await write(store, [], [feedback("f4", 22.0, request_id="fine", label="good", score=0.9)], FLAGS) == 0
    assert await queued(store) == {"byresp": "label", "disagreed": "shadow", "early": "label", "late": "score"}
    # a replayed batch (a crash before the journal checkpoint moved) adds nothing
    assert await write(store, batch, [feedback("f3", 21.0, response_id="resp-1", label="bad")], FLAGS) == 0
    assert len(await queued(store)) == 4


async def test_shadows_and_other_endpoints_are_never_items(store: Store) -> None:
    shadow = row("s1", ts=1.0, role="shadow", parent_id="missing")
    assert await write(store, [shadow], [feedback("f", 2.0, request_id="s1", label="bad")], FLAGS) == 0
    assert await write(store, [], [feedback("g", 2.0, request_id="nothing-yet", label="bad")], FLAGS) == 0
    assert await queued(store) == {}


def test_sample_rate_within_binomial_bounds() -> None:
    n = 20_000
    for share in (0.02, 0.25):
        hits = sum(sampled(f"{i:032x}", share) for i in range(n))
        assert binomtest(hits, n, share).pvalue > 0.001, (share, hits)
    assert not any(sampled(f"{i}", 0.0) for i in range(1000))
    assert all(sampled(f"{i}", 1.0) for i in range(1000))
    assert sampled("abc", 0.5) == sampled("abc", 0.5)  # a replay decides the same


async def test_random_sample_queues_its_share(store: Store) -> None:
    n, share = 2000, 0.1
    rows = [row(f"{i:032x}", ts=float(i)) for i in range(n)]
    for start in range(0, n, 500):
        await write(store, rows[start : start + 500], [], ReviewPolicy(sample=share))
    got = await queued(store)
    assert set(got.values()) == {"sample"}
    assert got.keys() == {r.request_id for r in rows if sampled(r.request_id, share)}
    lo, hi = n * share - 4 * math.sqrt(n * share * (1 - share)), n * share + 4 * math.sqrt(n * share * (1 - share))
    assert lo < len(got) < hi


async def test_decisions_keep_history_and_the_latest_wins(store: Store) -> None:
    batch = [row("a", ts=1.0, route="r1"), row("b", ts=2.0, route="r1"), row("c", ts=3.0, route="r2", variant="v2")]
    await write(store, batch, [], ReviewPolicy(sample=1.0))
    assert await backlog(store) == {"r1": 2, "r2": 1}
    assert await decide(store, "a", Decision("approve", "ana", score=0.75), now=10.0)
    assert await decide(store, "a", Decision("edit", "bo", answer="Within 30 days."), now=11.0)
    assert await decide(store, "a", Decision("approve", "ana"), now=12.0)  # keeps the edited answer
    assert await decide(store, "b", Decision("score", "ana", score=0.25), now=13.0)
    assert await decide(store, "c", Decision("reject", "bo"), now=14.0)
    assert not await decide(store, "nope", Decision("approve", "ana"), now=15.0)
    assert await backlog(store) == {}
    [a, b, c] = await load_items(store, ["a", "b", "c"])
    assert a["decision"] == {
        "status": "approved",
        "answer": "Within 30 days.",
        "score": 0.75,
        "reviewer": "ana",
        "ts": 12.0,
    }
    assert [(h["action"], h["reviewer"], h["ts"]) for h in a["history"]] == [
        ("approve", "ana", 10.0),
        ("edit", "bo", 11.0),
        ("approve", "ana", 12.0),
    ]
    assert b["decision"]["status"] == "scored" and b["decision"]["score"] == 0.25
    assert c["decision"]["status"] == "rejected" and c["variant"] == "v2"
    assert a["request"]["messages"][0]["content"] == "hello"
    assert a["response"]["choices"][0]["message"]["content"] == "hi there"
    await decide(store, "c", Decision("approve", "ana"), now=16.0)  # changing one's mind
    assert (await load_items(store, ["c"]))[0]["decision"]["status"] == "approved"
    rows = await store.fetch("SELECT COUNT(*) FROM review_decisions")
    assert int(rows[0][0]) == 6
    counted = await store.fetch("SELECT route, status, COUNT(*) FROM review_items GROUP BY route, status")
    assert await status_counts(store) == {(r, s): n for r, s, n in counted}  # what the triggers keep
    assert await status_counts(store) == {("r1", "approved"): 1, ("r1", "scored"): 1, ("r2", "approved"): 1}


@pytest.mark.parametrize(
    "decision",
    [
        Decision("delete", "ana"),
        Decision("approve", " "),
        Decision("edit", "ana"),
        Decision("edit", "ana", answer="  "),
        Decision("score", "ana"),
        Decision("score", "ana", score=1.5),
        Decision("approve", "ana", score=-0.1),
    ],
)
def test_invalid_decisions_are_refused(decision: Decision) -> None:
    with pytest.raises(InvalidDecision):
        decision.checked()


async def test_list_filters_and_pages(store: Store) -> None:
    batch = [row(f"i{n:02d}", ts=float(n), route="r1" if n % 2 else "r2", variant=f"v{n % 3}") for n in range(20)]
    await write(store, batch, [], ReviewPolicy(sample=1.0))
    await decide(store, "i03", Decision("approve", "ana"), now=1.0)
    assert await count_items(store, Filters()) == 19
    assert await count_items(store, Filters(status="done")) == 1
    got = await list_items(store, Filters(route="r1", variant="v1"))
    assert [s.id for s in got] == ["i01", "i07", "i13", "i19"]
    assert [s.id for s in await list_items(store, Filters(since=5.0, until=8.0))] == ["i05", "i06", "i07"]
    seen, after = [], None
    while page := await list_items(store, Filters(), after=after, limit=6):
        seen += [s.id for s in page]
        after = (page[-1].ts, page[-1].id)
    assert seen == [f"i{n:02d}" for n in range(20) if n != 3]
    with pytest.raises(ValueError, match="status"):
        await list_items(store, Filters(status="bogus"))


async def test_feedback_from_another_caller_neither_queues_nor_shows(store: Store) -> None:
    # security finding 2 in the review queue: only the caller that made the request, or the admin key ("*")
    early = [feedback("m0", 1.0, request_id="e", caller="mallory", label="bad")]  # before its interaction
    assert await write(store, [], early, FLAGS) == 0
    batch = [row("a", ts=10.0, caller="alice"), row("b", ts=11.0, caller="bob"), row("c", ts=12.0, caller="carol")]
    batch += [row("d", ts=13.0, caller="dan", response_id="r-d"), row("e", ts=14.0, caller="erin")]
    fb = [
        feedback("m1", 20.0, request_id="a", caller="mallory", label="bad"),
        feedback("a1", 21.0, request_id="a", caller="alice", label="good"),
        feedback("b1", 22.0, request_id="b", caller="bob", label="bad"),
        feedback("s1", 23.0, request_id="c", caller="*", label="bad"),
        feedback("m2", 24.0, response_id="r-d", caller="mallory", label="bad"),
    ]
    assert await write(store, batch, fb, FLAGS) == 2
    later = [feedback("m3", 30.0, request_id="b", caller="mallory", score=0.0)]  # after its interaction
    later += [feedback("m4", 31.0, request_id="a", caller="mallory", label="bad")]
    assert await write(store, [], later, FLAGS) == 0
    assert await queued(store) == {"b": "label", "c": "label"}
    await enqueue(store, batch, [], ReviewPolicy(sample=1.0), now=200.0)
    items = await load_items(store, ["a", "b", "c", "d", "e"])
    got = {item["id"]: [f["feedback_id"] for f in item["feedback"]] for item in items}
    assert got == {"a": ["a1"], "b": ["b1"], "c": ["s1"], "d": [], "e": []}


async def test_retention_deletes_items_and_decisions_with_their_interactions(store: Store) -> None:
    batch = [row("a", ts=1.0, route="r1"), row("b", ts=2.0, route="r1"), row("c", ts=3.0, route="r2")]
    await write(store, batch, [], ReviewPolicy(sample=1.0))
    assert await decide(store, "a", Decision("edit", "ana", answer="a corrected answer"), now=10.0)
    assert await decide(store, "c", Decision("approve", "bo"), now=11.0)
    # r2 keeps 1000 s; every other route 1.5 s: at t = 3 only "a" (t = 1) is past its retention
    assert await expire(store, route_retention={"r2": 1000.0}, default=1.5, now=3.0) == 1
    assert await queued(store) == {"b": "sample", "c": "sample"}
    assert [str(r[0]) for r in await store.fetch("SELECT item_id FROM review_decisions")] == ["c"]
    assert await backlog(store) == {"r1": 1}  # the counts follow the deletes
    assert await status_counts(store) == {("r1", "pending"): 1, ("r2", "approved"): 1}
