"""Scheduled evals inside ``turnout serve`` (JB-1, JB-2): two gateway processes on one SQLite file and on one
PostgreSQL run each tick once; a runner killed with SIGKILL mid-run leaves a run that is never reported
complete and the next tick runs; every replica's /metrics shows the stored scores."""

from __future__ import annotations

import asyncio
import itertools
import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from collectors.evals.store import StoredRun, list_runs
from collectors.evals.suite import load_suite
from collectors.store import open_store
from collectors.store.base import Query, joined
from gateway.config import load_config
from gateway.evals import run_suite
from tests.collectors.pg import pg_dsn, postgres_server  # noqa: F401
from tests.e2e.prometheus import PrometheusServer
from tests.harness import GatewayProcess, write_config

ROOT = Path(__file__).resolve().parents[2]
RULES = ROOT / "helm" / "turnout" / "files" / "alerts.yaml"
QUESTIONS = {f"What is {i} times 3?": str(3 * i) for i in range(40)}

CONFIG = """
server: {{state_dir: {state}}}
store: {dsn}
upstreams:
  good: {{provider: dummy, model: good, answers: {answers}, wrong_share: 0.05}}
  bad: {{provider: dummy, model: bad, answers: {answers}, wrong_share: 0.5}}
  slow: {{base_url: "http://127.0.0.1:{slow_port}/v1", model: slow, timeout_s: 30, retries: 0}}
routes:
  bot:
    variants: {{good: 90, bad: 10}}
    retraining: {{min_eval_score: 0.85}}
  slow-bot: {{variants: {{slow: 1}}}}
evals:
  - {{suite: suite.yaml, route: {route}, every: {every}}}
"""


def setup(
    tmp_path: Path, dsn: str, *, route: str = "bot", every: str = "2s", slow_port: int = 9, replica: int = 1
) -> Path:
    lines = [
        {"id": f"q{i:02d}", "messages": [{"role": "user", "content": q}], "expected": a, "assert": [{"type": "equals"}]}
        for i, (q, a) in enumerate(QUESTIONS.items())
    ]
    (tmp_path / "cases.jsonl").write_text("".join(json.dumps(line) + "\n" for line in lines))
    (tmp_path / "suite.yaml").write_text("suite: times\nthreshold: {pass_rate: 0.85}\ncases_file: cases.jsonl\n")
    text = CONFIG.format(
        state=tmp_path / f"state-{replica}",
        dsn=dsn,
        answers=json.dumps(QUESTIONS),
        route=route,
        every=every,
        slow_port=slow_port,
    )
    return write_config(tmp_path, text, f"turnout-{replica}.yaml")  # a replica's own state_dir (journal lock)


def stored_runs(dsn: str) -> list[StoredRun]:
    async def read() -> list[StoredRun]:
        store = open_store(dsn)
        try:
            await store.open()
            return await list_runs(store, now=time.time(), limit=1000)
        finally:
            await store.close()

    return asyncio.run(read())


def wait_for(check, what: str, timeout: float = 30.0):  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while True:
        found = check()
        if found:
            return found
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.2)


def scores_shown(url: str) -> str | None:
    text = httpx.get(url + "/metrics").text
    return text if "turnout_eval_score{" in text else None


@pytest.fixture(params=["sqlite", "postgres"])
def dsn(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path}/turnout.db"
    return str(request.getfixturevalue("pg_dsn"))


def test_two_replicas_run_each_tick_once_and_both_export_the_scores(tmp_path: Path, dsn: str) -> None:
    configs = [setup(tmp_path, dsn, every="2s", replica=i) for i in (1, 2)]
    with GatewayProcess(configs[0]) as one, GatewayProcess(configs[1]) as two:
        wait_for(lambda: len([r for r in stored_runs(dsn) if r.upstream == "good"]) >= 3, "three ticks", 40)
        scraped = {}
        for gateway in (one, two):  # each replica reads the stored runs itself
            scraped[gateway.url] = wait_for(lambda g=gateway: scores_shown(g.url), "eval scores on /metrics")
    runs = stored_runs(dsn)
    # a tick runs good, then bad: the good runs start the ticks, at least 2 s apart (never two runs of one tick)
    starts = sorted(r.started for r in runs if r.upstream == "good")
    gaps = [b - a for a, b in itertools.pairwise(starts)]
    assert len(starts) >= 3 and min(gaps) > 1.5, gaps
    assert len(starts) - 1 <= len([r for r in runs if r.upstream == "bad"]) <= len(starts)
    done = [r for r in runs if r.status == "complete"]
    assert {r.route for r in done} == {"bot"} and {r.source for r in done} == {"schedule"}
    good = max((r for r in done if r.upstream == "good"), key=lambda r: r.finished or 0)
    bad = max((r for r in done if r.upstream == "bad"), key=lambda r: r.finished or 0)
    assert (good.pass_rate or 0) >= 0.85 > (bad.pass_rate or 1)
    for text in scraped.values():
        assert 'turnout_eval_score{route="bot",suite="times",variant="good"}' in text
        assert 'turnout_eval_score{route="bot",suite="times",variant="bad"}' in text
        assert 'turnout_eval_last_run_timestamp_seconds{suite="times",upstream="good"}' in text
        assert 'turnout_eval_interval_seconds{suite="times"} 2.0' in text
        assert 'turnout_job_runs_total{job="eval:bot:suite.yaml",result="success"}' in text


