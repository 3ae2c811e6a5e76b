"""``turnout dataset build|list|show|diff|export``, ``turnout lineage`` and the ``turnout check`` warning, run
as the command a user types, on a real SQLite store; the scheduled build as a job; the stored figures."""

from __future__ import annotations

import asyncio
import hashlib
import subprocess
import sys
from pathlib import Path

import orjson
from prometheus_client import CollectorRegistry, generate_latest

from collectors.review.decisions import Decision, decide
from collectors.store import open_store
from collectors.stored_metrics import Snapshot, StoredMetrics
from gateway.config import load_config
from gateway.datasets import dataset_jobs, read_datasets
from gateway.schedule import JobContext
from gateway.stored_state import ReadContext
from tests.collectors.test_datasets import fill
from tests.harness import ROOT, write_config

CONFIG = """
store: sqlite:///{db}
upstreams:
  prod: {{provider: dummy, model: m, dataset: "{lineage}"}}
routes:
  bot: {{variants: {{prod: 1}}, capture: {{redact: [email]}}}}
review: {{sample: 1.0}}
datasets_dir: data
datasets:
  support: {{route: bot, every: 7d}}
"""


def turnout(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "gateway", *args], capture_output=True, text=True, timeout=60, cwd=ROOT
    )


def setup(tmp_path: Path, lineage: str = "support@v2") -> Path:
    return write_config(tmp_path, CONFIG.format(db=tmp_path / "t.db", lineage=lineage))


async def seed(db: Path, n: int, start: int = 0) -> list[str]:
    store = open_store(f"sqlite:///{db}")
    await store.open()
    try:
        return await fill(store, n, start=start)
    finally:
        await store.close()


def test_build_list_show_diff_export_and_lineage(tmp_path: Path) -> None:
    cfg = setup(tmp_path)
    asyncio.run(seed(tmp_path / "t.db", 6))
    dry = turnout("dataset", "build", "support", "-c", str(cfg), "--dry-run")
    assert dry.returncode == 0 and "dry run: would write v0001 (6 examples match)" in dry.stdout
    assert not (tmp_path / "data" / "support").exists()
    check = turnout("check", str(cfg))
    assert check.returncode == 0 and "warning: upstreams.prod.dataset: support@v2 is not in" in check.stderr
    first = turnout("dataset", "build", "support", "-c", str(cfg))
    assert first.returncode == 0 and "wrote v0001 (6 examples, parent None" in first.stdout, first.stderr
    again = turnout("dataset", "build", "support", "-c", str(cfg))
    assert "nothing new since v0001" in again.stdout
    ids = asyncio.run(seed(tmp_path / "t.db", 3, start=6))
    assert "wrote v0002 (9 examples, parent v0001" in turnout("dataset", "build", "support", "-c", str(cfg)).stdout
    listed = turnout("dataset", "list", "-c", str(cfg)).stdout.splitlines()
    assert [line.split()[0] for line in listed] == ["support@v0001", "support@v0002"]
    shown = orjson.loads(turnout("dataset", "show", "support@v2", "-c", str(cfg), "--ids").stdout)
    assert shown["parent"] == "v0001" and shown["ids"][-3:] == ids and shown["counts"]["examples"] == 9
    out = tmp_path / "diff.json"
    d = turnout("dataset", "diff", "support@v1", "support@v2", "-c", str(cfg), "--json", str(out))
    assert d.returncode == 0 and "added 3, removed 0, changed 0" in d.stdout
    assert orjson.loads(out.read_bytes())["added"] == ids
    exported = tmp_path / "train.jsonl"
    assert turnout("dataset", "export", "support@v2", "-c", str(cfg), "-o", str(exported)).returncode == 0
    assert hashlib.sha256(exported.read_bytes()).hexdigest() == shown["sha256"]
    assert turnout("check", str(cfg)).stderr == ""
    lineage = turnout("lineage", "prod", "-c", str(cfg))
    assert lineage.returncode == 0
    lines = lineage.stdout.splitlines()
    assert lines[0].startswith("prod: model m") and "support@v0002" in lines[1] and "9 examples" in lines[1]
    assert "support@v0001" in lines[2] and "6 examples" in lines[2]
    (tmp_path / "data" / "support" / "v0002" / "train.jsonl").write_text("tampered\n")
    tampered = turnout("dataset", "export", "support@v2", "-c", str(cfg), "-o", str(exported))
    assert tampered.returncode == 1 and "sha256 differs" in tampered.stderr
    missing = turnout("dataset", "show", "support@v9", "-c", str(cfg))
    assert missing.returncode == 1 and "support@v9: no such version" in missing.stderr
    assert turnout("dataset", "build", "nope", "-c", str(cfg)).returncode == 1


def test_config_errors_name_their_key_path(tmp_path: Path) -> None:
    cfg = write_config(
        tmp_path,
        """
upstreams: {prod: {provider: dummy, dataset: "support-3"}}
routes: {bot: {variants: {prod: 1}}}
datasets:
  a: {route: nowhere}
  b: {route: bot, every: "61 * * * *"}
  c: {route: bot, include: {reviewed: null}}
""",
    )
    result = turnout("check", str(cfg))
    assert result.returncode == 2
    assert "datasets.b: every: expected a duration such as 7d or a five-field cron line" in result.stderr
    assert "datasets.c: include: needs reviewed, label or min_score" in result.stderr
    cfg.write_text(
        'upstreams: {prod: {provider: dummy, dataset: "support-3"}}\nroutes: {bot: {variants: {prod: 1}}}\n'
        "datasets: {a: {route: nowhere}}\n"
    )
    result = turnout("check", str(cfg))
    assert result.returncode == 2
    assert "upstreams.prod.dataset: expected NAME@vN" in result.stderr
    assert "datasets.a.route: unknown route 'nowhere'" in result.stderr


async def test_scheduled_build_job_and_the_stored_figures(tmp_path: Path) -> None:
    cfg = setup(tmp_path)
    loaded = load_config(cfg)
    [job] = dataset_jobs(loaded.config)
    assert job.name == "dataset:support" and job.schedule.every_s == 7 * 86400
    store = open_store(f"sqlite:///{tmp_path / 't.db'}")
    await store.open()
    try:
        ids = await fill(store, 4, approve=False)
        for item_id in ids[:3]:
            await decide(store, item_id, Decision("approve", "ana"), now=100.0)
        await job.run(JobContext(loaded.config, cfg, store, clock=lambda: 200.0))
        await decide(store, ids[3], Decision("approve", "ana"), now=300.0)
        snap = Snapshot()
        await read_datasets(ReadContext(store, loaded.config, snap, None, 400.0))  # type: ignore[arg-type]
    finally:
        await store.close()
    registry = CollectorRegistry()
    stored = StoredMetrics()
    registry.register(stored)
    stored.publish(snap)
    text = generate_latest(registry).decode()
    assert 'turnout_dataset_examples{dataset="support"} 3.0' in text
    assert 'turnout_dataset_version_timestamp_seconds{dataset="support"} 200.0' in text
    assert 'turnout_dataset_pending{dataset="support"} 1.0' in text
    assert 'turnout_review_backlog{route="bot"} 0.0' in text
    assert 'turnout_review_decided_total{route="bot"} 4.0' in text
    assert 'turnout_dataset_build_interval_seconds{dataset="support"} 604800.0' in text
    assert (tmp_path / "data" / "support" / "v0001" / "manifest.json").exists()
