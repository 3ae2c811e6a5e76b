"""The rough edges a new user hit: GET /v1/models/{id}, null meaning the default, clear messages, the dummy
provider's answers valid against OpenAI's published schemas (n, dimensions, base64, forced tool calls), the
ignored-override header, no ``_created`` series."""

from __future__ import annotations

import base64
import json
import struct
from collections.abc import Iterator
from pathlib import Path

import httpx
import openai
import pydantic
import pytest
from jsonschema import validate

from tests.fakes.openai_server import FakeOpenAI
from tests.harness import Served, served, write_config
from tests.openai_schema import assert_valid

CONFIG = """
server: {{state_dir: {state}}}
store: sqlite:///{db}
auth: {{admin_key_env: T_EDGE_ADMIN}}
upstreams:
  d1: {{provider: dummy, model: one}}
  d2: {{provider: dummy, model: two}}
  real: {{base_url: "{url}", model: up}}
routes:
  demo: {{variants: {{d1: 50, d2: 50}}, sticky_by: none}}
  pass: {{variants: {{real: 100}}}}
  solo: {{variants: {{d1: 100}}}}
"""
ADMIN = "adm-edge-key"


@pytest.fixture(scope="module")
def upstream() -> Iterator[FakeOpenAI]:
    with FakeOpenAI() as fake:
        yield fake


@pytest.fixture(scope="module")
def gw(tmp_path_factory: pytest.TempPathFactory, upstream: FakeOpenAI) -> Iterator[Served]:
    d = tmp_path_factory.mktemp("edges")
    cfg = write_config(d, CONFIG.format(state=d / "state", db=d / "t.db", url=upstream.url))
    with served(cfg, env={"T_EDGE_ADMIN": ADMIN}) as server:
        yield server


def sdk(gw: Served, key: str = "k") -> openai.OpenAI:
    return openai.OpenAI(base_url=gw.url + "/v1", api_key=key, max_retries=0, timeout=10)


def sse(resp: httpx.Response) -> list[dict[str, object]]:
    events = [line[6:] for line in resp.text.splitlines() if line.startswith("data: ")]
    assert events[-1] == "[DONE]"
    return [json.loads(e) for e in events[:-1]]


def test_models_retrieve_names_a_route_and_404s_for_others(gw: Served) -> None:
    client = sdk(gw)
    model = client.models.retrieve("demo")
    assert model.id == "demo" and model.object == "model"
    assert_valid("Model", httpx.get(gw.url + "/v1/models/demo").json())
    assert_valid("ListModelsResponse", httpx.get(gw.url + "/v1/models").json())
    with pytest.raises(openai.NotFoundError) as info:
        client.models.retrieve("nope")
    assert info.value.code == "model_not_found"


def test_null_prompt_means_the_default_and_reaches_the_upstream_as_sent(gw: Served, upstream: FakeOpenAI) -> None:
    resp = httpx.post(gw.url + "/v1/completions", json={"model": "demo", "prompt": None, "max_tokens": None})
    assert resp.status_code == 200, resp.text
    assert_valid("CreateCompletionResponse", resp.json())
    before = len(upstream.requests)
    resp = httpx.post(gw.url + "/v1/completions", json={"model": "pass", "prompt": None, "stream": None})
    assert resp.status_code == 200, resp.text
    assert upstream.requests[before].body["prompt"] is None


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ({"model": "", "messages": [{"role": "user", "content": "x"}]}, "'model' is empty: name a route"),
        ({"model": ["demo"], "messages": [{"role": "user", "content": "x"}]}, "'model' must be a string, got list"),
        ({"messages": [{"role": "user", "content": "x"}]}, "'model' is required"),
    ],
)
def test_model_mistakes_get_a_message_that_says_which(gw: Served, body: dict[str, object], message: str) -> None:
    resp = httpx.post(gw.url + "/v1/chat/completions", json=body)
    assert resp.status_code == 400 and message in resp.json()["error"]["message"]
    assert resp.json()["error"]["param"] == "model"


def test_dummy_chat_answers_fit_openai_schemas_and_honour_n(gw: Served) -> None:
    body = {"model": "solo", "messages": [{"role": "user", "content": "hi"}], "n": 3}
    plain = httpx.post(gw.url + "/v1/chat/completions", json=body).json()
    assert_valid("CreateChatCompletionResponse", plain)
    assert [c["index"] for c in plain["choices"]] == [0, 1, 2]
    assert all(c["message"]["refusal"] is None and c["logprobs"] is None for c in plain["choices"])
    streamed_body = {**body, "n": 2, "stream": True, "stream_options": {"include_usage": True}}
    streamed = httpx.post(gw.url + "/v1/chat/completions", json=streamed_body)
    chunks = sse(streamed)
    for chunk in chunks:
        assert_valid("CreateChatCompletionStreamResponse", chunk)
    texts = {0: "", 1: ""}
    for chunk in chunks:
        for choice in chunk["choices"]:  # type: ignore[attr-defined]
            texts[choice["index"]] += choice["delta"].get("content") or ""
    assert texts[0] == texts[1] == plain["choices"][0]["message"]["content"]
    assert chunks[-1]["choices"] == [] and chunks[-1]["usage"]["completion_tokens"] > 0  # type: ignore[index]


