"""Descriptors of prompts and answers: what each key measures, on chat, completions and odd bodies."""

from __future__ import annotations

from collectors.drift.descriptors import describe, terms
from policies.drift_signals import SIGNALS


def _chat(content: object, **extra: object) -> dict[str, object]:
    return {
        "model": "m",
        "messages": [
            {"role": "system", "content": "Be brief."},
            {"role": "assistant", "content": "Earlier answer"},
            {"role": "user", "content": content},
        ],
        **extra,
    }


def _answer(content: str | None, finish: str | None = "stop", **message: object) -> dict[str, object]:
    return {"choices": [{"index": 0, "message": {"role": "assistant", "content": content, **message},
                         "finish_reason": finish}]}  # fmt: skip


def test_prompt_descriptors() -> None:
    d = describe(_chat("Where is my REFUND? Order #1234, placed 2 days ago!"), None)
    assert d["prompt_chars"] == 51
    assert d["prompt_tokens"] == 14  # words, numbers and punctuation marks
    assert d["prompt_nonletter"] == round(1 - 33 / 42, 3)  # letters / visible characters
    assert d["prompt_turns"] == 3
    assert d["prompt_script"] == "latin"
    assert d["prompt_tools"] is False and d["prompt_json_mode"] is False
    assert len(d["system_prompt"]) == 8 and d["system_prompt"] != "none"
    assert d["prompt_terms"] == ["where", "refund", "order", "placed", "days", "ago"]
    assert "answer_chars" not in d  # no answer: no answer descriptors


def test_only_the_latest_user_message_and_text_parts_count() -> None:
    parts = [{"type": "text", "text": "Привет, как дела"}, {"type": "image_url", "image_url": {"url": "x"}}]
    d = describe(_chat(parts, tools=[{"type": "function"}], response_format={"type": "json_object"}), None)
    assert d["prompt_chars"] == len("Привет, как дела")
    assert d["prompt_script"] == "cyrillic" and d["prompt_tools"] is True and d["prompt_json_mode"] is True
    assert describe(_chat("hello 你好世界你好"), None)["prompt_script"] == "mixed"
    assert describe(_chat("1234 ?!"), None)["prompt_script"] == "none"
    same = describe({"messages": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "x"}]}, None)
    assert same["system_prompt"] == describe(_chat("y"), None)["system_prompt"]
    assert describe({"messages": [{"role": "user", "content": "x"}]}, None)["system_prompt"] == "none"


def test_completions_and_embeddings_bodies_and_garbage() -> None:
    assert describe({"prompt": "Tell me a joke"}, None)["prompt_terms"] == ["tell", "joke"]
    assert describe({"input": ["alpha beta", "gamma"]}, None)["prompt_turns"] == 2
    odd = describe({"messages": "not a list", "prompt": 7}, {"choices": "nope"})
    assert odd["prompt_chars"] == 0 and odd["prompt_script"] == "none" and "answer_chars" not in odd


def test_answer_descriptors() -> None:
    d = describe(_chat("hi"), _answer("Sure, here you go."), {"completion_tokens": 6})
    assert d["answer_chars"] == 18 and d["answer_tokens"] == 6
    assert d["answer_refusal"] is False and d["answer_json"] == "not_asked"
    assert d["finish_reason"] == "stop" and d["answer_tool_calls"] is False
    refusal = describe(_chat("hi"), _answer("I'm sorry, but I can't help with that.", "content_filter"))
    assert refusal["answer_refusal"] is True and refusal["finish_reason"] == "content_filter"
    assert refusal["answer_tokens"] is None
    assert describe(_chat("hi"), _answer("I cannot assist with this."))["answer_refusal"] is True
    json_mode = _chat("hi", response_format={"type": "json_object"})
    assert describe(json_mode, _answer('{"a": 1}'))["answer_json"] == "valid"
    assert describe(json_mode, _answer('{"a": 1'))["answer_json"] == "invalid"
    tools = describe(_chat("hi"), _answer(None, "tool_calls", tool_calls=[{"id": "t"}]))
    assert tools["answer_tool_calls"] is True and tools["finish_reason"] == "tool_calls" and tools["answer_chars"] == 0
    assert describe(_chat("hi"), _answer("x", None))["finish_reason"] == "none"
    assert describe(_chat("hi"), _answer("x", "weird"))["finish_reason"] == "other"
    completion = describe({"prompt": "x"}, {"choices": [{"text": "abc", "finish_reason": "length"}]})
    assert completion["answer_chars"] == 3 and completion["finish_reason"] == "length"


def test_every_descriptor_key_is_a_signal_and_back() -> None:
    d = describe(_chat("hi"), _answer("ok"), {"completion_tokens": 1})
    assert set(d) == set(SIGNALS)


def test_terms_are_distinct_lower_case_words_without_stop_words() -> None:
    assert terms("The refund, the REFUND and a re-fund: x 42 café") == ["refund", "re", "fund", "café"]
    assert len(terms(" ".join(f"w{'a' * (i % 30)}{chr(97 + i % 26)}" for i in range(500)))) <= 64
