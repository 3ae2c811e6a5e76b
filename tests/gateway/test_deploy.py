"""The deployment workflow against real stores: the SQL aggregation against a per-user computation in Python
(SQLite and PostgreSQL), the controller's steps and rollback with the overlay every replica serves, and
promote/rollback rewriting the config with every other byte kept."""

from __future__ import annotations

import asyncio
import random
import re
from pathlib import Path
from typing import Any

import orjson
import pytest
from scipy import stats

from collectors import rollouts as stored
from collectors.evals.store import run_results
from collectors.experiment_data import variant_sums
from collectors.store import open_store
from collectors.store.base import FeedbackRow, InteractionRow, Store
from gateway.analysis import build_report, render_table
from gateway.cli import main
from gateway.config import ConfigError, load_config, parse_config
from gateway.config_edit import rewrite, set_weights
from gateway.evals import compare_upstreams
from gateway.report_html import render_html
from gateway.rollout_state import overlay
from gateway.rollouts import act, check, start
from policies.routing import sticky_variant, unit_id
from tests.collectors.pg import pg_dsn, postgres_server  # noqa: F401

CONFIG = """# the support bot's split
server: {state_dir: STATE}
store: STORE
upstreams:
  prod: {provider: dummy}   # production
  cand: {provider: dummy}
routes:
  bot:
    # weights: percent of users
    variants: {prod: 100, cand: 0}   # keep this comment
    analysis:
      control: prod
      primary: thumbs_up
      guardrails: {error_rate: 0.05}
      min_users: 30
      min_duration: 0s
    rollout:
      candidate: cand
      steps: [20, 50, 100]
      interval: 2s
"""


def write_config(tmp_path: Path, store: str) -> Path:
    path = tmp_path / "turnout.yaml"
    path.write_text(CONFIG.replace("STATE", str(tmp_path / "state")).replace("STORE", store))
    return path


Truth = list[tuple[str, str, int, int, list[float]]]


async def traffic(store: Store, *, users: int, weights: dict[str, float], since: float, error: dict[str, float],
                  up: dict[str, float], seed: int, span: float = 10.0) -> Truth:  # fmt: skip
    """Store ``users`` users' requests (1-3 each) with feedback; returns (user, variant, errors, n, thumbs).
    Every third user is client "acme" (the rest "globex"); a cand request costs $0.002, a prod one's cost is
    unknown."""
    rng = random.Random(seed)
    rows, fb, truth = [], [], []
    for u in range(users):
        user = f"user-{seed}-{u}"
        variant = sticky_variant("bot", user, weights)
        n = rng.randint(1, 3)
        errs, thumbs = 0, []
        for k in range(n):
            rid = f"{seed}-{u}-{k}"
            failed = rng.random() < error[variant]
            errs += failed
            record = {"k": "i", "request_id": rid, "extra": {"unit": unit_id(user)}}
            rows.append(InteractionRow(rid, since + rng.random() * span, "bot", "bot", variant, "primary", None,
                                       variant, "chat.completions", 502 if failed else 200,
                                       "upstream_error" if failed else "ok", 100 + rng.random() * 50, None, False,
                                       None, orjson.dumps(record).decode(), unit_id(user), 30.0, None,
                                       "acme" if u % 3 == 0 else "globex", None,
                                       0.002 if variant == "cand" else None))  # fmt: skip
            if not failed and rng.random() < 0.7:
                label = "good" if rng.random() < up[variant] else "bad"
                thumbs.append(1.0 if label == "good" else 0.0)
                fb.append(FeedbackRow(f"f{rid}", since + span + 1, rid, None, None, label, "{}", None))
        truth.append((user, variant, errs, n, thumbs))
    await store.write(rows, fb)
    return truth


@pytest.fixture(params=["sqlite", "postgres"])
def dsn(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 't.db'}"
    return request.getfixturevalue("pg_dsn")