_RUNNER = textwrap.dedent(
    """
    import asyncio, sys
    from collectors.store import open_store
    from gateway.config import load_config
    from gateway.jobs import run_jobs

    async def main():
        loaded = load_config(sys.argv[1])
        store = open_store(loaded.secrets.store_dsn)
        await run_jobs(lambda: loaded, store, holder=sys.argv[2], stop=asyncio.Event(), poll_s=0.1, lease_s=1.5)

    asyncio.run(main())
    """
)


def test_a_runner_killed_mid_run_is_never_reported_complete(tmp_path: Path) -> None:
    from tests.fakes.openai_server import Behavior, FakeOpenAI

    dsn = f"sqlite:///{tmp_path}/turnout.db"
    with FakeOpenAI() as fake:
        fake.set("slow", Behavior(delay_s=2.0))
        config = setup(tmp_path, dsn, route="slow-bot", every="3s", slow_port=fake.port)
        env = {**os.environ, "PYTHONPATH": str(ROOT)}
        first = subprocess.Popen([sys.executable, "-c", _RUNNER, str(config), "first"], env=env, cwd=tmp_path)
        try:
            wait_for(lambda: len(fake.requests) >= 3, "the first run's calls", 20)  # 40 cases at 2 s: mid-run
        finally:
            first.send_signal(signal.SIGKILL)
            first.wait()
        [killed] = stored_runs(dsn)
        assert killed.status == "running" and killed.finished is None and killed.pass_rate is None
        fake.set("slow", Behavior(delay_s=0.0))
        second = subprocess.Popen([sys.executable, "-c", _RUNNER, str(config), "second"], env=env, cwd=tmp_path)
        try:
            done = wait_for(
                lambda: [r for r in stored_runs(dsn) if r.status == "complete"], "the next tick's complete run", 20
            )
        finally:
            second.kill()
            second.wait()
    assert len(done) == 1 and done[0].cases == 40 and done[0].run_id != killed.run_id
    runs = {r.run_id: r for r in stored_runs(dsn)}
    assert runs[killed.run_id].status == "running"  # the killed run stays incomplete, never published


def test_prometheus_fires_eval_score_low_for_the_bad_variant_only(tmp_path: Path) -> None:
    rules = yaml.safe_load(RULES.read_text())
    for group in rules["groups"]:
        for rule in group["rules"]:
            rule["for"] = "1s"  # the rules as shipped, with `for:` shortened
    (tmp_path / "alerts.yaml").write_text(yaml.safe_dump(rules, sort_keys=False))
    config = setup(tmp_path, f"sqlite:///{tmp_path}/turnout.db", every="1h")
    with GatewayProcess(config) as gateway:
        target = gateway.url.removeprefix("http://")
        with PrometheusServer(tmp_path / "prom", targets=[target], rule_files=(tmp_path / "alerts.yaml",)) as prom:
            scores = wait_for(lambda: len(prom.query("turnout_eval_score")) == 2 and prom.query("turnout_eval_score"),
                              "both variants' scores in Prometheus", 40)  # fmt: skip
            by_variant = {s["metric"]["variant"]: float(s["value"][1]) for s in scores}
            assert by_variant["good"] >= 0.85 > by_variant["bad"]
            firing = wait_for(
                lambda: [a for a in prom.alerts() if a["labels"]["alertname"] == "TurnoutEvalScoreLow"
                         and a["state"] == "firing"],
                "TurnoutEvalScoreLow to fire", 30,
            )  # fmt: skip
            time.sleep(3)  # a few more evaluations: the good variant must stay quiet
            alerts = [a for a in prom.alerts() if a["labels"]["alertname"].startswith("Turnout")]
    assert [(a["labels"]["route"], a["labels"]["variant"], a["labels"]["suite"]) for a in firing] == [
        ("bot", "bad", "times")
    ]
    names = {(a["labels"]["alertname"], a["labels"].get("variant")) for a in alerts}
    assert ("TurnoutEvalScoreLow", "good") not in names
    assert not {n for n, _ in names} & {"TurnoutEvalStale", "TurnoutJobFailing"}


async def test_eval_calls_are_never_captured_even_through_a_turnout_upstream(tmp_path: Path) -> None:
    db = f"sqlite:///{tmp_path}/turnout.db"
    served = setup(tmp_path, db)
    with GatewayProcess(served) as gateway:
        evaluator = tmp_path / "evaluator.yaml"  # another team's config: the Turnout route is their upstream
        evaluator.write_text(
            f"upstreams: {{turnout: {{base_url: '{gateway.url}/v1', model: bot}}}}\n"
            "routes: {r: {variants: {turnout: 1}}}\n"
        )
        run = await run_suite(load_config(evaluator).config, load_suite(tmp_path / "suite.yaml"), "turnout")
        assert len(run.results) == 40 and all(r.error is None for r in run.results)
        async with httpx.AsyncClient() as client:  # a user's request, captured as usual
            body = {"model": "bot", "messages": [{"role": "user", "content": "a real user question"}]}
            assert (await client.post(gateway.url + "/v1/chat/completions", json=body)).status_code == 200

        async def stored() -> list[dict[str, Any]]:
            store = open_store(db)
            try:
                await store.open()
                return [row async for row in joined(store, Query())]
            finally:
                await store.close()

        deadline = time.monotonic() + 15
        while not (rows := await stored()):
            assert time.monotonic() < deadline, "the user's request was not stored"
            await asyncio.sleep(0.2)
        await asyncio.sleep(1.0)  # anything the eval left behind would be stored by now too
        rows = await stored()
    assert [r["request"]["messages"][0]["content"] for r in rows] == ["a real user question"]
