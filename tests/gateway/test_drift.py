"""Drift checks over a real store (SQLite file and PostgreSQL): windows, the stored result, the report a person
reads, `turnout drift` on the command line, and the upstream model watch."""

from __future__ import annotations

import asyncio
import datetime as dt
import random
import time
from pathlib import Path

import orjson
import pytest

from collectors.drift import models
from collectors.drift.store import checks, latest_published
from collectors.store import open_store
from collectors.store.base import Store
from gateway.cli import main
from gateway.config import load_config
from gateway.drift import DriftError, check_route, drift_jobs
from gateway.drift_report import render
from gateway.jobs import jobs_for
from tests.collectors.pg import pg_dsn, postgres_server  # noqa: F401
from tests.drift_traffic import month1, month6, stored_rows
from tests.harness import served

DAY = 86400.0
CONFIG = """
store: {dsn}
upstreams:
  prod: {{provider: dummy, model: support-v3, deprecated_at: 2027-03-01}}
routes:
  support-bot:
    variants: {{prod: 100}}
    drift: {{reference: window:30d, every: 1h, max_psi: 0.2}}
  plain:
    variants: {{prod: 100}}
"""


@pytest.fixture(params=["sqlite", "postgres"])
def dsn(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path}/turnout.db"
    return str(request.getfixturevalue("pg_dsn"))


@pytest.fixture
async def store(dsn: str):  # type: ignore[no-untyped-def]
    s: Store = open_store(dsn)
    await s.open()
    yield s
    await s.close()


def _config(tmp_path: Path, dsn: str) -> Path:
    path = tmp_path / "turnout.yaml"
    path.write_text(CONFIG.format(dsn=dsn))
    return path


async def _seed(store: Store, now: float, *, reference: int = 400, current: int = 60) -> None:
    rng = random.Random(9)
    rows = stored_rows(month1(rng, reference), route="support-bot", upstream="prod", start=now - 20 * DAY,
                       end=now - 2 * 3600, rng=rng)  # fmt: skip
    rows += stored_rows(month6(rng, current), route="support-bot", upstream="prod", start=now - 3000, end=now - 10,
                        rng=rng)  # fmt: skip
    await store.write(rows, [])


async def test_month_six_after_month_one_is_stored_published_and_reported(
    store: Store, dsn: str, tmp_path: Path
) -> None:
    path = _config(tmp_path, dsn)
    config = load_config(path).config
    now = time.time()
    await _seed(store, now)
    check = await check_route(store, config, "support-bot", now)
    assert check.published and check.reference == "window:30d"
    assert (check.window_start, check.window_end) == (pytest.approx(now - 3600), now)
    data = check.data()
    assert (data["n_reference"], data["n_current"]) == (400, 60)
    assert data["scores"]["input"] > 0.2
    assert {"prompt_chars", "prompt_terms"} <= {s["signal"] for s in data["signals"] if s["moved"]}
    assert (await latest_published(store))["support-bot"].checked_at == now
    # descriptors were stored once per sampled interaction; a second check reuses them
    cached = await store.fetch("SELECT COUNT(*) FROM drift_descriptors WHERE route = $1", "support-bot")
    assert cached[0][0] == 460
    # the next check's window starts where the published one ended: nothing new, nothing published
    later = await check_route(store, config, "support-bot", now + 3600)
    assert not later.published and later.window_start == now and later.data()["n_current"] == 0


async def test_too_few_interactions_keep_the_window_open(store: Store, dsn: str, tmp_path: Path) -> None:
    path = _config(tmp_path, dsn)
    config = load_config(path).config
    now = time.time()
    await _seed(store, now, current=30)
    first = await check_route(store, config, "support-bot", now)
    assert not first.published and first.data()["n_current"] == 30
    assert "not published: the current window needs 50 interactions and stays open" in render(first)
    rng = random.Random(10)
    more = stored_rows(month6(rng, 30), route="support-bot", upstream="prod", start=now + 10, end=now + 3000, rng=rng)
    await store.write(more, [])
    second = await check_route(store, config, "support-bot", now + 3600)
    assert second.published and second.window_start == first.window_start and second.data()["n_current"] == 60
    assert [c.checked_at for c in await checks(store, "support-bot", 5)] == [now + 3600, now]


