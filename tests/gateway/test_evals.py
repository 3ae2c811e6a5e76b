"""Eval runs through the upstream seam against real HTTP fakes and the dummy's quality knob: assertions on real
answers, the judge (calibrated, malformed, timing out), retries, failed cases, the paired comparison and the
stored runs on SQLite and PostgreSQL."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from collectors.evals.assertions.judge import judge_request
from collectors.evals.store import RunHeader, latest_complete, list_runs, run_results, start_run
from collectors.evals.suite import load_suite
from collectors.store import open_store
from gateway.config import Config, load_config
from gateway.evals import EvalError, compare_upstreams, run_suite, run_targets
from gateway.upstream import make_client
from tests.collectors.pg import pg_dsn, postgres_server  # noqa: F401
from tests.fakes.openai_server import Behavior, FakeOpenAI

GOLD = [  # (question, answer graded, the person's verdict)
    (f"question {i}", f"answer {i}", i % 3 != 0) for i in range(12)
]


def config(tmp_path: Path, fake_url: str, extra: str = "") -> Config:
    text = f"""
store: sqlite:///{tmp_path}/turnout.db
upstreams:
  prod: {{base_url: "{fake_url}", model: prod-model, retries: 2}}
  flaky: {{base_url: "{fake_url}", model: flaky-model, retries: 2}}
  broken: {{base_url: "{fake_url}", model: broken-model, retries: 0}}
  tools: {{base_url: "{fake_url}", model: tools-model}}
  judge: {{base_url: "{fake_url}", model: judge-model}}
  judge-prose: {{base_url: "{fake_url}", model: judge-prose}}
  judge-slow: {{base_url: "{fake_url}", model: judge-slow, timeout_s: 0.3, retries: 0}}
{extra}
routes:
  bot: {{variants: {{prod: 1}}}}
"""
    path = tmp_path / "turnout.yaml"
    path.write_text(text)
    return load_config(path).config


def suite_file(tmp_path: Path, body: str, name: str = "suite.yaml") -> Path:
    path = tmp_path / name
    path.write_text(body)
    return path


async def test_run_against_a_real_upstream(tmp_path: Path, fake_openai: FakeOpenAI) -> None:
    fake_openai.set("prod-model", Behavior(text="Refunds are possible within 30 days."))
    fake_openai.set("flaky-model", Behavior(statuses=[503, 503], text="Refunds within 30 days."))
    fake_openai.set("broken-model", Behavior(statuses=[500] * 50))
    fake_openai.set("tools-model", Behavior(tool_call={"name": "refund", "arguments": '{"order": "A1"}'}))
    cfg = config(tmp_path, fake_openai.url)
    suite = load_suite(
        suite_file(
            tmp_path,
            """
suite: refunds
threshold: {pass_rate: 0.5}
cases:
  - id: refund
    messages: [{role: user, content: "How do I get a refund?"}]
    expected: "Refunds are possible within 30 days."
    temperature: 0
    assert:
      - {type: contains, value: "30 days"}
      - {type: similarity, threshold: 0.9, weight: 2}
  - id: tool
    messages: [{role: user, content: "Refund order A1"}]
    tools: [{type: function, function: {name: refund, parameters: {type: object}}}]
    assert: [{type: tool_call, name: refund, arguments: {order: A1}}]
""",
        )
    )
    run = await run_suite(cfg, suite, "prod")
    by_id = {r.case_id: r for r in run.results}
    assert by_id["refund"].passed and by_id["refund"].score == 1.0
    assert not by_id["tool"].passed and by_id["tool"].assertions[0].reason == "no tool call in the answer"
    assert run.pass_rate == 0.5 and run.passed
    sent = [r for r in fake_openai.requests if r.body["model"] == "prod-model"]
    assert len(sent) == 2
    for request in sent:  # never captured by a Turnout upstream, marked as an eval, not streamed
        assert request.headers["x-turnout-no-capture"] == "1" and request.headers["x-turnout-eval"] == "1"
        assert "stream" not in request.body
    assert sent[0].body["temperature"] == 0 or sent[1].body["temperature"] == 0

    tools = await run_suite(cfg, suite, "tools")
    assert {r.case_id: r.passed for r in tools.results} == {"refund": False, "tool": True}

    flaky = await run_suite(cfg, suite, "flaky")  # 503, 503, then answers: the upstream's retries apply
    assert {r.case_id: r.error for r in flaky.results} == {"refund": None, "tool": None}

    broken = await run_suite(cfg, suite, "broken")  # every case fails; the run still completes
    assert [r.passed for r in broken.results] == [False, False]
    assert all(r.error and "500" in r.error for r in broken.results)
    assert broken.notes == ["2 of 2 cases got no answer"]

    with pytest.raises(EvalError, match="unknown upstream 'nope'"):
        await run_suite(cfg, suite, "nope")


async def test_judge_answers_malformed_and_slow(tmp_path: Path, fake_openai: FakeOpenAI) -> None:
    fake_openai.set("prod-model", Behavior(text="Thanks for asking! Refunds take 30 days."))
    fake_openai.set("judge-model", Behavior(text='{"pass": true, "reason": "polite and correct"}'))
    fake_openai.set("judge-prose", Behavior(text="Yes, this answer passes."))
    fake_openai.set("judge-slow", Behavior(delay_s=5))
    cfg = config(tmp_path, fake_openai.url)
    suite = load_suite(
        suite_file(
            tmp_path,
            """
