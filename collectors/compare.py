"""Shadow-vs-primary comparison: how far a candidate's answer is from production's on the same request.

Scores (all JSON-ready, stored in the shadow interaction's ``extra["comparison"]``):

- ``exact``: the answers are identical (text, tool-call names and arguments, or embedding vectors).
- ``similarity`` in [0, 1]: normalised text similarity (NFKC, case-folded, whitespace collapsed; rapidfuzz's
  Indel ratio on the first 4,000 characters of each side, so one comparison stays under a millisecond).
  Answers that are both JSON compare by their canonical form (keys sorted), tool calls as
  ``name(canonical arguments)``; embeddings by cosine similarity (negative clamped to 0).
- ``json_equal``: parsed-JSON equality when both answers are a JSON object or array, else None.
- ``tool_names_agree`` / ``tool_arguments_agree``: tool calls in the same order with the same names / the
  same parsed arguments; None when neither side called a tool.
- ``latency_delta_ms``, ``prompt_tokens_delta``, ``completion_tokens_delta``: shadow minus primary (None
  where a side did not report usage).

Usage: ``scores = compare(primary_interaction, shadow_interaction)``; ``scores["similarity"]``.
"""

from __future__ import annotations

import base64
import math
import re
import struct
import unicodedata
from dataclasses import dataclass
from typing import Any

import orjson
from rapidfuzz.distance import Indel

from collectors.record import Interaction

_SPACE = re.compile(r"\s+")
MAX_COMPARED_CHARS = 4_000


@dataclass(frozen=True, slots=True)
class Answer:
    """What a response says, whatever its endpoint: text, tool calls, or embedding vectors."""

    text: str
    tools: tuple[tuple[str, str], ...]  # (name, raw arguments)
    vectors: tuple[tuple[float, ...], ...]


def answer_of(response: dict[str, Any] | None) -> Answer:
    if not isinstance(response, dict):
        return Answer("", (), ())
    data = response.get("data")
    if isinstance(data, list):
        return Answer("", (), tuple(_vector(item.get("embedding")) for item in data if isinstance(item, dict)))
    texts: list[str] = []
    tools: list[tuple[str, str]] = []
    for item in response.get("output") or [] if response.get("object") == "response" else []:
        if isinstance(item, dict) and item.get("type") == "message":  # the Responses API's output items
            texts.append(_content(item.get("content")))
        elif isinstance(item, dict) and item.get("type") == "function_call":
            tools.append((str(item.get("name", "")), str(item.get("arguments", ""))))
    choices = [c for c in response.get("choices") or () if isinstance(c, dict)]
    if len(choices) > 1:
        choices.sort(key=lambda c: c.get("index") or 0)
    for choice in choices:
        message = choice.get("message")
        if isinstance(message, dict):
            texts.append(_content(message.get("content")))
            for call in message.get("tool_calls") or []:
                function = call.get("function") if isinstance(call, dict) else None
                if isinstance(function, dict):
                    tools.append((str(function.get("name", "")), str(function.get("arguments", ""))))
        elif isinstance(choice.get("text"), str):
            texts.append(choice["text"])
    return Answer("\n".join(t for t in texts if t), tuple(tools), ())


