"""provider: litellm against a real Anthropic-shaped server: translation both ways, streamed and not, an
allow-list that keeps clients from redirecting the call (SE-3), exactly the configured attempts (UP-2) and a
litellm shadow (SH-5). One gateway process serves them all: importing litellm costs it seconds of CPU."""

from __future__ import annotations

import json
from collections.abc import Iterator

import httpx
import openai
import pytest

from tests.fakes.anthropic_server import FakeAnthropic
from tests.fakes.fake_server import Behavior
from tests.fakes.openai_server import FakeOpenAI
from tests.harness import GatewayProcess, write_config

CONFIG = """
auth: {{client_keys_env: T_CLIENT_KEYS}}
upstreams:
  claude: {{provider: litellm, model: anthropic/claude-test, base_url: "{url}", api_key_env: T_ANTHROPIC,
           timeout_s: 5}}
  claude-once: {{provider: litellm, model: anthropic/claude-test, base_url: "{url}", retries: 1,
                api_key_env: T_ANTHROPIC}}
  claude-shadow: {{provider: litellm, model: anthropic/claude-test, base_url: "{url}", api_key_env: T_SHADOW}}
  gpt: {{provider: litellm, model: openai/gpt-test, base_url: "{oai}", api_key_env: T_ANTHROPIC, timeout_s: 5}}
  prod: {{base_url: "{oai}", model: prod-model}}
routes:
  assistant: {{variants: {{claude: 100}}}}
  chat: {{variants: {{gpt: 100}}}}
  once: {{variants: {{claude-once: 100}}}}
  mirrored: {{variants: {{prod: 1}}, shadows: [{{upstream: claude-shadow, sample: 1}}]}}
"""
KEY = "sk-ant-canary-9999"
SHADOW_KEY = "sk-ant-shadow-canary-5151"
CLIENT_KEY = "sk-client-canary-3c3c"
AUTH = {"authorization": f"Bearer {CLIENT_KEY}"}
MESSAGES = [{"role": "system", "content": "be brief"}, {"role": "user", "content": "hello claude"}]


@pytest.fixture(scope="module")
def anthropic() -> Iterator[FakeAnthropic]:
    with FakeAnthropic() as fake:
        yield fake


@pytest.fixture(scope="module")
def oai() -> Iterator[FakeOpenAI]:
    with FakeOpenAI() as fake:
        yield fake


@pytest.fixture(scope="module")
def gw(tmp_path_factory: pytest.TempPathFactory, anthropic: FakeAnthropic, oai: FakeOpenAI) -> Iterator[GatewayProcess]:
    """One gateway process for the module: litellm keeps connection pools that only process exit tidies."""
    cfg = write_config(tmp_path_factory.mktemp("litellm"), CONFIG.format(url=anthropic.url, oai=oai.url))
    proc = GatewayProcess(cfg, env={"T_ANTHROPIC": KEY, "T_SHADOW": SHADOW_KEY, "T_CLIENT_KEYS": CLIENT_KEY})
    try:
        proc.wait_ready(60)  # importing litellm takes seconds, more on a busy machine
        yield proc
    finally:
        proc.stop()
    assert KEY not in proc.output() and SHADOW_KEY not in proc.output() and CLIENT_KEY not in proc.output()


@pytest.fixture
def fake_anthropic(anthropic: FakeAnthropic) -> Iterator[FakeAnthropic]:
    anthropic.default = Behavior()
    yield anthropic
    anthropic.default = Behavior()


def client(gw: GatewayProcess) -> openai.OpenAI:
    return openai.OpenAI(base_url=gw.url + "/v1", api_key=CLIENT_KEY, max_retries=0, timeout=20)


def test_plain_answer_is_translated_to_openai_shape(gw: GatewayProcess, fake_anthropic: FakeAnthropic) -> None:
    reply = client(gw).chat.completions.create(model="assistant", messages=MESSAGES, max_tokens=50)
    assert reply.object == "chat.completion"
    assert reply.choices[0].message.content == "echo: hello claude"
    assert reply.usage is not None and reply.usage.completion_tokens > 0
    seen = fake_anthropic.requests[-1]
    assert seen.path == "/v1/messages"
    assert seen.body["model"] == "claude-test" and seen.body["max_tokens"] == 50
    assert seen.headers["x-api-key"] == KEY


def test_stream_is_translated_chunk_by_chunk(gw: GatewayProcess) -> None:
    chunks = list(client(gw).chat.completions.create(model="assistant", messages=MESSAGES, stream=True))
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == "echo: hello claude"
    assert all(c.object == "chat.completion.chunk" for c in chunks)


def test_upstream_errors_map_to_openai_errors(gw: GatewayProcess, fake_anthropic: FakeAnthropic) -> None:
    fake_anthropic.default = Behavior(statuses=[401, 529, 529, 529])  # 529 three times: retries (default 2) run out
    body = {"model": "assistant", "messages": MESSAGES}
    denied = httpx.post(gw.url + "/v1/chat/completions", json=body, headers=AUTH, timeout=20)
    assert denied.status_code == 401 and KEY not in denied.text
    assert denied.json()["error"]["message"].startswith("upstream 'claude'")
    failed = httpx.post(gw.url + "/v1/chat/completions", json=body, headers=AUTH, timeout=20)
    assert failed.status_code == 502 and KEY not in failed.text


def test_body_cannot_redirect_a_litellm_call(gw: GatewayProcess, fake_anthropic: FakeAnthropic) -> None:
    other = FakeOpenAI()
    try:
        body = {
            "model": "assistant",
            "messages": MESSAGES,
            "api_base": other.url,
            "base_url": other.url,
            "api_key": "sk-evil",
            "extra_headers": {"x-api-key": "sk-evil"},
            "custom_llm_provider": "openai",
        }
        assert httpx.post(gw.url + "/v1/chat/completions", json=body, headers=AUTH, timeout=20).status_code == 200
        assert other.requests == []
        seen = fake_anthropic.requests[-1]
        assert seen.headers["x-api-key"] == KEY
        assert "api_base" not in seen.body and "sk-evil" not in str(seen.body)
    finally:
        other.close()