suite: judged
judge: {upstream: judge}
cases:
  - id: polite
    messages: [{role: user, content: "refund?"}]
    expected: "30 days"
    assert:
      - {type: llm_judge, rubric: "Polite and correct"}
      - {type: llm_judge, rubric: "Polite", upstream: judge-prose}
      - {type: llm_judge, rubric: "Correct", upstream: judge-slow, weight: 3}
""",
        )
    )
    t0 = time.monotonic()
    run = await run_suite(cfg, suite, "prod")
    assert time.monotonic() - t0 < 4  # the slow judge's 0.3 s timeout, not its 5 s delay
    ok, prose, slow = run.results[0].assertions
    assert ok.passed and ok.reason == "judge: pass: polite and correct"
    assert not prose.passed and prose.error and prose.reason.startswith("judge answer malformed: not a JSON object")
    assert not slow.passed and slow.error and "timed out" in slow.reason
    assert not run.results[0].passed and run.results[0].score == pytest.approx(1 / 5)
    judged = [r.body for r in fake_openai.requests if r.body["model"] == "judge-model"]
    assert judged[0]["temperature"] == 0 and judged[0]["response_format"] == {"type": "json_object"}
    assert "Polite and correct" in judged[0]["messages"][1]["content"]
    assert "Thanks for asking! Refunds take 30 days." in judged[0]["messages"][1]["content"]


def _gold(tmp_path: Path) -> None:
    lines = [
        {"messages": [{"role": "user", "content": q}], "output": a, "rubric": "Correct", "label": human}
        for q, a, human in GOLD
    ]
    (tmp_path / "gold.jsonl").write_text("".join(json.dumps(line) + "\n" for line in lines))


def _judge_answers(agree_share: float) -> dict[str, str]:
    """A dummy judge that agrees with the person on the first ``agree_share`` of the gold examples."""
    answers = {}
    for i, (q, a, human) in enumerate(GOLD):
        prompt = judge_request("Correct", "boolean", {"messages": [{"role": "user", "content": q}]}, a, None)
        verdict = human if i < agree_share * len(GOLD) else not human
        answers[prompt["messages"][1]["content"]] = json.dumps({"pass": verdict, "reason": "r"})
    return answers


@pytest.mark.parametrize(("agree", "counted"), [(1.0, True), (0.5, False)])
async def test_judge_calibration(tmp_path: Path, agree: float, counted: bool) -> None:
    _gold(tmp_path)
    answers = json.dumps(_judge_answers(agree))
    path = tmp_path / "turnout.yaml"
    path.write_text(
        f"""
store: sqlite:///{tmp_path}/t.db
upstreams:
  model: {{provider: dummy, model: m, answers: {{"2+2?": "4"}}}}
  judge: {{provider: dummy, model: j, answers: {answers}}}
routes: {{bot: {{variants: {{model: 1}}}}}}
"""
    )
    cfg = load_config(path).config
    suite = load_suite(
        suite_file(
            tmp_path,
            """
suite: calibrated
judge: {upstream: judge}
judge_check: {gold: gold.jsonl, min_kappa: 0.6}
cases:
  - id: sum
    messages: [{role: user, content: "2+2?"}]
    assert: [{type: equals, value: "4"}, {type: llm_judge, rubric: r}]