async def test_sql_sums_match_a_per_user_computation(dsn: str) -> None:
    store = open_store(dsn)
    await store.open()
    try:
        truth = await traffic(store, users=300, weights={"prod": 50, "cand": 50}, since=1000.0,
                              error={"prod": 0.05, "cand": 0.2}, up={"prod": 0.6, "cand": 0.7}, seed=1)  # fmt: skip
        data = await variant_sums(store, "bot", "bot", since=1000.0, until=1020.0, series=True)
    finally:
        await store.close()
    final = data.final
    for v, metrics in final.items():  # the last point of the series is the whole window
        assert {m: pytest.approx(t) for m, t in metrics.items()} == data.snapshots[-1][v]
    for variant in ("prod", "cand"):
        mine = [t for t in truth if t[1] == variant]
        users, x, y, xx, yy, xy = final[variant]["error_rate"]
        assert users == len(mine)
        assert x == sum(t[2] for t in mine) and y == sum(t[3] for t in mine)
        assert xx == sum(t[2] ** 2 for t in mine) and xy == sum(t[2] * t[3] for t in mine)
        assert yy == sum(t[3] ** 2 for t in mine)
        users, x, y, xx, yy, xy = final[variant]["thumbs_up"]
        assert x == pytest.approx(sum(sum(t[4]) for t in mine)) and y == sum(len(t[4]) for t in mine)
        assert xx == pytest.approx(sum(sum(t[4]) ** 2 for t in mine))
        assert yy == sum(len(t[4]) ** 2 for t in mine)
    # snapshots are cumulative: users only grow, and the last one holds everyone
    counts = [sum(s[v]["requests"][0] for v in s) for s in data.snapshots if s]
    assert counts == sorted(counts) and counts[-1] == len(truth)
    assert 100 < data.latency_quantiles["prod"]["p50"] < 160
    # over a large window the series is drawn from a share of users (hashes: a uniform draw)
    store = open_store(dsn)
    await store.open()
    try:
        sampled = await variant_sums(store, "bot", "bot", since=1000.0, until=1020.0, series=True, max_rows=150)
    finally:
        await store.close()
    assert 0.2 < sampled.series_share < 0.3
    drawn = sum(m["requests"][0] for m in sampled.snapshots[-1].values())
    assert abs(drawn - sampled.series_share * len(truth)) < 4 * (len(truth) * 0.25 * 0.75) ** 0.5
    assert sampled.final == data.final  # the decision still uses everyone
    cand_requests = sum(t[3] for t in truth if t[1] == "cand")
    assert data.cost["cand"] == (pytest.approx(0.002 * cand_requests), cand_requests)
    assert data.cost["prod"] == (0.0, 0)  # no request with a known cost


async def test_feedback_counts_from_the_requests_caller_and_the_admin_only(dsn: str) -> None:
    """Several ratings of one answer are averaged over its own caller's and the admin key's; anyone else's are
    not counted (SAME_CALLER_SQL), whether keyed by request id or by response id."""

    def req(rid: str, caller: str, response_id: str | None = None) -> InteractionRow:
        return InteractionRow(rid, 1001.0, "bot", "bot", "prod", "primary", None, "prod", "chat.completions", 200,
                              "ok", 100.0, None, False, response_id, "{}", "u-" + rid, 10.0, caller=caller)  # fmt: skip

    def rate(fid: str, caller: str, *, rid: str | None = None, resp: str | None = None, **kw: Any) -> FeedbackRow:
        return FeedbackRow(fid, 1002.0, rid, resp, kw.get("score"), kw.get("label"), "{}", kw.get("done"), caller)

    store = open_store(dsn)
    await store.open()
    try:
        await store.write(
            [req("a", "alice"), req("b", "bob"), req("c", "*"), req("d", "dave", response_id="resp-d")],
            [
                rate("1", "alice", rid="a", label="good", score=1.0, done=1),
                rate("2", "*", rid="a", label="bad", score=0.0),  # averaged with alice's: 0.5
                rate("3", "mallory", rid="a", label="bad", score=0.0, done=0),  # not alice's request: ignored
                rate("4", "mallory", rid="b", label="good"),  # ignored: b has no rating
                rate("5", "*", rid="c", label="good", score=0.25),
                rate("6", "dave", resp="resp-d", label="bad", done=0),
                rate("7", "mallory", resp="resp-d", label="good"),
            ],
        )
        data = await variant_sums(store, "bot", "bot", since=1000.0, until=1010.0)
    finally:
        await store.close()
    m = data.final["prod"]
    assert m["requests"][:2] == (4, 4.0)
    # per user (one request each): thumbs a 0.5, c 1, d 0; score a 0.5, c 0.25; done a 1, d 0
    assert m["thumbs_up"] == (4, 1.5, 3.0, pytest.approx(1.25), 3.0, 1.5)
    assert m["feedback_score"] == (4, 0.75, 2.0, pytest.approx(0.3125), 2.0, 0.75)
    assert m["task_completed"] == (4, 1.0, 2.0, 1.0, 2.0, 1.0)


