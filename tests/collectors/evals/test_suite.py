"""Suite files: inline and JSONL cases, every error at once with its key path."""

from __future__ import annotations

from pathlib import Path

import pytest

from collectors.evals.suite import SuiteError, load_suite


def write(tmp_path: Path, text: str, name: str = "suite.yaml") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def errors_of(path: Path) -> list[str]:
    with pytest.raises(SuiteError) as info:
        load_suite(path)
    return info.value.errors


def test_inline_suite(tmp_path: Path) -> None:
    suite = load_suite(
        write(
            tmp_path,
            """
suite: support-golden
threshold: {pass_rate: 0.85}
cases:
  - id: refund
    messages: [{role: user, content: "How do I get a refund?"}]
    expected: "within 30 days"
    temperature: 0
    assert:
      - {type: contains, value: "30 days"}
      - {type: similarity, threshold: 0.6}
  - messages: [{role: user, content: "hi"}]
""",
        )
    )
    assert suite.name == "support-golden" and suite.threshold == 0.85
    assert [c.id for c in suite.cases] == ["refund", "case-2"]
    assert suite.cases[0].body() == {
        "messages": [{"role": "user", "content": "How do I get a refund?"}],
        "temperature": 0,
    }
    assert len(suite.sha256) == 64


def test_jsonl_cases_and_request_bodies(tmp_path: Path) -> None:
    (tmp_path / "cases.jsonl").write_text(
        '{"id": "a", "messages": [{"role": "user", "content": "x"}], "assert": [{"type": "is_json"}]}\n\n'
        '{"id": "b", "request": {"model": "ignored", "messages": [{"role": "user", "content": "y"}], "n": 1}}\n'
    )
    suite = load_suite(write(tmp_path, "suite: s\ncases_file: cases.jsonl\n"))
    assert [c.id for c in suite.cases] == ["a", "b"]
    assert suite.cases[1].body() == {"messages": [{"role": "user", "content": "y"}], "n": 1}
    before = suite.sha256
    (tmp_path / "cases.jsonl").write_text('{"id": "a", "messages": [{"role": "user", "content": "z"}]}\n')
    assert load_suite(tmp_path / "suite.yaml").sha256 != before  # the hash covers the cases file


def test_every_error_with_its_key_path(tmp_path: Path) -> None:
    errors = errors_of(
        write(
            tmp_path,
            """
suite: s
cases:
  - id: one
    messages: [{role: user, content: hi}]
    assert:
      - {type: similarity, threshold: 1.5}
      - {type: contains}
      - {type: regex, value: "("}
      - {type: nope}
      - {type: equals}
    asert: []
  - id: one
    request: {messages: [], stream: true}
  - messages: [{role: user, content: hi}]
    assert: [{type: llm_judge, rubric: "polite"}]
""",
        )
    )
    text = "\n".join(errors)
    assert "cases.0.assert.0.threshold: Input should be less than or equal to 1" in text
    assert "cases.0.assert.1.value: Field required" in text
    assert "cases.0.assert.2.value: invalid regular expression" in text
    assert "cases.0.assert.3: Input tag 'nope' found using 'type' does not match" in text
    assert "cases.0.asert: unknown key" in text
    assert "cases.1: request.stream: eval calls are not streamed" in text


def test_cross_checks(tmp_path: Path) -> None:
    errors = errors_of(
        write(
            tmp_path,
            """
suite: s
judge_check: {gold: missing.jsonl}
cases:
  - {id: a, messages: [{role: user, content: hi}], assert: [{type: equals}]}
  - {id: a, messages: [{role: user, content: hi}], assert: [{type: llm_judge, rubric: r}]}
""",
        )
    )
    assert "cases.0.assert.0: equals needs a value or the case's expected" in errors
    assert "cases.1.id: duplicate case id 'a'" in errors
    assert "judge: llm_judge assertions and judge_check need judge: {upstream: NAME}" in errors
    assert any(e.startswith("judge_check.gold: no such file") for e in errors)


def test_file_level_errors(tmp_path: Path) -> None:
    assert errors_of(tmp_path / "absent.yaml")[0].startswith("(file) cannot read")
    assert errors_of(write(tmp_path, "suite: [unclosed"))[0].startswith("(YAML) line 1")
    assert errors_of(write(tmp_path, "- a list"))[0].startswith("(top level)")
    only_one = "(top level): give either cases (inline) or cases_file (JSONL), not both"
    assert errors_of(write(tmp_path, "suite: s\n")) == [only_one]
    (tmp_path / "bad.jsonl").write_text('{"id": "x"}\nnot json\n')
    errors = errors_of(write(tmp_path, "suite: s\ncases_file: bad.jsonl\n"))
    assert errors[0].startswith("cases_file line 1: ")
    assert errors[1].startswith("cases_file line 2: not JSON")