""",
        )
    )
    run = await run_suite(cfg, suite, "model")
    # the dummy judge does not know this case's judge prompt: it answers prose, a malformed verdict
    judge_result = run.results[0].assertions[1]
    assert judge_result.error and judge_result.counted is counted
    assert run.results[0].passed is (not counted)  # an uncalibrated judge's failure does not count
    if counted:
        assert run.judge_kappa == 1.0 and "calibrated" in run.notes[0]
    else:
        assert run.judge_kappa is not None and run.judge_kappa < 0.6
        assert "not calibrated" in run.notes[0] and "not counted" in run.notes[0]


QUALITY = """
store: sqlite:///{db}
upstreams:
  good: {{provider: dummy, model: good, wrong_share: 0.05, answers: {answers}}}
  same: {{provider: dummy, model: good-copy, wrong_share: 0.05, answers: {answers}}}
  worse: {{provider: dummy, model: worse, wrong_share: 0.15, answers: {answers}}}
  better: {{provider: dummy, model: better, wrong_share: 0.02, answers: {answers}}}
routes: {{bot: {{variants: {{good: 1}}}}}}
"""


def quality_setup(tmp_path: Path, dsn: str | None = None, cases: int = 200) -> tuple[Config, Path]:
    answers = {f"What is {i} times 7?": f"{i * 7}" for i in range(cases)}
    path = tmp_path / "turnout.yaml"
    path.write_text(QUALITY.format(db=f"{tmp_path}/t.db", answers=json.dumps(answers)))
    if dsn is not None:
        path.write_text(path.read_text().replace(f"sqlite:///{tmp_path}/t.db", dsn))
    lines = [
        {"id": f"q{i:03d}", "messages": [{"role": "user", "content": q}], "expected": a, "assert": [{"type": "equals"}]}
        for i, (q, a) in enumerate(answers.items())
    ]
    (tmp_path / "cases.jsonl").write_text("".join(json.dumps(line) + "\n" for line in lines))
    suite = suite_file(tmp_path, "suite: times\nthreshold: {pass_rate: 0.9}\ncases_file: cases.jsonl\n")
    return load_config(path).config, suite


@pytest.mark.parametrize(
    ("candidate", "not_worse"), [("same", True), ("good", True), ("better", True), ("worse", False)]
)
async def test_compare_decides_on_known_quality(tmp_path: Path, candidate: str, not_worse: bool) -> None:
    cfg, suite = quality_setup(tmp_path)
    cmp = await compare_upstreams(cfg, suite, "good", candidate, None)
    assert cmp.not_worse is not_worse, cmp.summary
    d = cmp.decision
    assert d.cases == 200 and 0.9 <= d.baseline_pass_rate <= 0.99
    if candidate == "worse":  # 10 points worse: the dummy's wrong prompts are a superset
        assert d.candidate_pass_rate == pytest.approx(d.baseline_pass_rate - 0.1, abs=0.05)
        assert d.only_candidate_passed == 0 and d.only_baseline_passed == len(cmp.flipped)
        assert "regressed" in cmp.summary and "WORSE" in cmp.summary
        assert cmp.by_assertion() == [("equals", 200, d.baseline_pass_rate, d.candidate_pass_rate)]


@pytest.fixture(params=["sqlite", "postgres"])
def dsn(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path}/stored.db"
    return str(request.getfixturevalue("pg_dsn"))


async def test_runs_are_stored(tmp_path: Path, dsn: str) -> None:
    cfg, suite = quality_setup(tmp_path, dsn, cases=30)
    cfg = cfg.model_copy(
        update={"upstreams": {**cfg.upstreams, "good": cfg.upstreams["good"].model_copy(update={"dataset": "sup@v3"})}}
    )
    store = open_store(dsn)
    await store.open()
    try:
        cmp = await compare_upstreams(cfg, suite, "good", "worse", store)
        runs = await list_runs(store, now=time.time())
        assert {r.upstream for r in runs} == {"good", "worse"}
        good = next(r for r in runs if r.upstream == "good")
        assert good.status == "complete" and good.dataset == "sup@v0003" and good.model == "good"
        assert good.cases == 30 and good.pass_rate == cmp.baseline.pass_rate and good.source == "compare"
        assert good.suite_sha256 == cmp.baseline.header.suite_sha256 and good.finished is not None
        results = await run_results(store, good.run_id)
        assert len(results) == 30 and {"case_id", "pass", "score", "output", "assertions"} <= set(results[0])
        assert [r.run_id for r in await list_runs(store, now=time.time(), upstream="worse")] == [
            cmp.candidate.header.run_id
        ]
        killed = RunHeader("killed", "times", "x", "good", "good", None, None, "cli", time.time() - 7 * 3600, 30, 0.9)
        await start_run(store, killed)  # a run whose process died: never completed
        found = {r.run_id: r for r in await list_runs(store, now=time.time())}
        assert found["killed"].status == "abandoned" and found["killed"].pass_rate is None
        latest = {(r.upstream, r.run_id) for r in await latest_complete(store)}
        assert latest == {("good", good.run_id), ("worse", cmp.candidate.header.run_id)}
    finally:
        await store.close()


async def test_dummy_quality_knob(tmp_path: Path) -> None:
    cfg, _ = quality_setup(tmp_path, cases=400)

    async def wrong(name: str) -> set[str]:
        client = make_client(name, cfg.upstreams[name], None, None)  # type: ignore[arg-type]
        out = set()
        for i in range(400):
            body = {"messages": [{"role": "user", "content": f"What is {i} times 7?"}]}
            reply = await client.call("chat.completions", body, stream=False, request_id="r")
            if json.loads(reply.body)["choices"][0]["message"]["content"] != f"{i * 7}":
                out.add(body["messages"][0]["content"])
        return out

    good, worse = await wrong("good"), await wrong("worse")
    assert good < worse  # a larger share is wrong on a superset of prompts, the same on every run
    assert abs(len(good) - 0.05 * 400) < 3.3 * (400 * 0.05 * 0.95) ** 0.5
    assert abs(len(worse) - 0.15 * 400) < 3.3 * (400 * 0.15 * 0.85) ** 0.5
    assert good == await wrong("same")
    bad = tmp_path / "bad.yaml"
    bad.write_text("upstreams: {x: {base_url: 'http://h/v1', wrong_share: 0.2}}\nroutes: {r: {variants: {x: 1}}}\n")
    with pytest.raises(Exception, match="answers and wrong_share are for provider dummy only"):
        load_config(bad)


async def test_concurrency_is_bounded_and_pays_off(tmp_path: Path, fake_openai: FakeOpenAI) -> None:
    fake_openai.set("prod-model", Behavior(delay_s=0.05))
    cfg = config(tmp_path, fake_openai.url)
    lines = [{"id": f"c{i}", "messages": [{"role": "user", "content": f"q{i}"}]} for i in range(32)]
    (tmp_path / "many.jsonl").write_text("".join(json.dumps(line) + "\n" for line in lines))
    suite = load_suite(suite_file(tmp_path, "suite: many\ncases_file: many.jsonl\n"))
    took = {}
    for concurrency in (1, 8):
        done: list[str] = []
        t0 = time.monotonic()
        run = await run_suite(
            cfg, suite, "prod", concurrency=concurrency, on_done=lambda r, seen=done: seen.append(r.case_id)
        )
        took[concurrency] = time.monotonic() - t0
        assert run.pass_rate == 1.0 and sorted(done) == sorted(f"c{i}" for i in range(32))
        assert [r.case_id for r in run.results] == [f"c{i}" for i in range(32)]  # the suite's order
        spans = [(r.received_at, r.finished_at or 0.0) for r in fake_openai.requests[-32:]]
        most = max(sum(1 for s, e in spans if s <= t < e) for t, _ in spans)
        assert most <= concurrency
    assert took[8] < took[1] / 3, took  # 32 x 50 ms one at a time, against 4 rounds of 8


async def test_the_judge_is_calibrated_once_per_tick(tmp_path: Path, fake_openai: FakeOpenAI) -> None:
    fake_openai.set("prod-model", Behavior(text="fine"))
    fake_openai.set("tools-model", Behavior(text="fine"))
    fake_openai.set("judge-model", Behavior(text='{"pass": true}'))
    _gold(tmp_path)
    cfg = config(tmp_path, fake_openai.url)
    suite = load_suite(
        suite_file(
            tmp_path,
            """
suite: judged
judge: {upstream: judge}
judge_check: {gold: gold.jsonl, min_kappa: 0.6}
cases:
  - {id: a, messages: [{role: user, content: hi}], assert: [{type: llm_judge, rubric: r}]}
""",
        )
    )
    runs = await run_targets(cfg, suite, ["prod", "tools"])
    judged = [r for r in fake_openai.requests if r.body["model"] == "judge-model"]
    assert len(judged) == len(GOLD) + 2  # the gold file once, then one verdict per upstream
    assert all(r.judge_kappa == 0.0 and "not calibrated" in r.notes[0] for r in runs)  # always "pass": kappa 0
    assert all(r.results[0].passed and not r.results[0].assertions[0].counted for r in runs)
