"""docs/ against the code: the generated references are up to date, every alert has a runbook section and a
runbook_url pointing at it, and every metric the gateway exports (scraped from a real one, and published by the
stored-state readers run on a real SQLite store) is in docs/metrics.md."""

from __future__ import annotations

import argparse
import re
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from gateway import cli, reference
from tests.harness import served, write_config

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs"

CONFIG = """
store: sqlite:///{db}
upstreams:
  prod: {{provider: dummy, trained_at: 2026-01-01}}
  cand: {{provider: dummy}}
routes:
  support:
    variants: {{prod: 100, cand: 0}}
    shadows: [{{upstream: cand, sample: 1.0}}]
    retraining: {{max_model_age: 30d, min_feedback_score: 0.6, min_eval_score: 0.8}}
    drift: {{every: 1h}}
    analysis: {{control: prod}}
    rollout: {{candidate: cand}}
review: {{sample: 0.5}}
datasets:
  support: {{route: support, every: 7d}}
evals:
  - {{suite: suite.yaml, route: support, every: 6h}}
"""

SUITE = """
name: smoke
cases:
  - {id: hi, messages: [{role: user, content: hi}], assert: [{type: contains, value: hi}]}
"""


@pytest.mark.parametrize("name", sorted(reference.GENERATED))
def test_generated_reference_is_up_to_date(name: str) -> None:
    on_disk = (DOCS / name).read_text()
    assert on_disk == reference.GENERATED[name](), f"docs/{name} is out of date: run python -m gateway.reference"


def test_check_mode_exits_1_on_a_stale_file_and_writes_nothing(tmp_path: Path) -> None:
    for name in reference.GENERATED:
        (tmp_path / name).write_text((DOCS / name).read_text())
    (tmp_path / "config.md").write_text("stale\n")
    cmd = [sys.executable, "-m", "gateway.reference", "--check", "--docs", str(tmp_path)]
    result = subprocess.run(cmd, capture_output=True, text=True, timeout=60, check=False, cwd=ROOT)
    assert result.returncode == 1, result.stdout + result.stderr
    assert "config.md: out of date" in result.stdout and "metrics.md" not in result.stdout
    assert (tmp_path / "config.md").read_text() == "stale\n"


def _runbook_sections() -> dict[str, str]:
    text = (DOCS / "runbook.md").read_text()
    parts = re.split(r"^## (\S+)\n", text, flags=re.M)
    return dict(zip(parts[1::2], parts[2::2], strict=True))


def test_every_alert_has_a_runbook_section_and_its_runbook_url_points_at_it() -> None:
    sections = _runbook_sections()
    rules = reference.alerts()
    assert len(rules) >= 10
    for rule in rules:
        name = rule["alert"]
        assert rule["annotations"].get("runbook_url") == f"docs/runbook.md#{name.lower()}", name
        assert name in sections, f"docs/runbook.md has no '## {name}' section"
        body = sections[name]
        for part in ("**What it means.**", "**Look first at:**", "**Fix.**"):
            assert part in body, f"{name}: runbook section lacks {part}"
        looks = re.findall(r"^\d\. ", body.split("**Look first at:**")[1], flags=re.M)
        assert len(looks) >= 3, f"{name}: give the first three things to look at"
        assert "panel" in body.lower() and "`turnout " in body, f"{name}: name a dashboard panel and a command"
    assert set(sections) == {r["alert"] for r in rules}, "a runbook section for an alert that no longer exists"


