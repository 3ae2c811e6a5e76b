"""Shadow comparison scores on known pairs: identical, reordered JSON, different text, different tool call."""

from __future__ import annotations

import base64
import struct
from typing import Any

import pytest

from collectors.compare import answer_of, compare, compare_answers
from collectors.compare import scores as full_scores
from collectors.record import Interaction


def chat(content: str | None = None, tools: list[tuple[str, str]] | None = None) -> dict[str, Any]:
    message: dict[str, Any] = {"role": "assistant", "content": content}
    if tools:
        message["tool_calls"] = [
            {"id": f"call_{i}", "type": "function", "function": {"name": n, "arguments": a}}
            for i, (n, a) in enumerate(tools)
        ]
    return {"id": "x", "object": "chat.completion", "choices": [{"index": 0, "message": message}]}


def interaction(response: dict[str, Any], *, latency_ms: float = 100.0, usage: dict[str, int] | None = None,
                role: str = "primary") -> Interaction:  # fmt: skip
    return Interaction(
        request_id="r", ts=0.0, route="bot", experiment="bot", variant="v", role=role, parent_id=None, upstream="v",
        endpoint="chat.completions", request={}, response=response, status=200, outcome="ok",
        latency_ms=latency_ms, ttft_ms=None, usage=usage, error=None, stream=False, capture=True,
    )  # fmt: skip


def scores(primary: dict[str, Any], shadow: dict[str, Any], **kw: Any) -> dict[str, Any]:
    return compare(interaction(primary), interaction(shadow, role="shadow", **kw))


def test_identical_answers() -> None:
    s = scores(chat("The capital of France is Paris."), chat("The capital of France is Paris."))
    assert s["exact"] is True and s["similarity"] == 1.0
    assert s["json_equal"] is None and s["tool_names_agree"] is None and s["tool_arguments_agree"] is None


def test_case_and_whitespace_do_not_lower_similarity_but_are_not_exact() -> None:
    s = scores(chat("Hello   world\n"), chat("hello world"))
    assert s["exact"] is False and s["similarity"] == 1.0


def test_reordered_json_is_equal_but_not_exact() -> None:
    s = scores(chat('{"name": "Ada", "tags": ["a", "b"], "age": 36}'), chat('{"age":36,"tags":["a","b"],"name":"Ada"}'))
    assert s["json_equal"] is True and s["similarity"] == 1.0 and s["exact"] is False


def test_json_with_a_different_value() -> None:
    s = scores(chat('{"name": "Ada", "age": 36}'), chat('{"age": 37, "name": "Ada"}'))
    assert s["json_equal"] is False and 0.8 < s["similarity"] < 1.0


def test_different_text_scores_low() -> None:
    s = scores(chat("The capital of France is Paris."), chat("I cannot help with that request, sorry."))
    assert s["exact"] is False and s["similarity"] < 0.5 and s["json_equal"] is None


def test_close_text_scores_between() -> None:
    s = scores(chat("The capital of France is Paris."), chat("The capital of France is Lyon."))
    assert 0.8 < s["similarity"] < 1.0


def test_same_tool_call_with_reordered_arguments_agrees() -> None:
    s = scores(
        chat(tools=[("get_weather", '{"city": "Paris", "unit": "c"}')]),
        chat(tools=[("get_weather", '{"unit":"c","city":"Paris"}')]),
    )
    assert s["tool_names_agree"] is True and s["tool_arguments_agree"] is True
    assert s["similarity"] == 1.0 and s["exact"] is False


def test_different_tool_name() -> None:
    s = scores(chat(tools=[("get_weather", '{"city": "Paris"}')]), chat(tools=[("get_time", '{"city": "Paris"}')]))
    assert s["tool_names_agree"] is False and s["tool_arguments_agree"] is False and s["similarity"] < 1.0


def test_same_tool_different_arguments() -> None:
    s = scores(chat(tools=[("get_weather", '{"city": "Paris"}')]), chat(tools=[("get_weather", '{"city": "Rome"}')]))
    assert s["tool_names_agree"] is True and s["tool_arguments_agree"] is False


def test_tool_call_against_plain_text() -> None:
    s = scores(chat(tools=[("get_weather", '{"city": "Paris"}')]), chat("It is sunny in Paris."))
    assert s["tool_names_agree"] is False and s["exact"] is False and s["similarity"] < 0.6