def _content(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "".join(p.get("text", "") for p in content if isinstance(p, dict) and isinstance(p.get("text"), str))
    return ""


def _vector(embedding: Any) -> tuple[float, ...]:
    if isinstance(embedding, str):  # encoding_format: base64 (little-endian float32)
        raw = base64.b64decode(embedding)
        return struct.unpack(f"<{len(raw) // 4}f", raw[: len(raw) // 4 * 4])
    if isinstance(embedding, list):
        return tuple(float(x) for x in embedding if isinstance(x, int | float))
    return ()


def _json(text: str) -> Any:
    """The parsed value if ``text`` is a JSON object or array, else None."""
    stripped = text.strip()
    if not stripped or stripped[0] not in "[{":
        return None
    try:
        value = orjson.loads(stripped)
    except orjson.JSONDecodeError:
        return None
    return value if isinstance(value, dict | list) else None


def _canonical(value: Any) -> str:
    return orjson.dumps(value, option=orjson.OPT_SORT_KEYS).decode()


def _arguments(raw: str) -> Any:
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError:
        return raw


def _normalised(text: str) -> str:
    return _SPACE.sub(" ", unicodedata.normalize("NFKC", text).casefold()).strip()


def _comparable(answer: Answer) -> str:
    parsed = _json(answer.text)
    text = _canonical(parsed) if parsed is not None else _normalised(answer.text)
    tools = [f"{name}({_canonical(_arguments(args))})" for name, args in answer.tools]
    return "\n".join([text, *tools]) if tools else text


def _cosine(a: tuple[float, ...], b: tuple[float, ...]) -> float:
    if len(a) != len(b) or not a:
        return 0.0
    norm = math.sqrt(sum(x * x for x in a)) * math.sqrt(sum(y * y for y in b))
    if norm == 0:
        return 1.0 if a == b else 0.0
    return max(0.0, min(1.0, sum(x * y for x, y in zip(a, b, strict=True)) / norm))


def similarity(primary: Answer, shadow: Answer) -> float:
    if primary.vectors or shadow.vectors:
        if len(primary.vectors) != len(shadow.vectors):
            return 0.0
        pairs = list(zip(primary.vectors, shadow.vectors, strict=True))
        return sum(_cosine(a, b) for a, b in pairs) / len(pairs)
    a, b = _comparable(primary)[:MAX_COMPARED_CHARS], _comparable(shadow)[:MAX_COMPARED_CHARS]
    return float(Indel.normalized_similarity(a, b))


def compare_answers(primary: Answer, shadow: Answer) -> dict[str, Any]:
    if primary == shadow and not primary.vectors:  # the same answer: what the scores below come to, cheaply
        same_json = True if _json(primary.text) is not None else None
        tools_seen = True if primary.tools else None
        return {"exact": True, "similarity": 1.0, "json_equal": same_json, "tool_names_agree": tools_seen,
                "tool_arguments_agree": tools_seen}  # fmt: skip
    return scores(primary, shadow)


def scores(primary: Answer, shadow: Answer) -> dict[str, Any]:
    """Every answer score, worked out in full."""
    p_json, s_json = _json(primary.text), _json(shadow.text)
    tools_seen = bool(primary.tools or shadow.tools)
    names_agree = [n for n, _ in primary.tools] == [n for n, _ in shadow.tools]
    return {
        "exact": primary == shadow,
        "similarity": round(similarity(primary, shadow), 6),
        "json_equal": None if p_json is None or s_json is None else p_json == s_json,
        "tool_names_agree": names_agree if tools_seen else None,
        "tool_arguments_agree": (
            names_agree and [_arguments(a) for _, a in primary.tools] == [_arguments(a) for _, a in shadow.tools]
            if tools_seen
            else None
        ),
    }


_TOKEN_DELTAS = (("prompt_tokens", "prompt_tokens_delta"), ("completion_tokens", "completion_tokens_delta"))


def _same_answer(primary: dict[str, Any] | None, shadow: dict[str, Any] | None) -> bool:
    """Whether ``answer_of`` comes to the same for both: the fields it reads are equal (cheaper than working out
    the second answer)."""
    if not isinstance(primary, dict) or not isinstance(shadow, dict):
        return False
    get, other = primary.get, shadow.get
    return (
        get("choices") == other("choices")
        and get("object") == other("object")
        and get("output") == other("output")
        and get("data") == other("data")
    )


def compare(primary: Interaction, shadow: Interaction) -> dict[str, Any]:
    """Every score of ``shadow`` against ``primary`` (both answered)."""
    answer = answer_of(primary.response)
    same = _same_answer(primary.response, shadow.response)
    scores = compare_answers(answer, answer if same else answer_of(shadow.response))
    scores["latency_delta_ms"] = round(shadow.latency_ms - primary.latency_ms, 3)
    primary_usage, shadow_usage = primary.usage or {}, shadow.usage or {}
    for kind, delta in _TOKEN_DELTAS:
        p, s = primary_usage.get(kind), shadow_usage.get(kind)
        scores[delta] = s - p if isinstance(p, int) and isinstance(s, int) else None
    return scores