def test_every_metric_a_served_gateway_exports_is_documented(tmp_path: Path) -> None:
    """Scraped from a real gateway whose stored-state readers ran on a real SQLite store: every family is in
    docs/metrics.md, and what the readers publish is what the generator found in their source (type, labels)."""
    documented = (DOCS / "metrics.md").read_text()
    declared = {name: (kind, labels) for name, kind, labels, _ in reference.stored_series()}
    cfg = write_config(tmp_path, CONFIG.format(db=tmp_path / "t.db"))
    (tmp_path / "suite.yaml").write_text(SUITE)
    body = {"model": "support", "messages": [{"role": "user", "content": "hi"}]}
    with served(cfg) as gw:
        assert httpx.post(gw.url + "/v1/chat/completions", json=body, timeout=30).status_code == 200
        deadline = time.monotonic() + 30
        while "turnout_dataset_pending" not in (text := httpx.get(gw.url + "/metrics", timeout=10).text):
            assert time.monotonic() < deadline, "the stored-state readers published nothing in 30 s"
            time.sleep(0.2)
    families = {f.name: f for f in text_string_to_metric_families(text) if f.name.startswith("turnout_")}
    assert {"turnout_requests", "turnout_job_runs", "turnout_review_backlog", "turnout_dataset_pending"} <= set(
        families
    )
    for family in families.values():
        name = family.name + ("_total" if family.type == "counter" else "")
        assert f"`{name}`" in documented, f"{name} is exported but not in docs/metrics.md"
        if name in declared:
            kind, labels = declared[name]
            label_sets = {", ".join(k for k in s.labels if k != "le") for s in family.samples}
            assert family.type == kind and label_sets <= {labels}, (name, family.type, label_sets, declared[name])


def test_the_tutorials_config_validates(tmp_path: Path) -> None:
    text = (DOCS / "tutorial.md").read_text()
    (config,) = re.findall(r"```yaml\n(.*?)```", text, flags=re.S)
    (tmp_path / "evals").mkdir()
    (tmp_path / "evals" / "support.yaml").write_text((ROOT / "examples" / "evals" / "support.yaml").read_text())
    (tmp_path / "turnout.yaml").write_text(config)
    cmd = [sys.executable, "-m", "gateway", "check", str(tmp_path / "turnout.yaml")]
    result = subprocess.run(cmd, capture_output=True, text=True, timeout=60, check=False, cwd=ROOT)
    assert result.returncode == 0, result.stderr


def test_every_metric_an_alert_queries_is_exported() -> None:
    exported = {name for name, *_ in reference.exported_metrics() + reference.stored_series()}
    bases = {re.sub(r"_total$", "", n) for n in exported}
    for rule in reference.alerts():
        text = rule["expr"] + " ".join(rule["annotations"].values())
        for used in set(re.findall(r"\bturnout_[a-z_]+", text)):
            base = re.sub(r"_(total|sum|count|bucket)$", "", used)
            assert used in exported or base in bases, f"{rule['alert']} queries {used}, which nothing exports"


def _subparsers(p: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    actions = [a for a in p._actions if isinstance(a, argparse._SubParsersAction)]
    return dict(actions[0].choices) if actions else {}


@pytest.mark.parametrize("name", ["concepts.md", "runbook.md", "tutorial.md"])
def test_the_docs_name_real_commands_options_and_files(name: str) -> None:
    """Every ``turnout ...`` command line in the prose docs parses to a real (sub)command whose options exist,
    and every module path they name exists."""
    text = (DOCS / name).read_text()
    for path in re.findall(r"`((?:gateway|collectors|policies|helm|grafana|examples)/[\w./-]*)`", text):
        assert (ROOT / path).exists(), f"docs/{name} names {path}, which does not exist"
    spans = re.findall(r"`(turnout [^`]+)`", text) + re.findall(r"^\s*(turnout [^#\n]+)", text, flags=re.M)
    assert spans
    for span in spans:
        words = re.split(r" [|>&] ", span)[0].split()[1:]  # up to a pipe or redirection
        parser = cli.parser()
        for word in words:
            choices = _subparsers(parser)
            if not choices or word.startswith("-") or word.isupper():  # COMMAND: a placeholder
                break
            assert word in choices, f"docs/{name}: `{span}`: no command {word!r}"
            parser = choices[word]
        known = {o for a in parser._actions for o in a.option_strings}
        for flag in re.findall(r"(?<![\w-])(--?[a-z][\w-]*)", " ".join(words)):
            assert flag in known, f"docs/{name}: `{span}`: {flag} is not an option of that command"
