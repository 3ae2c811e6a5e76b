"""Parser limits on a real gateway process (IN-2, IN-4): JSON shape, header size (431), slow bodies (408)."""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from gateway.config import parse_config
from gateway.limits import MAX_DEPTH, MAX_ITEMS, MAX_STRING
from gateway.server_protocol import MAX_HEADER_BYTES
from tests.fakes.openai_server import FakeOpenAI
from tests.harness import GatewayProcess, write_config

CONFIG = """
server: {{body_timeout_s: 0.5, state_dir: {state}}}
store: sqlite:///{db}
upstreams:
  main: {{base_url: "{url}", model: main-model}}
routes:
  bot: {{variants: {{main: 100}}}}
"""


@pytest.fixture(scope="module")
def fake() -> Iterator[FakeOpenAI]:
    with FakeOpenAI() as server:
        yield server


@pytest.fixture(scope="module")
def gw(tmp_path_factory: pytest.TempPathFactory, fake: FakeOpenAI) -> Iterator[GatewayProcess]:
    tmp = tmp_path_factory.mktemp("limits")
    cfg = write_config(tmp, CONFIG.format(url=fake.url, state=tmp / "state", db=tmp / "t.db"))
    with GatewayProcess(cfg) as proc:
        yield proc


def nested(depth: int) -> str:
    return "[" * depth + "]" * depth


def message_with(extra: str) -> bytes:
    return ('{"model": "bot", "messages": [{"role": "user", "content": "hi"}], "extra": ' + extra + "}").encode()


@pytest.mark.parametrize(
    ("name", "raw"),
    [
        ("deep", message_with(nested(MAX_DEPTH + 1))),
        ("deeper than orjson", message_with(nested(2000))),
        ("huge number", message_with("1e999")),
        ("huge negative", message_with("-" + "9" * 400)),
        ("invalid utf-8", b'{"model": "bot", "messages": [{"role": "user", "content": "\xff\xfe"}]}'),
        ("lone surrogate", message_with('"\\ud800"')),
        ("many keys", message_with("{" + ",".join(f'"k{i}": 0' for i in range(MAX_ITEMS + 1)) + "}")),
        ("long string", message_with('"' + "x" * (MAX_STRING + 1) + '"')),
    ],
)
def test_bodies_past_the_json_limits_get_a_fast_400(
    gw: GatewayProcess, fake: FakeOpenAI, name: str, raw: bytes
) -> None:
    before = len(fake.requests)
    headers = {"content-type": "application/json"}
    t0 = time.perf_counter()
    ok = httpx.post(gw.url + "/v1/chat/completions", content=message_with("[[1]]"), headers=headers, timeout=10)
    baseline = time.perf_counter() - t0
    assert ok.status_code == 200
    t0 = time.perf_counter()
    resp = httpx.post(gw.url + "/v1/chat/completions", content=raw, headers=headers, timeout=10)
    took = time.perf_counter() - t0
    assert resp.status_code == 400, name
    assert resp.json()["error"]["type"] == "invalid_request_error"
    assert len(fake.requests) == before + 1  # only the baseline reached the upstream
    assert took < 10 * baseline + 0.5 * len(raw) / (16 << 20)  # no pathological parse: bounded by size
    print(f"IN-4 {name}: {len(raw)} bytes refused in {took * 1000:.1f}ms (baseline request {baseline * 1000:.1f}ms)")


def raw_exchange(gw: GatewayProcess, data: bytes, *, wait: float = 5.0) -> bytes:
    with socket.create_connection(("127.0.0.1", gw.port), timeout=wait) as sock:
        try:
            sock.sendall(data)
        except (BrokenPipeError, ConnectionResetError):
            pass  # refused before it read everything: the answer is still there to read
        answer = b""
        try:
            while chunk := sock.recv(65536):
                answer += chunk
        except ConnectionResetError:
            pass
        return answer


def test_oversized_headers_get_431_and_the_connection_closes(gw: GatewayProcess) -> None:
    normal = raw_exchange(
        gw, b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Pad: " + b"a" * 8000 + b"\r\nConnection: close\r\n\r\n"
    )
    assert normal.startswith(b"HTTP/1.1 200")
    for size in (MAX_HEADER_BYTES + 1, 8 << 20):
        t0 = time.perf_counter()
        answer = raw_exchange(gw, b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * size + b"\r\n\r\n")
        assert answer.startswith(b"HTTP/1.1 431"), answer[:80]
        assert b'"code":"headers_too_large"' in answer
        print(f"IN-2 {size}-byte header refused with 431 in {(time.perf_counter() - t0) * 1000:.1f}ms")
    many = b"".join(b"X-H%d: v\r\n" % i for i in range(20000))
    assert raw_exchange(gw, b"GET /healthz HTTP/1.1\r\nHost: x\r\n" + many + b"\r\n").startswith(b"HTTP/1.1 431")
    # a request with a body in the same packet as its head is not mistaken for a large head
    body = message_with('"' + "y" * 200_000 + '"')
    head = b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nConnection: close\r\n"
    answer = raw_exchange(gw, head + b"Content-Length: %d\r\n\r\n" % len(body) + body)
    assert answer.startswith(b"HTTP/1.1 200")


def test_a_slow_body_times_out_with_408(gw: GatewayProcess, fake: FakeOpenAI) -> None:
    before = len(fake.requests)
    for framing in (b"Content-Length: 500\r\n", b"Transfer-Encoding: chunked\r\n"):
        start = b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n" + framing
        with socket.create_connection(("127.0.0.1", gw.port), timeout=5) as sock:
            t0 = time.monotonic()
            sock.sendall(start + b"\r\n" + (b"5\r\n" if b"chunked" in framing else b"") + b'{"mod')
            answer = b""
            while chunk := sock.recv(65536):  # the gateway closes the connection after its answer
                answer += chunk
            took = time.monotonic() - t0
        assert answer.startswith(b"HTTP/1.1 408"), answer[:80]
        assert 0.45 <= took < 0.5 + 1.0  # loop timers may fire a hair early
        print(f"IN-2 slow body ({framing.split(b':')[0].decode()}) answered 408 after {took:.2f}s")
    assert len(fake.requests) == before


def test_deep_but_allowed_nesting_is_served(gw: GatewayProcess) -> None:
    raw = message_with(nested(MAX_DEPTH - 3))
    resp = httpx.post(gw.url + "/v1/chat/completions", content=raw, timeout=10)
    assert resp.status_code == 200


def test_the_limits_config_keys_exist(tmp_path: Path) -> None:
    loaded = parse_config(b"upstreams: {d: {provider: dummy}}\nroutes: {r: {variants: {d: 1}}}\n", tmp_path / "t")
    server = loaded.config.server
    assert (server.body_timeout_s, server.max_in_flight, server.drain_s) == (30, 4096, 25)
