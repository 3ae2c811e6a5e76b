"""Every assertion type on answers built by hand (no network); the judge's family is in tests/gateway."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from pydantic import TypeAdapter

from collectors.evals.answer import Answer, Reply, ToolCall, answer_of
from collectors.evals.assertions import Assertion, check
from collectors.evals.assertions.base import Context, Result
from collectors.evals.assertions.judge import parse_verdict

SPEC = TypeAdapter(Assertion)


async def run(spec: dict[str, Any], answer: Answer | str, *, expected: Any = None, suite_dir: Path = Path()) -> Result:
    if isinstance(answer, str):
        answer = Answer(answer)
    ctx = Context(request={"messages": []}, expected=expected, suite_dir=suite_dir)
    return await check(SPEC.validate_python(spec), answer, ctx)


async def test_equals_normalises() -> None:
    assert (await run({"type": "equals", "value": "Paris"}, "  paris \n")).passed
    assert not (await run({"type": "equals", "value": "Paris", "case_sensitive": True}, "paris")).passed
    assert (await run({"type": "equals", "ignore_punctuation": True}, "Paris!", expected="paris")).passed
    assert (await run({"type": "equals"}, "a   b", expected="a b")).passed
    failed = await run({"type": "equals"}, "Lyon", expected="Paris")
    assert not failed.passed and failed.score == 0 and "expected 'Paris', got 'Lyon'" in failed.reason
    assert (await run({"type": "equals", "value": {"a": 1}}, '{"a": 1}')).passed
    assert not (await run({"type": "equals", "value": {"a": 1}}, "a=1")).passed


async def test_contains_any_all_and_not_contains() -> None:
    assert (await run({"type": "contains", "value": "30 DAYS"}, "within 30 days")).passed
    partial = await run({"type": "contains", "value": ["30 days", "receipt"]}, "within 30 days")
    assert not partial.passed and partial.score == 0.5 and "missing ['receipt']" in partial.reason
    assert (await run({"type": "contains", "value": ["x", "days"], "mode": "any"}, "30 days")).passed
    assert not (await run({"type": "contains", "value": "Days", "case_sensitive": True}, "30 days")).passed
    assert (await run({"type": "not_contains", "value": ["sorry", "cannot"]}, "Sure!")).passed
    refused = await run({"type": "not_contains", "value": ["sorry", "cannot"]}, "Sorry, I CANNOT")
    assert not refused.passed and "found ['sorry', 'cannot']" in refused.reason


async def test_regex_and_not_regex() -> None:
    assert (await run({"type": "regex", "value": r"\d+ days"}, "30 days")).passed
    assert not (await run({"type": "regex", "value": "DAYS"}, "30 days")).passed
    assert (await run({"type": "regex", "value": "DAYS", "case_sensitive": False}, "30 days")).passed
    assert (await run({"type": "not_regex", "value": r"\bI'm an AI\b"}, "Hello")).passed
    assert not (await run({"type": "not_regex", "value": "AI"}, "As an AI")).passed


async def test_similarity_against_expected_or_value() -> None:
    close = await run({"type": "similarity", "threshold": 0.8}, "Within 30 days.", expected="within 30 days")
    assert close.passed and 0.8 <= close.score <= 1.0
    far = await run({"type": "similarity", "threshold": 0.8, "value": "something else entirely"}, "30 days")
    assert not far.passed and far.score < 0.8 and "<" in far.reason
    tokens = await run(
        {"type": "similarity", "threshold": 0.95, "method": "token_set_ratio"},
        "days 30 within",
        expected="within 30 days",
    )
    assert tokens.passed


async def test_is_json_and_json_schema_with_refs(tmp_path: Path) -> None:
    assert (await run({"type": "is_json"}, '{"a": [1, 2]}')).passed
    assert not (await run({"type": "is_json"}, "{'a': 1}")).passed
    (tmp_path / "address.json").write_text(
        json.dumps({"type": "object", "required": ["city"], "properties": {"city": {"type": "string"}}})
    )
    schema = {
        "$defs": {"item": {"type": "object", "required": ["sku", "qty"], "properties": {"qty": {"type": "integer"}}}},
        "type": "object",
        "required": ["items", "ship_to"],
        "properties": {
            "items": {"type": "array", "items": {"$ref": "#/$defs/item"}},
            "ship_to": {"$ref": "address.json"},
        },
    }
    good = '{"items": [{"sku": "a", "qty": 2}], "ship_to": {"city": "Lyon"}}'
    assert (await run({"type": "json_schema", "schema": schema}, good, suite_dir=tmp_path)).passed
    bad_item = await run(
        {"type": "json_schema", "schema": schema},
        '{"items": [{"sku": "a", "qty": "two"}], "ship_to": {"city": "Lyon"}}',
        suite_dir=tmp_path,
    )
    assert not bad_item.passed and bad_item.reason.startswith("items/0/qty: 'two' is not of type 'integer'")
    bad_ref = await run({"type": "json_schema", "schema": schema}, '{"items": [], "ship_to": {}}', suite_dir=tmp_path)
    assert not bad_ref.passed and "'city' is a required property" in bad_ref.reason
    (tmp_path / "order.json").write_text(json.dumps(schema))
    by_file = await run({"type": "json_schema", "schema_file": "order.json"}, good, suite_dir=tmp_path)
    assert by_file.passed
    escape = {"$ref": "../../etc/passwd"}
    outside = await run({"type": "json_schema", "schema": escape}, "{}", suite_dir=tmp_path)
    assert not outside.passed and "schema could not be applied" in outside.reason
    with pytest.raises(ValueError, match="invalid JSON schema"):
        SPEC.validate_python({"type": "json_schema", "schema": {"type": "no-such-type"}})


async def test_tool_calls() -> None:
    answer = Answer("", tool_calls=(ToolCall("get_weather", '{"city": "Paris", "unit": "c"}'),))
    assert (await run({"type": "tool_call", "name": "get_weather", "arguments": {"city": "Paris"}}, answer)).passed
    wrong_arg = await run({"type": "tool_call", "arguments": {"city": "Lyon"}}, answer)
    assert not wrong_arg.passed and "['city'] differ" in wrong_arg.reason
    other = await run({"type": "tool_call", "name": "book_flight"}, answer)
    assert not other.passed and "got ['get_weather']" in other.reason
    schema = {"type": "object", "properties": {"unit": {"enum": ["f"]}}}
    assert not (await run({"type": "tool_call", "schema": schema}, answer)).passed
    broken = Answer("", tool_calls=(ToolCall("f", '{"city": '),))
    assert "arguments are not JSON" in (await run({"type": "tool_call"}, broken)).reason
    assert not (await run({"type": "tool_call"}, "plain text")).passed


async def test_latency_and_tokens() -> None:
    fast = Answer("x", latency_ms=120.0, usage={"completion_tokens": 40, "prompt_tokens": 10, "total_tokens": 50})
    assert (await run({"type": "latency_ms", "max": 200}, fast)).passed
    slow = await run({"type": "latency_ms", "max": 60}, fast)
    assert not slow.passed and slow.score == pytest.approx(0.5)
    assert (await run({"type": "tokens", "max": 40}, fast)).passed
    over = await run({"type": "tokens", "max": 20}, fast)
    assert not over.passed and over.score == pytest.approx(0.5) and "40 completion tokens > 20" in over.reason
    assert not (await run({"type": "tokens", "kind": "total", "min": 60}, fast)).passed
    unknown = await run({"type": "tokens", "max": 5}, Answer("x"))
    assert unknown.error and not unknown.passed


async def test_no_answer_fails_every_assertion() -> None:
    failed = await run({"type": "not_contains", "value": "x"}, Answer("", error="upstream answered 500"))
    assert not failed.passed and failed.error and "upstream answered 500" in failed.reason


def test_answer_parsing() -> None:
    body = {
        "choices": [
            {
                "message": {
                    "content": None,
                    "tool_calls": [{"type": "function", "function": {"name": "f", "arguments": "{}"}}],
                },
                "finish_reason": "tool_calls",
            }
        ],
        "usage": {"completion_tokens": 3, "prompt_tokens": 2, "total_tokens": 5},
    }
    answer = answer_of(Reply(200, json.dumps(body).encode(), 12.0))
    assert answer.tool_calls == (ToolCall("f", "{}"),) and answer.usage["total_tokens"] == 5
    assert answer_of(Reply(500, b'{"error": {"message": "boom"}}', 1.0)).error == "upstream answered 500: boom"
    assert answer_of(Reply(200, b"<html>", 1.0)).error == "upstream answer is not a chat completion"
    assert answer_of(Reply(None, b"", 1.0, "timed out")).error == "timed out"


@pytest.mark.parametrize(
    ("output", "text", "problem"),
    [
        ("boolean", "Yes, it passes.", "not a JSON object"),
        ("boolean", '{"pass": "yes"}', '"pass" must be true or false'),
        ("boolean", '["pass"]', "not a JSON object"),
        ("score", '{"score": 1.5}', '"score" must be a number from 0 to 1'),
        ("score", '{"score": true}', '"score" must be a number from 0 to 1'),
        ("score", '{"score": 0.5, "reason": 3}', "reason is not a string"),
    ],
)
def test_malformed_verdicts_are_errors(output: str, text: str, problem: str) -> None:
    with pytest.raises(ValueError, match=problem):
        parse_verdict(output, text)


def test_verdicts() -> None:
    assert parse_verdict("boolean", ' {"pass": false, "reason": "rude"} ') == (0.0, "rude")
    assert parse_verdict("score", '{"score": 0.75}') == (0.75, "")
