"""The OpenAPI 3.1 document of the endpoints Turnout serves, derived from OpenAI's request and response shapes.

Only what Turnout itself checks is required (``model``, ``messages``/``prompt``/``input``, the feedback key);
every other OpenAI field passes through, so objects stay open. ``model`` lists the routes of the config
generation serving now.

Usage: ``Route("/openapi.json", openapi_endpoint, methods=["GET"])``; ``document(["support-bot"])``.
"""

from __future__ import annotations

from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from gateway.runtime import Gateway

ERRORS = {
    "400": "Bad request body",
    "401": "Missing or wrong API key",
    "404": "Unknown model (no route of that name)",
    "408": "The request body came too slowly",
    "413": "Request body too large",
    "429": "Upstream rate limit",
    "502": "Upstream failure",
    "503": "Gateway overloaded or shutting down",
    "504": "Upstream timeout",
}


def _ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


def _json(schema: dict[str, Any]) -> dict[str, Any]:
    return {"application/json": {"schema": schema}}


def _errors(*codes: str) -> dict[str, Any]:
    return {code: {"description": ERRORS[code], "content": _json(_ref("Error"))} for code in codes}


def _proxied(summary: str, request: str, answer: str, *, streams: bool) -> dict[str, Any]:
    ok: dict[str, Any] = {"description": "The upstream's answer", "content": _json(_ref(answer))}
    if streams:
        ok["content"]["text/event-stream"] = {"schema": {"type": "string"}}
    return {
        "post": {
            "summary": summary,
            "requestBody": {"required": True, "content": _json(_ref(request))},
            "responses": {"200": ok, **_errors("400", "401", "404", "408", "413", "429", "502", "503", "504")},
        }
    }


def _get(summary: str, content: dict[str, Any]) -> dict[str, Any]:
    ok = {"200": {"description": "OK", "content": content}}
    return {"get": {"summary": summary, "security": [], "responses": ok}}


def _schemas(routes: list[str]) -> dict[str, Any]:
    model = {"type": "string", "enum": routes} if routes else {"type": "string"}
    text_or_parts = {"anyOf": [{"type": "string"}, {"type": "array", "items": {"type": "object"}}, {"type": "null"}]}
    sampling = {
        "temperature": {"type": "number", "minimum": 0, "maximum": 2},
        "top_p": {"type": "number", "minimum": 0, "maximum": 1},
        "n": {"type": "integer", "minimum": 1, "maximum": 8},
        "max_tokens": {"type": "integer", "minimum": 1},
        "stop": {"anyOf": [{"type": "string"}, {"type": "array", "items": {"type": "string"}, "maxItems": 4}]},
        "user": {"type": "string"},
        "seed": {"type": "integer"},
        "stream": {"type": "boolean"},
        "stream_options": {"type": "object", "properties": {"include_usage": {"type": "boolean"}}},
    }
    return {
        "Error": {
            "type": "object",
            "required": ["error"],
            "properties": {
                "error": {
                    "type": "object",
                    "required": ["message", "type"],
                    "properties": {
                        "message": {"type": "string"},
                        "type": {"type": "string"},
                        "code": {"type": ["string", "null"]},
                        "param": {"type": ["string", "null"]},
                    },
                }
            },
        },
        "Message": {
            "type": "object",
            "required": ["role"],
            "properties": {
                "role": {"type": "string", "enum": ["system", "developer", "user", "assistant", "tool"]},
                "content": text_or_parts,
                "name": {"type": "string"},
                "tool_call_id": {"type": "string"},
                "tool_calls": {"type": "array", "items": {"type": "object"}},
            },
        },
        "ChatCompletionRequest": {
            "type": "object",
            "required": ["model", "messages"],
            "properties": {
                "model": model,
                "messages": {"type": "array", "minItems": 1, "items": _ref("Message")},
                "tools": {"type": "array", "items": {"type": "object"}},
                "response_format": {"type": "object"},
                **sampling,
            },
        },
        "CompletionRequest": {
            "type": "object",
            "required": ["model", "prompt"],
            "properties": {
                "model": model,
                "prompt": {
                    "anyOf": [{"type": "string"}, {"type": "array", "items": {"type": "string"}}, {"type": "null"}]
                },
                **sampling,
            },
        },
        "EmbeddingRequest": {
            "type": "object",
            "required": ["model", "input"],
            "properties": {
                "model": model,
                "input": {"anyOf": [{"type": "string"}, {"type": "array", "items": {"type": "string"}}]},
                "user": {"type": "string"},
                "dimensions": {"type": "integer", "minimum": 1},
            },
        },
        "ResponseRequest": {
            "type": "object",
            "required": ["model"],
            "properties": {
                "model": model,
                "input": {"anyOf": [{"type": "string"}, {"type": "array", "items": {"type": "object"}}]},
                "instructions": {"type": ["string", "null"]},
                "previous_response_id": {"type": ["string", "null"]},
                "max_output_tokens": {"type": "integer", "minimum": 1},
                "metadata": {"type": "object", "additionalProperties": {"type": "string"}},
                "stream": {"type": "boolean"},
                "temperature": {"type": "number", "minimum": 0, "maximum": 2},
            },
        },
        "Response": {
            "type": "object",
            "required": ["id", "object", "output"],
            "properties": {
                "id": {"type": "string"},
                "object": {"const": "response"},
                "output": {"type": "array", "items": {"type": "object"}},
                "usage": {"type": ["object", "null"]},
            },
        },
        "ChatCompletion": {
            "type": "object",
            "required": ["object", "choices"],
            "properties": {
                "id": {"type": "string"},
                "object": {"const": "chat.completion"},
                "choices": {"type": "array", "items": {"type": "object"}},
                "usage": {"type": "object"},
            },
        },
        "Completion": {
            "type": "object",
            "required": ["choices"],
            "properties": {"choices": {"type": "array", "items": {"type": "object"}}},
        },
        "EmbeddingList": {
            "type": "object",
            "required": ["data"],
            "properties": {"object": {"const": "list"}, "data": {"type": "array", "items": {"type": "object"}}},
        },
        "ModelList": {
            "type": "object",
            "required": ["object", "data"],
            "properties": {"object": {"const": "list"}, "data": {"type": "array", "items": _ref("Model")}},
        },
        "Model": {
            "type": "object",
            "required": ["id", "object", "created", "owned_by"],
            "properties": {"id": {"type": "string"}, "object": {"const": "model"}, "owned_by": {"type": "string"}},
        },
        "Feedback": {
            "type": "object",
            "properties": {
                "request_id": {"type": "string", "minLength": 1, "maxLength": 256},
                "response_id": {"type": "string", "minLength": 1, "maxLength": 256},
                "score": {"type": "number", "minimum": 0, "maximum": 1},
                "label": {"type": "string", "enum": ["good", "bad"]},
                "task_completed": {"type": "boolean"},
                "correction": _ref("Message"),
                "comment": {"type": "string"},
            },
            "anyOf": [{"required": ["request_id"]}, {"required": ["response_id"]}],
        },
    }


