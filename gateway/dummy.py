"""The built-in ``dummy`` provider: deterministic OpenAI-shaped answers, plain and streamed, for demos and load tests.

Answers follow OpenAI's published response schemas (``message.refusal`` and ``logprobs`` sent as ``null``), honour
``n``, ``dimensions`` and ``encoding_format: base64``, and answer a forced ``tool_choice`` (a named function, or
``required``) with a tool call whose arguments fit the tool's JSON schema, so structured-output clients such as
instructor work against it. A ``null`` field means its default, as in OpenAI's API.

Usage: ``client = DummyClient("demo", conf)``; ``reply = await client.call("chat.completions", body, ...)``.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import struct
import time
from collections.abc import AsyncIterator
from typing import Any

import orjson

from gateway.config import Upstream
from gateway.dummy_responses import responses_reply, said
from gateway.reply import JSON, SSE, Reply, sse_event

MAX_CHOICES = 128  # n beyond this is answered with this many (a load-test server must stay bounded)
DEFAULT_DIMENSIONS = 8
MAX_DIMENSIONS = 4096


class DummyClient:
    """Quality knob: a prompt found in ``answers`` gets its answer, any other an echo; ``wrong_share`` of all
    prompts (chosen by a hash of the prompt alone, so a larger share is wrong on a superset of prompts) get
    ``WRONG`` instead. Two dummies differing only in ``wrong_share`` are a good and a bad model."""

    bounds_time = True  # it answers at once, from memory

    WRONG = "Sorry, I am not sure about that."

    def __init__(self, name: str, conf: Upstream) -> None:
        self.name = name
        self.model = conf.model
        self.answers = conf.answers
        self.wrong_share = conf.wrong_share

    def _text(self, said: Any) -> str:
        said = said if isinstance(said, str) else orjson.dumps(said).decode()
        if self.wrong_share and _unit(said) < self.wrong_share:
            return self.WRONG
        if said in self.answers:
            return self.answers[said]
        return f"Hello from {self.name}. You said: {said[:200]}"

    async def call(
        self, endpoint: str, body: dict[str, Any], *, stream: bool, request_id: str, timeout_s: float | None = None
    ) -> Reply:
        rid = "dummy-" + request_id
        if endpoint == "embeddings":
            return Reply(200, JSON, orjson.dumps(self._embeddings(body)))
        if endpoint == "responses":
            return responses_reply(request_id, self.model, self._text(said(body)), body, stream)
        n = min(max(_int(body.get("n"), 1), 1), MAX_CHOICES)
        if endpoint == "chat.completions":
            messages = body.get("messages") or [{}]
            last = messages[-1] if isinstance(messages[-1], dict) else {}
            texts = [self._text(last.get("content"))] * n
            tool = _forced_tool(body)
        else:
            texts = [self._text(p) for p in _prompts(body.get("prompt")) for _ in range(n)]
            tool = None
        usage = {
            "prompt_tokens": 8,
            "completion_tokens": sum(len(t.split(" ")) for t in texts),
            "total_tokens": 8 + sum(len(t.split(" ")) for t in texts),
        }
        head = {"id": rid, "created": int(time.time()), "model": self.model}
        if stream:
            options = body.get("stream_options")
            include_usage = isinstance(options, dict) and bool(options.get("include_usage"))
            chunks = _chat_chunks(head, texts, tool) if endpoint == "chat.completions" else _text_chunks(head, texts)
            return Reply(200, SSE, stream=_stream(chunks, head, usage, include_usage, endpoint))
        if endpoint == "chat.completions":
            choices = [_chat_choice(i, text, tool) for i, text in enumerate(texts)]
            out = {**head, "object": "chat.completion", "choices": choices, "usage": usage}
        else:
            choices = [{"index": i, "text": t, "finish_reason": "stop", "logprobs": None} for i, t in enumerate(texts)]
            out = {**head, "object": "text_completion", "choices": choices, "usage": usage}
        return Reply(200, JSON, orjson.dumps(out))

    def _embeddings(self, body: dict[str, Any]) -> dict[str, Any]:
        inputs: Any = body.get("input")
        is_many = isinstance(inputs, list) and inputs and not isinstance(inputs[0], int)
        items = inputs if is_many else [inputs]
        size = min(max(_int(body.get("dimensions"), DEFAULT_DIMENSIONS), 1), MAX_DIMENSIONS)
        as_base64 = body.get("encoding_format") == "base64"
        data = []
        for i, item in enumerate(items):
            vector = _vector(orjson.dumps(item), size)
            encoded: Any = base64.b64encode(struct.pack(f"<{size}f", *vector)).decode() if as_base64 else vector
            data.append({"object": "embedding", "index": i, "embedding": encoded})
        usage = {"prompt_tokens": len(items), "total_tokens": len(items)}
        return {"object": "list", "data": data, "model": self.model, "usage": usage}


def _int(value: Any, default: int) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) else default


def _prompts(prompt: Any) -> list[Any]:
    """A completions ``prompt`` as a list of prompts: a string, tokens, a list of either, or null (the default)."""
    if prompt is None:
        return ["<|endoftext|>"]
    if isinstance(prompt, list) and prompt and not isinstance(prompt[0], int):
        return prompt
    return [prompt]


def _unit(text: str) -> float:
    """A number in [0, 1) fixed by ``text``."""
    return int.from_bytes(hashlib.sha256(text.encode()).digest()[:8], "big") / 2**64


def _vector(seed: bytes, size: int) -> list[float]:
    digest = hashlib.shake_256(seed).digest(size)
    return [round(b / 255.0 - 0.5, 6) for b in digest]


def _forced_tool(body: dict[str, Any]) -> dict[str, Any] | None:
    """The function a ``tool_choice`` forces (a named one, or the first tool for ``required``), else None."""
    choice, tools = body.get("tool_choice"), body.get("tools")
    tools = tools if isinstance(tools, list) else []
    functions = [t["function"] for t in tools if isinstance(t, dict) and isinstance(t.get("function"), dict)]
    if isinstance(choice, dict) and isinstance(choice.get("function"), dict):
        name = choice["function"].get("name")
        return next((f for f in functions if f.get("name") == name), {"name": name})
    if choice == "required" and functions:
        return functions[0]
    return None


def _tool_call(tool: dict[str, Any], index: int) -> dict[str, Any]:
    params = tool.get("parameters")
    schema = params if isinstance(params, dict) else {}
    arguments = orjson.dumps(_example(schema, schema.get("$defs") or schema.get("definitions") or {}, 0)).decode()
    name = tool.get("name") if isinstance(tool.get("name"), str) else "tool"
    return {"id": f"call_dummy{index}", "type": "function", "function": {"name": name, "arguments": arguments}}


def _example(schema: Any, defs: dict[str, Any], depth: int) -> Any:
    """A small value that fits a JSON schema (types, enums, consts, refs to $defs, required properties)."""
    if not isinstance(schema, dict) or depth > 16:
        return None
    if "$ref" in schema:
        return _example(defs.get(str(schema["$ref"]).rsplit("/", 1)[-1]), defs, depth + 1)
    if "const" in schema:
        return schema["const"]
    if schema.get("enum"):
        return schema["enum"][0]
    if "default" in schema:
        return schema["default"]
    for key in ("anyOf", "oneOf", "allOf"):
        if schema.get(key):
            return _example(schema[key][0], defs, depth + 1)
    kind = schema.get("type")
    kind = kind[0] if isinstance(kind, list) and kind else kind
    if kind == "object" or "properties" in schema:
        props = schema.get("properties") or {}
        required: Any = schema.get("required", props)
        return {k: _example(props.get(k), defs, depth + 1) for k in required}
    if kind == "array":
        return [_example(schema.get("items"), defs, depth + 1) for _ in range(schema.get("minItems", 0))]
    examples = {"string": "dummy", "integer": 0, "number": 0.0, "boolean": False}
    return examples.get(kind) if isinstance(kind, str) else None


def _chat_choice(index: int, text: str, tool: dict[str, Any] | None) -> dict[str, Any]:
    message: dict[str, Any] = {"role": "assistant", "content": text, "refusal": None}
    if tool is not None:
        message.update(content=None, tool_calls=[_tool_call(tool, index)])
    return {
        "index": index,
        "message": message,
        "logprobs": None,
        "finish_reason": "stop" if tool is None else "tool_calls",
    }


def _chat_chunks(head: dict[str, Any], texts: list[str], tool: dict[str, Any] | None) -> list[dict[str, Any]]:
    """Every chunk of a streamed chat answer, the choices interleaved word by word, finish reasons last."""
    chunks = []

    def chunk(index: int, delta: dict[str, Any], finish: str | None = None) -> dict[str, Any]:
        choice = {"index": index, "delta": delta, "logprobs": None, "finish_reason": finish}
        return {**head, "object": "chat.completion.chunk", "choices": [choice]}

    if tool is not None:
        for i in range(len(texts)):
            call = _tool_call(tool, i)
            arguments = call["function"].pop("arguments")
            call["function"]["arguments"] = ""
            chunks.append(chunk(i, {"role": "assistant", "content": None, "tool_calls": [{"index": 0, **call}]}))
            chunks.append(chunk(i, {"tool_calls": [{"index": 0, "function": {"arguments": arguments}}]}))
        return [*chunks, *(chunk(i, {}, "tool_calls") for i in range(len(texts)))]
    words = [t.split(" ") for t in texts]
    for w in range(max(len(ws) for ws in words)):
        for i, ws in enumerate(words):
            if w < len(ws):
                delta = {"content": ws[w] if w == 0 else " " + ws[w]}
                chunks.append(chunk(i, {"role": "assistant", "refusal": None, **delta} if w == 0 else delta))
    return [*chunks, *(chunk(i, {}, "stop") for i in range(len(texts)))]


def _text_chunks(head: dict[str, Any], texts: list[str]) -> list[dict[str, Any]]:
    chunks = []
    for i, text in enumerate(texts):
        for w, word in enumerate(text.split(" ")):
            choice = {"index": i, "text": word if w == 0 else " " + word, "logprobs": None, "finish_reason": None}
            chunks.append({**head, "object": "text_completion", "choices": [choice]})
    last = [{"index": i, "text": "", "logprobs": None, "finish_reason": "stop"} for i in range(len(texts))]
    return [*chunks, {**head, "object": "text_completion", "choices": last}]


async def _stream(
    chunks: list[dict[str, Any]], head: dict[str, Any], usage: dict[str, int], include_usage: bool, endpoint: str
) -> AsyncIterator[bytes]:
    chat = endpoint == "chat.completions"
    for chunk in chunks:
        if include_usage and chat:
            chunk["usage"] = None  # OpenAI sends the key on every chunk once usage was asked for
        yield sse_event(chunk)
        await asyncio.sleep(0)
    if include_usage:
        obj = "chat.completion.chunk" if chat else "text_completion"
        yield sse_event({**head, "object": obj, "choices": [], "usage": usage})
    yield b"data: [DONE]\n\n"