async def test_a_new_deployment_compares_its_second_window_with_its_first(
    store: Store, dsn: str, tmp_path: Path
) -> None:
    path = _config(tmp_path, dsn)
    config = load_config(path).config
    now = time.time()
    rng = random.Random(14)
    first_traffic = stored_rows(month1(rng, 60), route="support-bot", upstream="prod", start=now - 3000,
                                end=now - 10, rng=rng)  # fmt: skip
    await store.write(first_traffic, [])
    first = await check_route(store, config, "support-bot", now)
    assert not first.published and first.closed and first.data()["n_reference"] == 0
    assert "the reference has fewer than 50 interactions; the next check compares with this window" in render(first)
    more = stored_rows(month6(rng, 60), route="support-bot", upstream="prod", start=now + 10, end=now + 3000, rng=rng)
    await store.write(more, [])
    second = await check_route(store, config, "support-bot", now + 3600)
    assert second.published and second.window_start == now
    assert (second.data()["n_reference"], second.data()["n_current"]) == (60, 60)
    assert second.data()["scores"]["input"] > 0.2


async def test_upstream_models_record_each_new_pair_once(store: Store) -> None:
    rng = random.Random(11)
    now = time.time()

    def answers(fingerprint: str | None, start: float, model: str = "support-v3", n: int = 5) -> list:
        records = month1(rng, n)
        for r in records:
            r["response"]["model"] = model
            if fingerprint:
                r["response"]["system_fingerprint"] = fingerprint
        return stored_rows(records, route="support-bot", upstream="prod", start=start, end=start + 10, rng=rng)

    await store.write(answers("fp_old", now - 2 * DAY), [])  # before the first scan's day: not read
    await store.write(answers("fp_a", now - 100), [])
    assert await models.scan(store, now) == 5
    [m] = await models.current_models(store)
    assert (m.upstream, m.model, m.fingerprint, m.changes) == ("prod", "support-v3", "fp_a", 0)
    await store.write(answers("fp_b", now - 50), [])
    assert await models.scan(store, now) == 10  # the late-arrival margin reads the first ones again: harmless
    [m] = await models.current_models(store)
    assert (m.fingerprint, m.changes, m.since) == ("fp_b", 1, pytest.approx(now - 50))
    await store.write(answers("fp_a", now - 20), [])  # back to a known fingerprint: no new change
    await models.scan(store, now)
    [m] = await models.current_models(store)
    assert (m.fingerprint, m.changes) == ("fp_a", 1)
    await store.write(answers(None, now - 10, model="support-v4"), [])
    await models.scan(store, now)
    [m] = await models.current_models(store)
    assert (m.model, m.fingerprint, m.changes) == ("support-v4", "", 2)
    await store.write(answers("f" * 500, now - 5, model="m" * 500), [])  # labels stay bounded
    await models.scan(store, now)
    [m] = await models.current_models(store)
    assert (m.model, m.fingerprint, m.changes) == ("m" * 128, "f" * 128, 3)


def test_jobs_for_a_drift_block(tmp_path: Path) -> None:
    config = load_config(_config(tmp_path, "sqlite:///x.db")).config
    jobs = {job.name: job for job in drift_jobs(config)}
    assert set(jobs) == {"upstream-models", "drift:support-bot"}
    assert jobs["drift:support-bot"].schedule.every_s == 3600 and jobs["upstream-models"].schedule.every_s == 60
    assert {job.name for job in jobs_for(config)} >= set(jobs)
    plain = tmp_path / "plain.yaml"
    plain.write_text("upstreams: {prod: {provider: dummy}}\nroutes: {r: {variants: {prod: 1}}}\n")
    assert drift_jobs(load_config(plain).config) == []


