"""The Responses API's input and output items as chat messages, for the ``openai-chat`` export.

``instructions`` becomes a system message, a string ``input`` a user message; message items keep their role
with their text parts joined; ``function_call`` items become an assistant's ``tool_calls`` and
``function_call_output`` items tool messages. Items with no chat equivalent (reasoning, web search, ...) are
left out.

Usage: ``messages = input_messages(request)``; ``answer = output_message(response)`` (None: nothing to learn).
"""

from __future__ import annotations

from typing import Any


def _text(content: Any) -> str | None:
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        parts = [str(p["text"]) for p in content if isinstance(p, dict) and isinstance(p.get("text"), str)]
        return "".join(parts) if parts else None
    return None


def _tool_call(item: dict[str, Any]) -> dict[str, Any]:
    function = {"name": str(item.get("name", "")), "arguments": str(item.get("arguments", ""))}
    return {"id": str(item.get("call_id") or item.get("id") or ""), "type": "function", "function": function}


def _messages(items: list[Any]) -> list[dict[str, Any]]:
    messages: list[dict[str, Any]] = []
    for item in items:
        if not isinstance(item, dict):
            continue
        kind = item.get("type", "message")
        if kind == "message" and isinstance(item.get("role"), str):
            text = _text(item.get("content"))
            if text is not None:
                messages.append({"role": item["role"], "content": text})
        elif kind == "function_call":
            if messages and messages[-1]["role"] == "assistant" and "tool_calls" in messages[-1]:
                messages[-1]["tool_calls"].append(_tool_call(item))
            else:
                messages.append({"role": "assistant", "tool_calls": [_tool_call(item)]})
        elif kind == "function_call_output":
            output = item.get("output")
            messages.append({"role": "tool", "tool_call_id": str(item.get("call_id", "")), "content": _text(output)})
    return messages


def input_messages(request: dict[str, Any]) -> list[dict[str, Any]]:
    messages = []
    if isinstance(request.get("instructions"), str) and request["instructions"]:
        messages.append({"role": "system", "content": request["instructions"]})
    given = request.get("input")
    if isinstance(given, str):
        messages.append({"role": "user", "content": given})
    elif isinstance(given, list):
        messages += _messages(given)
    return messages


def output_message(response: dict[str, Any] | None) -> dict[str, Any] | None:
    """The answer as one assistant message (its text, its tool calls), or None when it has neither."""
    output = (response or {}).get("output")
    found = _messages(output if isinstance(output, list) else [])
    texts = [m["content"] for m in found if m["role"] == "assistant" and m.get("content")]
    calls = [c for m in found if m["role"] == "assistant" for c in m.get("tool_calls", [])]
    if not texts and not calls:
        return None
    answer: dict[str, Any] = {"role": "assistant", "content": "".join(texts) or None}
    if calls:
        answer["tool_calls"] = calls
    return answer