def document(routes: list[str]) -> dict[str, Any]:
    """The OpenAPI document for a gateway serving ``routes`` (the model names clients may ask for)."""
    paths = {
        "/v1/chat/completions": _proxied(
            "Chat completion (streamed with stream: true)", "ChatCompletionRequest", "ChatCompletion", streams=True
        ),
        "/v1/completions": _proxied("Text completion", "CompletionRequest", "Completion", streams=True),
        "/v1/embeddings": _proxied("Embeddings", "EmbeddingRequest", "EmbeddingList", streams=False),
        "/v1/responses": _proxied(
            "Responses API (streamed as typed events with stream: true)", "ResponseRequest", "Response", streams=True
        ),
        "/v1/models": {
            "get": {
                "summary": "The routes clients may name as model",
                "responses": {"200": {"description": "OK", "content": _json(_ref("ModelList"))}, **_errors("401")},
            }
        },
        "/v1/models/{model}": {
            "get": {
                "summary": "One route clients may name as model",
                "parameters": [{"name": "model", "in": "path", "required": True, "schema": {"type": "string"}}],
                "responses": {
                    "200": {"description": "OK", "content": _json(_ref("Model"))},
                    **_errors("401", "404"),
                },
            }
        },
        "/v1/feedback": {
            "post": {
                "summary": "Feedback on an answer, joined to its stored interaction",
                "requestBody": {"required": True, "content": _json(_ref("Feedback"))},
                "responses": {
                    "202": {"description": "Accepted and durable", "content": _json({"type": "object"})},
                    **_errors("400", "401", "413", "503"),
                },
            }
        },
        "/healthz": _get("The process is alive", _json({"type": "object"})),
        "/readyz": {
            "get": {
                "summary": "Ready to serve (fails from the start of shutdown)",
                "security": [],
                "responses": {
                    "200": {"description": "Ready", "content": _json({"type": "object"})},
                    "503": {"description": "Not ready", "content": _json({"type": "object"})},
                },
            }
        },
        "/metrics": _get("Prometheus metrics", {"text/plain": {"schema": {"type": "string"}}}),
    }
    return {
        "openapi": "3.1.0",
        "info": {"title": "Turnout", "version": "1", "description": "OpenAI-compatible gateway"},
        "paths": paths,
        "components": {
            "schemas": _schemas(routes),
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
        },
        "security": [{"bearer": []}],
    }


async def openapi_endpoint(request: Request) -> Response:
    gw: Gateway = request.state.gateway
    return JSONResponse(document(sorted(gw.generation.config.routes)))
