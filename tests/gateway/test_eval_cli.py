"""``turnout eval run|compare|list`` and ``turnout check`` on ``evals:``: exit codes, printed tables, --json."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from gateway.cli import main
from gateway.config import ConfigError, load_config

ANSWERS = {f"What is {i} plus 1?": str(i + 1) for i in range(60)}


@pytest.fixture
def files(tmp_path: Path) -> tuple[Path, Path]:
    config = tmp_path / "turnout.yaml"
    config.write_text(
        f"""
store: sqlite:///{tmp_path}/t.db
upstreams:
  prod: {{provider: dummy, model: prod, answers: {json.dumps(ANSWERS)}, wrong_share: 0.05}}
  cand: {{provider: dummy, model: cand, answers: {json.dumps(ANSWERS)}, wrong_share: 0.4}}
  shadow: {{provider: dummy, model: shadow, answers: {json.dumps(ANSWERS)}}}
routes:
  bot: {{variants: {{prod: 100, cand: 0}}, shadows: [{{upstream: shadow, sample: 0.1}}]}}
evals:
  - {{suite: suite.yaml, route: bot, cron: "0 */6 * * *"}}
"""
    )
    cases = [
        {"id": f"c{i}", "messages": [{"role": "user", "content": q}], "expected": a, "assert": [{"type": "equals"}]}
        for i, (q, a) in enumerate(ANSWERS.items())
    ]
    (tmp_path / "cases.jsonl").write_text("".join(json.dumps(c) + "\n" for c in cases))
    suite = tmp_path / "suite.yaml"
    suite.write_text("suite: plus-one\nthreshold: {pass_rate: 0.9}\ncases_file: cases.jsonl\n")
    return config, suite


def test_run_exit_codes_and_json(files: tuple[Path, Path], capsys: pytest.CaptureFixture[str]) -> None:
    config, suite = files
    out = config.parent / "run.json"
    assert main(["eval", "run", str(suite), "-c", str(config), "--upstream", "prod", "--json", str(out)]) == 0
    report = json.loads(out.read_text())
    assert report["passed"] and report["runs"][0]["upstream"] == "prod" and len(report["runs"][0]["results"]) == 60
    assert "PASS plus-one on prod (prod)" in capsys.readouterr().out
    assert main(["eval", "run", str(suite), "-c", str(config), "--upstream", "cand"]) == 1
    printed = capsys.readouterr().out
    assert "FAIL plus-one on cand" in printed and "equals: expected" in printed
    # --route: the serving variant (cand has weight 0) and the shadow
    assert main(["eval", "run", str(suite), "-c", str(config), "--route", "bot", "--json", str(out)]) == 0
    assert [r["upstream"] for r in json.loads(out.read_text())["runs"]] == ["prod", "shadow"]
    assert main(["eval", "run", str(suite), "-c", str(config), "--upstream", "nope"]) == 2
    assert "unknown upstream 'nope'" in capsys.readouterr().err


def test_compare_is_the_pipeline_gate(files: tuple[Path, Path], capsys: pytest.CaptureFixture[str]) -> None:
    config, suite = files
    out = config.parent / "cmp.json"
    args = ["eval", "compare", str(suite), "-c", str(config), "--json", str(out)]
    assert main([*args, "--baseline", "prod", "--candidate", "cand"]) == 1
    printed = capsys.readouterr().out
    assert "WORSE: cand vs prod on plus-one (60 cases)" in printed and "regressed c" in printed
    report = json.loads(out.read_text())
    assert report["not_worse"] is False and report["flipped"] and report["by_assertion"][0]["type"] == "equals"
    assert main([*args, "--baseline", "prod", "--candidate", "prod"]) == 0  # A/A
    assert "NOT WORSE" in capsys.readouterr().out
    assert main([*args, "--baseline", "cand", "--candidate", "shadow"]) == 0
    assert main([*args, "--baseline", "prod", "--candidate", "cand", "--confidence", "1.5"]) == 2


def test_list_shows_stored_runs(files: tuple[Path, Path], capsys: pytest.CaptureFixture[str]) -> None:
    config, suite = files
    assert main(["eval", "run", str(suite), "-c", str(config), "--upstream", "prod"]) == 0
    assert main(["eval", "run", str(suite), "-c", str(config), "--upstream", "cand", "--no-store"]) == 1
    capsys.readouterr()
    assert main(["eval", "list", "-c", str(config), "--json"]) == 0
    runs = json.loads(capsys.readouterr().out)
    assert [(r["upstream"], r["status"], r["source"]) for r in runs] == [("prod", "complete", "cli")]
    assert main(["eval", "list", "-c", str(config), "--suite", "plus-one"]) == 0
    table = capsys.readouterr().out
    assert "plus-one" in table and "complete" in table and runs[0]["run_id"] in table


def test_check_validates_scheduled_suites(files: tuple[Path, Path], capsys: pytest.CaptureFixture[str]) -> None:
    config, suite = files
    assert main(["check", str(config)]) == 0
    suite.write_text("suite: plus-one\njudge: {upstream: nobody}\ncases_file: cases.jsonl\nthreshold: {pass_rat: 1}\n")
    assert main(["check", str(config)]) == 2
    err = capsys.readouterr().err
    assert "evals.0.suite: suite.yaml: threshold.pass_rat: unknown key" in err
    bad = config.parent / "bad.yaml"
    bad.write_text(
        config.read_text().replace(
            '  - {suite: suite.yaml, route: bot, cron: "0 */6 * * *"}',
            "  - {suite: s.yaml, route: nobot, every: 6h, cron: '* * * * *'}\n"
            "  - {suite: s.yaml, route: bot, cron: 'x'}",
        )
    )
    with pytest.raises(ConfigError) as info:
        load_config(bad)
    assert info.value.errors == [
        "evals.0: give either every (e.g. 6h) or cron (e.g. '0 */6 * * *')",
        "evals.1: invalid cron line 'x': Wrong number of fields",
    ]


def test_the_example_suite_runs_against_the_example_config(capsys: pytest.CaptureFixture[str]) -> None:
    examples = Path(__file__).resolve().parents[2] / "examples"
    suite, config = str(examples / "evals" / "support.yaml"), str(examples / "turnout.yaml")
    assert (
        main(["eval", "compare", suite, "-c", config, "--baseline", "prod-v3", "--candidate", "cand-v4", "--no-store"])
        == 0
    )
    assert main(["eval", "run", suite, "-c", config, "--upstream", "cand-v4", "--no-store"]) == 0
    assert main(["eval", "run", suite, "-c", config, "--upstream", "prod-v3", "--no-store"]) == 1  # below 0.85
    assert "FAIL support-golden on prod-v3" in capsys.readouterr().out
