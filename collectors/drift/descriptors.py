"""Cheap descriptors of one interaction's prompt and answer, the inputs of drift checks.

Computed off the request path, from stored interactions (or dataset lines), never while a client waits.
A descriptor is a flat dict of numbers, strings, booleans and one list of terms; a key is None where the
interaction has no such thing (no answer, no usage). ``policies.drift_signals.SIGNALS`` names the keys.

Usage: ``describe(record["request"], record["response"], record.get("usage"))`` -> dict.
"""

from __future__ import annotations

import hashlib
import re
from typing import Any

import orjson

_WORD = re.compile(r"[^\W\d_]{2,}")
_TOKEN = re.compile(r"\w+|[^\w\s]")
_REFUSAL = re.compile(
    r"\b(i(?:'| a)?m sorry,? but|i (?:can ?not|can't|won't|am unable to|'m unable to|am not able to) "
    r"(?:help|assist|comply|provide|do that|fulfil)|as an ai\b|i must decline)",
    re.IGNORECASE,
)
# common English function words: they carry no topic, and would crowd the terms that rose and fell
STOPWORDS = frozenset(
    "the be to of and a an in that have it for not on with he as you do at this but his by from they we say her she "
    "or will my one all would there their what so up out if about who get which go me when make can like time no just "
    "him know take into your some could them see other than then now look only come its over think also back after "
    "use two how our well way even want because any these give most us is are was were been has had did does am i "
    "hi hello please thanks thank yes ok okay".split()
)
MAX_TERMS = 64  # distinct terms kept per prompt
MAX_TERM_CHARS = 32
_SCRIPTS = (  # (first code point, last code point, script)
    (0x0041, 0x024F, "latin"),
    (0x0370, 0x03FF, "greek"),
    (0x0400, 0x052F, "cyrillic"),
    (0x0590, 0x05FF, "hebrew"),
    (0x0600, 0x06FF, "arabic"),
    (0x0900, 0x097F, "devanagari"),
    (0x3040, 0x30FF, "kana"),
    (0x4E00, 0x9FFF, "han"),
    (0xAC00, 0xD7AF, "hangul"),
)
FINISH_REASONS = frozenset({"stop", "length", "tool_calls", "content_filter", "function_call"})


def _text(content: Any) -> str:
    """A message's text: a string, or the text parts of a list of content parts."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "\n".join(p["text"] for p in content if isinstance(p, dict) and isinstance(p.get("text"), str))
    return ""


def _script(text: str, letters: int) -> str:
    if not letters:
        return "none"
    if text.isascii():
        return "latin"
    counts: dict[str, int] = {}
    for ch in text:
        if ch.isalpha():
            point = ord(ch)
            name = "latin" if point < 0x80 else next((s for lo, hi, s in _SCRIPTS if lo <= point <= hi), "other")
            counts[name] = counts.get(name, 0) + 1
    top, n = max(counts.items(), key=lambda kv: kv[1])
    return top if n >= 0.8 * letters else "mixed"


def terms(text: str) -> list[str]:
    """Distinct lower-case words of two or more letters, without stop words, in order of first use."""
    seen: dict[str, None] = {}
    for word in _WORD.findall(text.lower()):
        if word not in STOPWORDS and len(word) <= MAX_TERM_CHARS:
            seen.setdefault(word, None)
            if len(seen) >= MAX_TERMS:
                break
    return list(seen)


def _prompt(request: dict[str, Any]) -> tuple[str, str, int]:
    """(the user's latest text, the system prompt, the number of messages)."""
    messages = request.get("messages")
    if isinstance(messages, list):
        msgs = [m for m in messages if isinstance(m, dict)]
        system = "\n".join(_text(m.get("content")) for m in msgs if m.get("role") in ("system", "developer"))
        users = [_text(m.get("content")) for m in msgs if m.get("role") == "user"]
        return (users[-1] if users else ""), system, len(msgs)
    for key in ("prompt", "input"):
        value = request.get(key)
        if isinstance(value, str):
            return value, "", 1
        if isinstance(value, list) and all(isinstance(v, str) for v in value):
            return "\n".join(value), "", len(value)
    return "", "", 0


def _asks_json(request: dict[str, Any]) -> bool:
    response_format = request.get("response_format")
    return isinstance(response_format, dict) and response_format.get("type") in ("json_object", "json_schema")


def describe_prompt(request: dict[str, Any]) -> dict[str, Any]:
    text, system, turns = _prompt(request)
    letters = sum(map(str.isalpha, text))
    visible = len(text) - sum(map(str.isspace, text))
    return {
        "prompt_chars": len(text),
        "prompt_tokens": len(_TOKEN.findall(text)),
        "prompt_nonletter": round(1 - letters / visible, 3) if visible else 0.0,
        "prompt_turns": turns,
        "prompt_script": _script(text, letters),
        "prompt_tools": bool(request.get("tools") or request.get("functions")),
        "prompt_json_mode": _asks_json(request),
        "system_prompt": hashlib.sha256(system.encode()).hexdigest()[:8] if system else "none",
        "prompt_terms": terms(text),
    }


def _json_valid(text: str) -> bool:
    try:
        orjson.loads(text)
    except orjson.JSONDecodeError:
        return False
    return True


def describe_answer(
    request: dict[str, Any], response: dict[str, Any] | None, usage: dict[str, Any] | None
) -> dict[str, Any]:
    choices = response.get("choices") if isinstance(response, dict) else None
    if not isinstance(choices, list) or not choices or not isinstance(choices[0], dict):
        return {}
    choice = choices[0]
    message: dict[str, Any] = choice["message"] if isinstance(choice.get("message"), dict) else {}
    text = _text(message.get("content")) if message else str(choice.get("text") or "")
    finish = choice.get("finish_reason")
    tokens = (usage or response.get("usage") or {}).get("completion_tokens")  # type: ignore[union-attr]
    return {
        "answer_chars": len(text),
        "answer_tokens": tokens if isinstance(tokens, int) else None,
        "answer_refusal": bool(_REFUSAL.search(text[:2000])),
        "answer_json": ("valid" if _json_valid(text) else "invalid") if _asks_json(request) else "not_asked",
        "finish_reason": finish if finish in FINISH_REASONS else ("none" if finish is None else "other"),
        "answer_tool_calls": bool(message.get("tool_calls") or message.get("function_call")),
    }


def describe(
    request: dict[str, Any], response: dict[str, Any] | None, usage: dict[str, Any] | None = None
) -> dict[str, Any]:
    """Prompt and answer descriptors of one interaction (answer keys absent when there is no answer)."""
    return {**describe_prompt(request), **describe_answer(request, response, usage)}