def test_report_costs_and_filter_by_client(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    db = tmp_path / "t.db"
    path = write_config(tmp_path, f"sqlite:///{db}")

    async def run() -> tuple[Truth, list[dict[str, Any]]]:
        store = open_store(f"sqlite:///{db}")
        await store.open()
        try:
            truth = await traffic(store, users=300, weights={"prod": 50, "cand": 50}, since=1000.0,
                                  error={"prod": 0.05, "cand": 0.2}, up={"prod": 0.6, "cand": 0.7},
                                  seed=2)  # fmt: skip
            config = load_config(path).config
            return truth, [await build_report(store, config, "bot", now=1020.0, client=c)
                           for c in (None, "acme", "initech")]  # fmt: skip
        finally:
            await store.close()

    truth, (everyone, acme, nobody) = asyncio.run(run())
    acme_users = {f"user-2-{u}" for u in range(0, 300, 3)}
    for report, who in ((everyone, {t[0] for t in truth}), (acme, acme_users)):
        mine = [t for t in truth if t[0] in who]
        for v in ("prod", "cand"):
            assert report["variants"][v]["users"] == sum(1 for t in mine if t[1] == v)
            assert report["variants"][v]["requests"] == sum(t[3] for t in mine if t[1] == v)
        cand = sum(t[3] for t in mine if t[1] == "cand")
        assert report["variants"]["cand"]["cost_usd"] == pytest.approx(0.002 * cand)
        assert report["variants"]["cand"]["cost_per_request_usd"] == pytest.approx(0.002)
        assert report["variants"]["prod"]["cost_usd"] is None  # unknown, not $0
        assert report["variants"]["prod"]["cost_per_request_usd"] is None
    assert acme["client"] == "acme" and everyone["client"] is None
    assert nobody["variants"] == {}
    # the command line: --client and the cost in the table and the JSON
    js = tmp_path / "r.json"
    assert main(["experiment", "report", "bot", "-c", str(path), "--client", "acme", "--json", str(js)]) == 0
    table, err = capsys.readouterr()
    assert err == "experiment report bot: 3/3 steps\n"  # progress: a plain line when stderr is not a terminal
    assert main(["experiment", "report", "bot", "-c", str(path), "--quiet"]) == 0
    assert capsys.readouterr().err == ""
    data = orjson.loads(js.read_text())
    assert data["client"] == "acme" and "client acme" in table.splitlines()[0]
    assert data["variants"]["cand"]["requests"] == sum(t[3] for t in truth if t[0] in acme_users and t[1] == "cand")
    assert data["variants"]["cand"]["cost_usd"] == pytest.approx(0.002 * data["variants"]["cand"]["requests"])
    assert data["variants"]["prod"]["cost_usd"] is None
    rows = {line.split()[0]: line.split() for line in table.splitlines()[3:5]}
    assert rows["cand"][-2:] == [f"{data['variants']['cand']['cost_usd']:.4f}", "0.002000"]
    assert rows["prod"][-2:] == ["-", "-"]


async def test_controller_steps_then_rolls_back_a_breach_and_the_overlay_follows(tmp_path: Path) -> None:
    path = write_config(tmp_path, f"sqlite:///{tmp_path / 't.db'}")
    config = load_config(path).config
    store = open_store(f"sqlite:///{tmp_path / 't.db'}")
    await store.open()
    try:
        t0 = 10_000.0
        state = await start(store, config, "bot", actor="alice", now=t0)
        assert (state.phase, state.step) == ("step", 0)
        served = overlay(config, await stored.load_all(store)).routes["bot"].variants
        assert served == {"prod": 80.0, "cand": 20.0}
        await traffic(store, users=400, weights=dict(served), since=t0 + 0.1, error={"prod": 0.0, "cand": 0.0},
                      up={"prod": 0.6, "cand": 0.6}, seed=2)  # fmt: skip
        held = await check(store, config, "bot", now=t0 + 1)  # inside the interval: held
        assert held is not None and held.step == 0
        moved = await check(store, config, "bot", now=t0 + 12)
        assert moved is not None and (moved.phase, moved.step) == ("step", 1), moved.reason
        served = overlay(config, await stored.load_all(store)).routes["bot"].variants
        assert served == {"prod": 50.0, "cand": 50.0}
        # the candidate starts failing a third of its requests: rolled back at the next check
        await traffic(store, users=200, weights=dict(served), since=t0 + 13, error={"prod": 0.0, "cand": 0.35},
                      up={"prod": 0.6, "cand": 0.6}, seed=3)  # fmt: skip
        back = await check(store, config, "bot", now=t0 + 24)
        assert back is not None and back.phase == "rolled_back", back.reason
        assert "error_rate" in back.reason
        served = overlay(config, await stored.load_all(store)).routes["bot"].variants
        assert served == {"prod": 100.0, "cand": 0.0}
        # the report after it shows what the controller judged: the last step, its weights, the rollback
        report = await build_report(store, config, "bot", now=t0 + 100)
        assert report["window"]["what"] == "rollout step 50 % (the last one, before rolled back)"
        assert report["weights"] == {"prod": 50.0, "cand": 50.0}
        assert report["decision"] == "rollback" and "error_rate" in report["reasons"][0]
        log = await stored.audit_log(store, "bot")
        assert [(a.to_phase, a.to_percent) for a in reversed(log)] == [("step", 20), ("step", 50), ("rolled_back", 0)]
        assert log[0].actor.startswith("controller@") and log[0].figures["analysis"]["breach"] is True
        assert log[-1].actor == "alice"
        with pytest.raises(Exception, match="nothing to approve"):
            await act(store, "bot", "approve", actor="bob", now=t0 + 30)
    finally:
        await store.close()


async def test_the_report_after_a_promote_still_judges_the_last_step(tmp_path: Path) -> None:
    """`turnout promote` ends a finished rollout (aborted): the report then read the whole experiment, with the
    candidate's later traffic at 100 % set against the control's earlier traffic, and said rollback."""
    path = write_config(tmp_path, f"sqlite:///{tmp_path / 't.db'}")
    config = load_config(path).config
    store = open_store(f"sqlite:///{tmp_path / 't.db'}")
    await store.open()
    try:
        t0 = 10_000.0
        await start(store, config, "bot", actor="alice", now=t0)
        same = {"error": {"prod": 0.0, "cand": 0.0}, "up": {"prod": 0.6, "cand": 0.6}}
        await traffic(store, users=400, weights={"prod": 80, "cand": 20}, since=t0 + 0.1, seed=2, **same)
        assert (await check(store, config, "bot", now=t0 + 12)).step == 1  # type: ignore[union-attr]
        await traffic(store, users=400, weights={"prod": 50, "cand": 50}, since=t0 + 13, seed=3, **same)
        done = await check(store, config, "bot", now=t0 + 30)
        assert done is not None and done.phase == "succeeded", done.reason
        # afterwards the candidate serves everyone, and its later users rate it badly
        await traffic(store, users=400, weights={"prod": 0, "cand": 100}, since=t0 + 40, seed=4,
                      error={"prod": 0.0, "cand": 0.0}, up={"prod": 0.6, "cand": 0.1})  # fmt: skip
        assert await asyncio.to_thread(main, ["promote", "bot", "cand", "-c", str(path), "--actor", "alice"]) == 0
        assert (await stored.load(store, "bot")).phase == "aborted"  # type: ignore[union-attr]
        report = await build_report(store, load_config(path).config, "bot", now=t0 + 100)
        assert report["window"]["what"] == "rollout step 50 % (the last one, before succeeded)"
        assert report["window"]["until"] == pytest.approx(done.since)
        assert report["weights"] == {"prod": 50.0, "cand": 50.0}
        assert report["decision"] != "rollback", report["reasons"]
    finally:
        await store.close()


def test_promote_and_rollback_keep_every_other_byte(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = write_config(tmp_path, f"sqlite:///{tmp_path / 't.db'}")
    before = path.read_text()
    assert main(["promote", "bot", "cand", "-c", str(path), "--actor", "alice"]) == 0
    after = path.read_text()
    changed = [(a, b) for a, b in zip(before.splitlines(), after.splitlines(), strict=True) if a != b]
    assert changed == [("    variants: {prod: 100, cand: 0}   # keep this comment",
                        "    variants: {prod: 0, cand: 100}   # keep this comment")]  # fmt: skip
    assert load_config(path).config.routes["bot"].variants == {"prod": 0, "cand": 100}
    assert main(["rollback", "bot", "-c", str(path)]) == 0
    assert path.read_text() == before
    assert main(["promote", "bot", "nope", "-c", str(path)]) == 2
    assert "not a variant" in capsys.readouterr().err
    assert path.read_text() == before


def test_rewrite_handles_block_style_and_refuses_an_invalid_result(tmp_path: Path) -> None:
    text = "upstreams:\n  a: {provider: dummy}\n  b: {provider: dummy}\nroutes:\n  r:\n    variants:\n" \
           "      a: 90   # control\n      b: 10.5\n"  # fmt: skip
    new = rewrite(text, "r", {"a": 0, "b": 100}, "f.yaml")
    assert new == text.replace("a: 90", "a: 0").replace("b: 10.5", "b: 100")
    assert parse_config(new.encode(), "f.yaml", store_only=True).config.routes["r"].variants == {"a": 0, "b": 100}
    bad = tmp_path / "t.yaml"
    bad.write_text(text)
    with pytest.raises(ConfigError, match="must not all be 0"):
        set_weights(bad, "r", {"a": 0, "b": 0})
    assert bad.read_text() == text


@pytest.mark.parametrize(("wrong", "phase"), [(0.0, "step"), (0.5, "rolled_back")])
async def test_eval_gate_runs_the_suite_comparison_first(tmp_path: Path, wrong: float, phase: str) -> None:
    answers = {f"q{i}": f"a{i}" for i in range(60)}
    suite = {"suite": "gate", "cases": [{"id": q, "messages": [{"role": "user", "content": q}], "expected": a,
                                          "assert": [{"type": "equals"}]} for q, a in answers.items()]}  # fmt: skip
    (tmp_path / "suite.yaml").write_text(orjson.dumps(suite).decode())
    text = CONFIG.replace("  prod: {provider: dummy}   # production\n  cand: {provider: dummy}\n",
                          f"  prod: {{provider: dummy, answers: {orjson.dumps(answers).decode()}}}\n"
                          f"  cand: {{provider: dummy, answers: {orjson.dumps(answers).decode()}, "
                          f"wrong_share: {wrong}}}\n")  # fmt: skip
    text = text.replace("      interval: 2s\n", "      interval: 2s\n      gates: {eval: suite.yaml}\n")
    path = write_config(tmp_path, f"sqlite:///{tmp_path / 't.db'}")
    path.write_text(text.replace("STATE", str(tmp_path / "state")).replace("STORE", f"sqlite:///{tmp_path / 't.db'}"))
    config = load_config(path).config
    store = open_store(f"sqlite:///{tmp_path / 't.db'}")
    await store.open()
    try:
        first = await start(store, config, "bot", actor="alice", now=100.0)
        assert first.phase == "eval"
        assert overlay(config, await stored.load_all(store)).routes["bot"].variants == {"prod": 100.0, "cand": 0.0}
        after = await check(store, config, "bot", now=101.0, config_path=path)
        assert after is not None and after.phase == phase, after.reason
        assert ("eval gate passed" if phase == "step" else "eval gate failed") in after.reason
    finally:
        await store.close()


def test_manual_gate_config_is_checked_with_key_paths(tmp_path: Path) -> None:
    base = CONFIG.replace("STATE", str(tmp_path)).replace("STORE", f"sqlite:///{tmp_path / 't.db'}")
    manual = base.replace("      interval: 2s\n", "      interval: 2s\n      gates: {manual: true}\n")
    ok = parse_config(manual.encode(), "t.yaml").config
    assert ok.routes["bot"].rollout is not None and ok.routes["bot"].rollout.gates.manual
    for gates, steps, message in (
        ("{manual: maybe}", "[20, 50, 100]", "routes.bot.rollout.gates.manual: "),
        ("{manual: true, approve: true}", "[20, 50, 100]", "routes.bot.rollout.gates.approve: "),
        ("{manual: true}", "[100]", "routes.bot.rollout.gates.manual: the approval is asked before"),
    ):
        text = base.replace("      interval: 2s\n", f"      interval: 2s\n      gates: {gates}\n")
        with pytest.raises(ConfigError, match=re.escape(message)):
            parse_config(text.replace("steps: [20, 50, 100]", f"steps: {steps}").encode(), "t.yaml")


@pytest.mark.parametrize(("prod_wrong", "cand_wrong", "decision"), [(0.5, 0.0, "promote"), (0.0, 0.5, "rollback")])
async def test_eval_score_primary_judges_the_stored_eval_comparison(
    tmp_path: Path, dsn: str, prod_wrong: float, cand_wrong: float, decision: str
) -> None:
    answers = {f"q{i:02d}": f"a{i}" for i in range(60)}
    suite = {"suite": "golden", "cases": [{"id": q, "messages": [{"role": "user", "content": q}], "expected": a,
                                           "assert": [{"type": "equals"}]} for q, a in answers.items()]}  # fmt: skip
    (tmp_path / "suite.yaml").write_text(orjson.dumps(suite).decode())
    known = orjson.dumps(answers).decode()
    text = CONFIG.replace("  prod: {provider: dummy}   # production\n  cand: {provider: dummy}\n",
                          f"  prod: {{provider: dummy, answers: {known}, wrong_share: {prod_wrong}}}\n"
                          f"  cand: {{provider: dummy, answers: {known}, wrong_share: {cand_wrong}}}\n")  # fmt: skip
    text = text.replace("primary: thumbs_up", "primary: eval_score")
    path = write_config(tmp_path, dsn)
    path.write_text(text.replace("STATE", str(tmp_path / "state")).replace("STORE", dsn))
    config = load_config(path).config
    store = open_store(dsn)
    await store.open()
    try:
        await traffic(store, users=300, weights={"prod": 50, "cand": 50}, since=1000.0,
                      error={"prod": 0.0, "cand": 0.0}, up={"prod": 0.6, "cand": 0.6}, seed=3)  # fmt: skip
        weights = {"prod": 50.0, "cand": 50.0}
        config = config.model_copy(update={"routes": {"bot": config.routes["bot"].model_copy(
            update={"variants": weights})}})  # fmt: skip
        before = await build_report(store, config, "bot", now=1020.0)
        cmp = await compare_upstreams(config, tmp_path / "suite.yaml", "prod", "cand", store)
        report = await build_report(store, config, "bot", now=1020.0, series=True)
        stored_prod = {r["case_id"]: r["score"] for r in await run_results(store, cmp.baseline.header.run_id)}
        stored_cand = {r["case_id"]: r["score"] for r in await run_results(store, cmp.candidate.header.run_id)}
    finally:
        await store.close()
    assert before["decision"] == "continue" and "no complete eval runs of cand and prod" in before["reasons"][0]
    assert report["decision"] == decision, report["reasons"]
    (primary,) = [c for c in report["comparisons"] if c["role"] == "primary"]
    assert primary["metric"] == "eval_score" and primary["alpha"] == pytest.approx(0.025)
    cases = sorted(stored_prod)
    oracle = stats.ttest_rel([stored_cand[c] for c in cases], [stored_prod[c] for c in cases])
    interval = oracle.confidence_interval(confidence_level=1 - 0.025)
    assert (primary["low"], primary["high"]) == (pytest.approx(interval.low), pytest.approx(interval.high))
    assert primary["verdict"] == ("better" if decision == "promote" else "worse")
    e = report["evals"]["cand"]
    assert (e["suite"], e["cases"], e["candidate_run"]) == ("golden", 60, cmp.candidate.header.run_id)
    assert e["candidate_score"] == pytest.approx(cmp.candidate.score)
    assert "eval_score" in report["reasons"][0]
    assert all(p["comparisons"][0]["metric"] == "eval_score" for p in report["series"])
    assert "eval_score of cand vs control on suite golden (60 cases" in render_table(report)
    page = render_html(report)
    assert "Eval score of <b>cand</b> on suite <code>golden</code>" in page and "over the same 60 cases" in page
