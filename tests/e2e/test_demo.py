"""``turnout demo --fast``: the whole retraining loop, checked from what it left in the store and on disk (not
from its printout), and its ``demo-report.html`` opened in a real headless Chromium."""

from __future__ import annotations

import hashlib
import json
import os
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from tests.browser import chromium, watch

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.timeout(400)
def test_demo_fast_runs_the_whole_loop(tmp_path: Path) -> None:
    out = tmp_path / "demo"
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    done = subprocess.run(
        [sys.executable, "-m", "gateway", "demo", "--fast", "--dir", str(out)],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=380,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    db = sqlite3.connect(out / "turnout.db")

    # captured, reviewed, and a dataset version built from the review (its hash is its train.jsonl's)
    assert db.execute("SELECT COUNT(*) FROM interactions WHERE role = 'primary'").fetchone()[0] >= 300
    decided = dict(db.execute("SELECT action, COUNT(*) FROM review_decisions GROUP BY action").fetchall())
    assert decided.get("approve", 0) > 0 and decided.get("edit", 0) > 0
    manifest = json.loads((out / "datasets" / "support" / "v0001" / "manifest.json").read_text())
    train = (out / "datasets" / "support" / "v0001" / "train.jsonl").read_bytes()
    assert manifest["sha256"] == hashlib.sha256(train).hexdigest() and train.count(b"\n") > 0
    assert db.execute("SELECT version FROM dataset_versions WHERE name = 'support'").fetchall() == [("v0001",)]
    config = yaml.safe_load((out / "turnout.yaml").read_text())
    assert config["upstreams"]["cand-v2"]["dataset"] == "support@v0001"

    # the eval gate passed, the shadow gate passed, the steps ran, and the promote ended the rollout
    trail = db.execute("SELECT from_phase, to_phase, figures FROM rollout_audit ORDER BY ts").fetchall()
    moves = [(a, b) for a, b, _ in trail]
    assert ("eval", "shadow") in moves and ("shadow", "step") in moves and ("step", "succeeded") in moves
    eval_gate = next(json.loads(f) for a, b, f in trail if (a, b) == ("eval", "shadow"))
    assert eval_gate["eval"]["result"] == "pass"
    assert moves[-1][1] == "aborted"  # turnout promote ends the rollout: the file is the truth again
    assert config["routes"]["support-bot"]["variants"] == {"prod-v1": 0, "cand-v2": 100}
    report = json.loads((out / "report.json").read_text())
    assert report["decision"] in ("promote", "continue") and report["reasons"]  # "continue": not yet shown better

    # the users' queries shifted, the stored drift check says so, and Prometheus fired the alert
    latest = db.execute("SELECT result FROM drift_checks WHERE published = 1 ORDER BY checked_at DESC").fetchone()
    assert json.loads(latest[0])["scores"]["input"] > 0.2
    firing = json.loads((out / "prometheus" / "firing.json").read_text())
    assert firing["labels"]["alertname"] == "TurnoutInputDrift" and firing["labels"]["route"] == "support-bot"

    # the report a person opens: the experiment report and the loop's timeline, no console error, no network
    page_file = out / "demo-report.html"
    with chromium() as browser:
        page = browser.new_page(viewport={"width": 1100, "height": 900})
        seen = watch(page)
        page.goto(page_file.as_uri())
        assert report["decision"].upper() in page.locator("#decision").inner_text()
        steps = page.locator("#loop tbody tr")
        assert steps.count() >= 9
        assert "drift" in page.locator("#loop").inner_text()
        page.screenshot(path=str(tmp_path / "demo-report.png"), full_page=True)
    assert seen.errors == [] and seen.requests == [page_file.as_uri()]