def test_cli_check_and_report_name_the_shifted_terms(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    dsn = f"sqlite:///{tmp_path}/turnout.db"
    path = _config(tmp_path, dsn)

    async def seed() -> None:
        store = open_store(dsn)
        await store.open()
        await _seed(store, time.time())
        await store.close()

    asyncio.run(seed())
    assert main(["drift", "report", "support-bot", "-c", str(path)]) == 1
    assert "no check of route support-bot stored yet" in capsys.readouterr().err
    assert main(["drift", "check", "support-bot", "-c", str(path), "--json", str(tmp_path / "d.json")]) == 0
    printed = capsys.readouterr().out
    assert main(["drift", "report", "support-bot", "-c", str(path)]) == 0
    assert capsys.readouterr().out == printed
    assert "DRIFT: input" in printed and "(60 interactions)" in printed and "window:30d (400 interactions)" in printed
    moved = [line.split()[0] for line in printed.splitlines() if "MOVED" in line]
    assert {"prompt_chars", "prompt_tokens", "prompt_terms"} <= set(moved)
    rose = printed.split("Terms that rose")[1].split("Terms that fell")[0]
    fell = printed.split("Terms that fell")[1]
    assert "subscription" in rose and "refund" not in rose
    assert "refund" in fell and "subscription" not in fell
    doc = orjson.loads((tmp_path / "d.json").read_bytes())
    assert doc["route"] == "support-bot" and doc["published"] and doc["scores"]["input"] > 0.2
    assert main(["drift", "check", "plain", "-c", str(path)]) == 1
    assert "routes.plain: no drift block" in capsys.readouterr().err
    assert main(["drift", "models", "-c", str(path)]) == 0
    assert capsys.readouterr().out.startswith("prod: support-v3 fingerprint - since ")


def test_config_errors_name_the_key(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text(
        "upstreams: {prod: {provider: dummy, deprecated_at: soon}}\n"
        "routes:\n  a: {variants: {prod: 1}, drift: {reference: 'window:forever', max_psi: 0}}\n"
        "  b: {variants: {prod: 1}, drift: {reference: dataset, every: 0s}}\n"
    )
    assert main(["check", str(bad)]) == 2
    err = capsys.readouterr().err
    assert "upstreams.prod.deprecated_at: invalid date 'soon'" in err
    assert "routes.a.drift.reference: expected window:<duration> (e.g. window:30d) or dataset" in err
    assert "routes.a.drift.max_psi: Input should be greater than 0" in err
    assert "routes.b.drift.every: Input should be greater than 0" in err
    bad.write_text(
        "upstreams: {prod: {provider: dummy}}\nroutes: {b: {variants: {prod: 1}, drift: {reference: dataset}}}\n"
    )
    assert main(["check", str(bad)]) == 2
    assert (
        "routes.b.drift.reference: dataset needs the dataset version of every serving variant"
        in capsys.readouterr().err
    )


async def test_reference_dataset_is_the_serving_variants_dataset_version(
    store: Store, dsn: str, tmp_path: Path
) -> None:
    version = tmp_path / "datasets" / "support" / "v0001"
    version.mkdir(parents=True)
    lines = []
    for r in month1(random.Random(12), 300):
        answer = r["response"]["choices"][0]["message"]
        lines.append(orjson.dumps({"messages": [*r["request"]["messages"], answer]}))
    (version / "train.jsonl").write_bytes(b"\n".join(lines) + b"\n")
    (version / "manifest.json").write_bytes(orjson.dumps({"name": "support", "version": "v0001"}))
    path = tmp_path / "turnout.yaml"
    path.write_text(
        f"store: {dsn}\ndatasets_dir: {tmp_path / 'datasets'}\n"
        "upstreams: {prod: {provider: dummy, dataset: support@v1}, cand: {provider: dummy, dataset: support@v9}}\n"
        "routes: {support-bot: {variants: {prod: 90, cand: 10}, drift: {reference: dataset}}}\n"
    )
    config = load_config(path).config
    now = time.time()
    rng = random.Random(13)
    await store.write(stored_rows(month6(rng, 80), route="support-bot", upstream="prod", start=now - 600,
                                  end=now - 1, rng=rng), [])  # fmt: skip
    check = await check_route(store, config, "support-bot", now)
    data = check.data()
    assert check.published and check.reference == "dataset:support@v1" and data["n_reference"] == 300
    signals = {s["signal"]: s for s in data["signals"]}
    assert signals["prompt_terms"]["moved"] and signals["prompt_chars"]["moved"]
    assert "finish_reason" not in signals and "answer_tokens" not in signals  # a training file has neither
    assert "subscription" in {t["term"] for t in data["rose"]}
    assert (await store.fetch("SELECT COUNT(*) FROM drift_descriptors"))[0][0] == 80  # the current window only
    path.write_text(path.read_text().replace("prod: 90", "prod: 5"))  # cand serves most now: its version is missing
    config = load_config(path).config
    with pytest.raises(DriftError, match=r"dataset support@v9: .*no such version"):
        await check_route(store, config, "support-bot", now + 60)


def test_deprecation_date_and_max_psi_are_exported_from_the_config(tmp_path: Path) -> None:
    path = _config(tmp_path, f"sqlite:///{tmp_path}/turnout.db")
    with served(path) as gw:
        deprecated = gw.metric("turnout_upstream_deprecated_timestamp_seconds", upstream="prod")
        assert deprecated == dt.datetime(2027, 3, 1, tzinfo=dt.UTC).timestamp()
        assert gw.metric("turnout_retraining_threshold", route="support-bot", signal="max_psi") == 0.2
        assert (
            gw.registry.get_sample_value("turnout_retraining_threshold", {"route": "plain", "signal": "max_psi"})
            is None
        )