def test_dummy_completions_fit_openai_schemas_per_prompt_and_n(gw: Served) -> None:
    plain = httpx.post(gw.url + "/v1/completions", json={"model": "solo", "prompt": ["a", "b"], "n": 2}).json()
    assert_valid("CreateCompletionResponse", plain)
    assert [c["text"][-1] for c in plain["choices"]] == ["a", "a", "b", "b"]
    chunks = sse(httpx.post(gw.url + "/v1/completions", json={"model": "solo", "prompt": "c", "stream": True}))
    assert "".join(c["choices"][0]["text"] for c in chunks) == plain["choices"][0]["text"][:-1] + "c"  # type: ignore[index]
    assert_valid("CreateCompletionResponse", chunks[-1])


def test_dummy_embeddings_honour_dimensions_and_base64(gw: Served) -> None:
    client = sdk(gw)
    floats = client.embeddings.create(model="demo", input=["x", "y"], dimensions=32, encoding_format="float")
    assert [len(d.embedding) for d in floats.data] == [32, 32]
    raw = httpx.post(gw.url + "/v1/embeddings", json={"model": "demo", "input": "x", "dimensions": 32}).json()
    assert_valid("CreateEmbeddingResponse", raw)
    assert raw["data"][0]["embedding"] == floats.data[0].embedding
    packed = httpx.post(
        gw.url + "/v1/embeddings", json={"model": "demo", "input": "x", "dimensions": 32, "encoding_format": "base64"}
    ).json()
    decoded = struct.unpack("<32f", base64.b64decode(packed["data"][0]["embedding"]))
    assert decoded == pytest.approx(floats.data[0].embedding, abs=1e-6)
    by_default = client.embeddings.create(model="demo", input="x")  # the SDK asks for base64 and decodes it
    assert len(by_default.data[0].embedding) == 8


class Ticket(pydantic.BaseModel):
    title: str
    priority: int
    tags: list[str]
    urgent: bool | None = None


def test_a_forced_tool_choice_is_answered_with_a_tool_call_that_fits_the_schema(gw: Served) -> None:
    tool = openai.pydantic_function_tool(Ticket)
    messages = [{"role": "user", "content": "file a ticket"}]
    parsed = sdk(gw).chat.completions.parse(
        model="demo",
        messages=messages,  # type: ignore[arg-type]
        tools=[tool],
        tool_choice={"type": "function", "function": {"name": "Ticket"}},
    )
    (call,) = parsed.choices[0].message.tool_calls or []
    assert isinstance(call.function.parsed_arguments, Ticket)
    body = {"model": "demo", "messages": messages, "tools": [tool], "tool_choice": "required", "stream": True}
    chunks = sse(httpx.post(gw.url + "/v1/chat/completions", json=body))
    for chunk in chunks:
        assert_valid("CreateChatCompletionStreamResponse", chunk)
    arguments = "".join(
        t["function"].get("arguments", "")
        for c in chunks
        for ch in c["choices"]  # type: ignore[attr-defined]
        for t in ch["delta"].get("tool_calls", [])
    )
    validate(json.loads(arguments), tool["function"]["parameters"])


def test_a_variant_override_without_the_admin_key_is_ignored_and_says_so(gw: Served) -> None:
    body = {"model": "demo", "messages": [{"role": "user", "content": "hi"}]}
    forced = {"x-turnout-variant": "d2"}
    for _ in range(10):
        resp = httpx.post(gw.url + "/v1/chat/completions", json=body, headers={**forced, "authorization": "Bearer k"})
        assert "admin key" in resp.headers["x-turnout-variant-ignored"]
    seen = {resp.headers["x-turnout-variant"]}
    for _ in range(30):
        resp = httpx.post(gw.url + "/v1/chat/completions", json=body, headers=forced)
        seen.add(resp.headers["x-turnout-variant"])
    assert seen == {"d1", "d2"}  # sticky_by: none draws afresh; the header forced nothing
    as_admin = {**forced, "authorization": f"Bearer {ADMIN}"}
    admin = httpx.post(gw.url + "/v1/chat/completions", json=body, headers=as_admin)
    assert admin.headers["x-turnout-variant"] == "d2" and "x-turnout-variant-ignored" not in admin.headers


def test_metrics_have_no_created_series(gw: Served) -> None:
    httpx.post(gw.url + "/v1/chat/completions", json={"model": "demo", "messages": [{"role": "user", "content": "x"}]})
    text = httpx.get(gw.url + "/metrics").text
    assert "turnout_requests_total{" in text and "_created" not in text


def test_vendored_schemas_name_their_source() -> None:
    document = json.loads((Path(__file__).parent.parent / "data" / "openai_schemas.json").read_text())
    assert "openai-openapi" in document["$comment"]