def test_latency_and_token_deltas_are_shadow_minus_primary() -> None:
    primary = interaction(chat("a b c"), latency_ms=120.0, usage={"prompt_tokens": 10, "completion_tokens": 3})
    shadow = interaction(chat("a b c d"), latency_ms=95.5, usage={"prompt_tokens": 10, "completion_tokens": 4})
    s = compare(primary, shadow)
    assert s["latency_delta_ms"] == -24.5 and s["prompt_tokens_delta"] == 0 and s["completion_tokens_delta"] == 1
    assert compare(primary, interaction(chat("x")))["completion_tokens_delta"] is None


def test_completions_and_embeddings_are_compared_too() -> None:
    def text(t: str) -> dict[str, Any]:
        return {"object": "text_completion", "choices": [{"index": 0, "text": t}]}

    assert scores(text("forty two"), text("forty two"))["exact"] is True

    def emb(v: list[float], b64: bool = False) -> dict[str, Any]:
        e: Any = base64.b64encode(struct.pack(f"<{len(v)}f", *v)).decode() if b64 else v
        return {"object": "list", "data": [{"object": "embedding", "index": 0, "embedding": e}]}

    assert scores(emb([0.5, 0.25]), emb([0.5, 0.25], b64=True))["similarity"] == pytest.approx(1.0)
    assert scores(emb([1.0, 0.0]), emb([0.0, 1.0]))["similarity"] == 0.0
    assert scores(emb([1.0, 0.0]), emb([1.0, 1.0]))["similarity"] == pytest.approx(0.707107)


def test_similarity_is_always_in_the_unit_interval() -> None:
    pairs = [
        (chat(""), chat("")),
        (chat(None), chat("x")),
        ({}, {"choices": "garbage"}),
        (chat("[1, 2]"), chat("[2, 1]")),
    ]
    for p, s in pairs:
        assert 0.0 <= scores(p, s)["similarity"] <= 1.0
    assert scores(chat("[1, 2]"), chat("[2, 1]"))["json_equal"] is False


@pytest.mark.parametrize(
    "answer",
    [
        chat("The capital of France is Paris."),
        chat('{"name": "Ada", "tags": ["a", "b"]}'),
        chat(""),
        {"object": "chat.completion", "choices": [{"index": 0, "message": {"content": None, "tool_calls": [
            {"type": "function", "function": {"name": "f", "arguments": '{"a": 1}'}}]}}]},
        {"object": "chat.completion", "choices": [{"index": 0, "message": {"content": "x", "tool_calls": [
            {"type": "function", "function": {"name": "f", "arguments": "not json"}}]}}]},
        {"object": "list", "data": [{"embedding": [0.0, 0.0]}]},
        {"object": "list", "data": [{"embedding": []}]},
    ],
)  # fmt: skip
def test_identical_answers_score_as_the_full_comparison_does(answer: dict[str, Any]) -> None:
    quick = compare_answers(answer_of(answer), answer_of(answer))
    assert quick == full_scores(answer_of(answer), answer_of(answer)) and quick["exact"] is True


def test_choices_are_read_in_index_order_and_an_equal_answer_scores_as_a_copy_of_it() -> None:
    def choices(*pairs: tuple[int, str]) -> dict[str, Any]:
        return {"object": "chat.completion", "choices": [{"index": i, "message": {"content": t}} for i, t in pairs]}

    assert answer_of(choices((1, "second"), (0, "first"))).text == "first\nsecond"
    assert scores(choices((1, "b"), (0, "a")), choices((0, "a"), (1, "b")))["exact"] is True
    usage = {"prompt_tokens": 3, "completion_tokens": 5}
    primary = interaction(chat('{"a": 1}'), usage=usage)
    for shadow_response in (chat('{"a": 1}'), {**chat('{"a": 1}'), "id": "other", "model": "other"}):
        same = compare(primary, interaction(shadow_response, role="shadow", latency_ms=90.0, usage=usage))
        # the quick path (the fields answer_of reads are equal) against the scores worked out from scratch
        expected = full_scores(answer_of(chat('{"a": 1}')), answer_of(shadow_response))
        assert same == {**expected, "latency_delta_ms": -10.0, "prompt_tokens_delta": 0, "completion_tokens_delta": 0}