def test_request_id_sent_dropped_fields_warned_once_one_log_line_per_call(
    gw: GatewayProcess, fake_anthropic: FakeAnthropic
) -> None:
    body = {"model": "assistant", "messages": MESSAGES, "x_custom": 1, "metadata": {"app": "t"}, "temperature": None}
    calls_before = gw.output().count("litellm call: upstream 'claude'")
    for _ in range(3):
        resp = httpx.post(gw.url + "/v1/chat/completions", json=body, headers=AUTH, timeout=20)
        assert resp.status_code == 200, resp.text
        sent = fake_anthropic.requests[-1].headers
        # a correlation id, never the request id (the feedback key: security finding 2)
        assert len(sent["x-turnout-correlation-id"]) == 44 and "x-turnout-request-id" not in sent
        assert sent["x-turnout-correlation-id"] != resp.headers["x-turnout-request-id"]
        assert "temperature" not in fake_anthropic.requests[-1].body  # null means the provider's default
    out = gw.output()
    assert out.count("does not pass the request field 'x_custom' on") == 1
    assert "'metadata'" not in out and "'temperature'" not in out
    assert out.count("litellm call: upstream 'claude'") - calls_before == 3
    assert "LiteLLM completion()" not in out


def test_openai_fields_litellm_accepts_are_passed_on(gw: GatewayProcess, oai: FakeOpenAI) -> None:
    extra = {"reasoning_effort": "low", "service_tier": "auto", "store": False, "seed": 7}
    body = {"model": "chat", "messages": MESSAGES, **extra}
    resp = httpx.post(gw.url + "/v1/chat/completions", json=body, headers=AUTH, timeout=20)
    assert resp.status_code == 200, resp.text
    seen = oai.requests[-1]
    assert {k: seen.body.get(k) for k in extra} == extra
    assert seen.headers["x-turnout-correlation-id"] != resp.headers["x-turnout-request-id"]
    assert "x-turnout-request-id" not in seen.headers


def test_responses_api_through_litellm_plain_and_streamed(gw: GatewayProcess, fake_anthropic: FakeAnthropic) -> None:
    reply = client(gw).responses.create(model="assistant", input="hello claude", max_output_tokens=50)
    assert reply.output_text == "echo: hello claude"
    seen = fake_anthropic.requests[-1]
    assert seen.path == "/v1/messages" and seen.body["model"] == "claude-test"
    events = list(client(gw).responses.create(model="assistant", input="hello claude", stream=True))
    types = [e.type for e in events]
    assert types[0] == "response.created" and types[-1] == "response.completed"
    assert "".join(e.delta for e in events if e.type == "response.output_text.delta") == "echo: hello claude"


def test_a_private_address_image_url_is_never_fetched(gw: GatewayProcess) -> None:
    # security finding 8: litellm fetches image URLs for providers that need the bytes (Anthropic); releases
    # before its URL validation followed any client URL, into the pod's network
    import http.server
    import threading

    hits: list[str] = []

    class Image(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            hits.append(self.path)
            self.send_response(200)
            self.send_header("content-type", "image/png")
            self.end_headers()
            self.wfile.write(b"\x89PNG\r\n\x1a\n")

        def log_message(self, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Image)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}/internal/metadata.png"
        content = [{"type": "text", "text": "what is this?"}, {"type": "image_url", "image_url": {"url": url}}]
        body = {"model": "assistant", "messages": [{"role": "user", "content": content}]}
        resp = httpx.post(gw.url + "/v1/chat/completions", json=body, headers=AUTH, timeout=20)
        assert resp.status_code >= 400, resp.text
        assert hits == []
    finally:
        server.shutdown()
        server.server_close()


def test_litellm_upstream_gets_exactly_the_configured_attempts(
    gw: GatewayProcess, fake_anthropic: FakeAnthropic
) -> None:
    fake_anthropic.default = Behavior(statuses=[529] * 10)
    before = len(fake_anthropic.requests)
    body = {"model": "once", "messages": [{"role": "user", "content": "hello there"}]}
    resp = httpx.post(gw.url + "/v1/chat/completions", json=body, headers=AUTH, timeout=30)
    assert resp.status_code == 502
    assert len(fake_anthropic.requests) - before == 2  # retries: 1, and litellm's own retries are off


def test_a_litellm_shadow_gets_the_marker_the_correlation_id_and_its_own_key(
    gw: GatewayProcess, fake_anthropic: FakeAnthropic, oai: FakeOpenAI
) -> None:
    shadows_before, primaries_before = len(fake_anthropic.requests), len(oai.requests)
    body = {"model": "mirrored", "messages": [{"role": "user", "content": "hi"}], "stream": True}
    response = httpx.post(gw.url + "/v1/chat/completions", json=body, headers=AUTH, timeout=10)
    assert response.status_code == 200
    (seen,) = fake_anthropic.wait_for(shadows_before + 1, timeout=20)[shadows_before:]
    assert seen.headers["x-turnout-shadow"] == "1" and seen.headers["x-api-key"] == SHADOW_KEY
    (primary,) = oai.requests[primaries_before:]
    assert seen.headers["x-turnout-correlation-id"] == primary.headers["x-turnout-correlation-id"]
    assert "x-turnout-request-id" not in seen.headers  # the feedback key never leaves the gateway
    assert CLIENT_KEY not in json.dumps(seen.headers) and not seen.body.get("stream")
