"""Security finding 3 (the rest): endpoints that never need ``server.max_body_mb`` (32 MB) have their own limits,
``server.body_limits_kb`` (feedback 64 KB, /admin/* 256 KB, any other path 64 KB). Over a real socket: a body
declared one byte over its limit gets the 413 (OpenAI's error shape, connection closed) before any of it is sent,
one counted over it (chunked, never finished) as soon as it passes, and a body of exactly the limit is served.
Before, each of these paths read up to 32 MB (feedback counted to 64 KB itself; the review API read the whole body
before looking at its size)."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import orjson
import pytest

from gateway.config import ConfigError, load_config
from tests.harness import Served, served, write_config

ADMIN = "admin-key-for-body-limits"
CONFIG = """
server: {{state_dir: {state}}}
store: sqlite:///{db}
auth: {{admin_key_env: BODY_LIMITS_ADMIN}}
upstreams:
  d: {{provider: dummy, model: d}}
routes:
  bot: {{variants: {{d: 100}}}}
"""
KB = 1024
AUTH = f"Authorization: Bearer {ADMIN}\r\n"
FORM = "Content-Type: application/x-www-form-urlencoded\r\n"


def _json(limit: int, value: dict[str, str]) -> bytes:
    raw = orjson.dumps(value)
    return raw + b" " * (limit - len(raw))  # valid JSON of exactly ``limit`` bytes


def _form(limit: int) -> bytes:
    raw = f"key={ADMIN}&reviewer=ann&pad=".encode()
    return raw + b"x" * (limit - len(raw))


# (method, path, extra headers, limit, a body of exactly the limit, the status that body gets)
CASES = [
    ("POST", "/v1/feedback", "", 64 * KB, _json(64 * KB, {"request_id": "x"}), 202),
    ("POST", "/admin/reload", AUTH, 256 * KB, _json(256 * KB, {}), 200),
    ("POST", "/admin/review/login", FORM, 256 * KB, _form(256 * KB), 303),
    ("GET", "/healthz", "", 64 * KB, b" " * (64 * KB), 200),
]
IDS = [case[1] for case in CASES]


@pytest.fixture(scope="module")
def gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    tmp = tmp_path_factory.mktemp("body_limits")
    cfg = write_config(tmp, CONFIG.format(state=tmp / "state", db=tmp / "t.db"))
    with pytest.MonkeyPatch.context() as env:
        env.setenv("BODY_LIMITS_ADMIN", ADMIN)  # /admin/reload reads the environment again
        with served(cfg) as gw:
            yield gw


def _exchange(url: str, head: str, body_parts: list[bytes]) -> tuple[int, dict[str, str], bytes, bool]:
    """Send a request head and ``body_parts`` on one socket; read the answer. Returns the status, the headers,
    the body, and whether the server closed the connection after its answer."""
    parts = urlsplit(url)
    with socket.create_connection((parts.hostname, parts.port), timeout=10) as sock:
        sock.sendall(head.encode())
        for part in body_parts:
            sock.sendall(part)
        data = b""
        while b"\r\n\r\n" not in data:
            chunk = sock.recv(65536)
            assert chunk, f"closed without an answer: {data!r}"
            data += chunk
        top, _, rest = data.partition(b"\r\n\r\n")
        lines = top.decode("latin-1").split("\r\n")
        headers = {k.strip().lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:])}
        length = int(headers.get("content-length", "0"))
        while len(rest) < length:
            chunk = sock.recv(65536)
            assert chunk, "closed mid-answer"
            rest += chunk
        try:
            closed = sock.recv(1) == b""  # the server's close, well within the socket's 10 s timeout
        except TimeoutError:
            closed = False
    return int(lines[0].split()[1]), headers, rest[:length], closed


def _head(method: str, path: str, extra: str, framing: str) -> str:
    return f"{method} {path} HTTP/1.1\r\nHost: gateway\r\n{extra}{framing}\r\n"


def _assert_413(status: int, headers: dict[str, str], body: bytes, closed: bool, limit: int) -> None:
    assert status == 413, body
    error = orjson.loads(body)["error"]
    assert error["type"] == "invalid_request_error" and error["code"] == "request_too_large"
    assert f"{limit} byte limit (server.body_limits_kb." in error["message"]
    assert headers.get("connection") == "close" and closed


@pytest.mark.parametrize(("method", "path", "extra", "limit", "body", "ok"), CASES, ids=IDS)
def test_declared_over_limit_is_refused_before_the_body_is_sent(
    gateway: Served, method: str, path: str, extra: str, limit: int, body: bytes, ok: int
) -> None:
    head = _head(method, path, extra, f"Content-Length: {limit + 1}\r\n")
    _assert_413(*_exchange(gateway.url, head, []), limit)  # not one byte of the body was sent


@pytest.mark.parametrize(("method", "path", "extra", "limit", "body", "ok"), CASES, ids=IDS)
def test_counted_over_limit_is_refused_before_the_body_ends(
    gateway: Served, method: str, path: str, extra: str, limit: int, body: bytes, ok: int
) -> None:
    over = body + b" "
    chunks = [over[i : i + 16 * KB] for i in range(0, len(over), 16 * KB)]
    framed = [b"%x\r\n%s\r\n" % (len(c), c) for c in chunks]  # and never the last, empty chunk
    head = _head(method, path, extra, "Transfer-Encoding: chunked\r\n")
    _assert_413(*_exchange(gateway.url, head, framed), limit)


@pytest.mark.parametrize(("method", "path", "extra", "limit", "body", "ok"), CASES, ids=IDS)
def test_a_body_of_exactly_the_limit_is_served(
    gateway: Served, method: str, path: str, extra: str, limit: int, body: bytes, ok: int
) -> None:
    assert len(body) == limit
    head = _head(method, path, extra, f"Content-Length: {limit}\r\nConnection: close\r\n")
    status, _, answer, _ = _exchange(gateway.url, head, [body])
    assert status == ok, answer
    chunks = [body[i : i + 16 * KB] for i in range(0, len(body), 16 * KB)]
    framed = [b"%x\r\n%s\r\n" % (len(c), c) for c in chunks] + [b"0\r\n\r\n"]
    head = _head(method, path, extra, "Transfer-Encoding: chunked\r\nConnection: close\r\n")
    status, _, answer, _ = _exchange(gateway.url, head, framed)
    assert status == ok, answer


def test_the_openai_endpoints_keep_the_large_limit(gateway: Served) -> None:
    text = "word " * (400 * KB)  # 2 MB: far past every small limit, within server.max_body_mb (32)
    with httpx.Client(base_url=gateway.url, timeout=30) as http:
        chat = http.post("/v1/chat/completions", json={"model": "bot", "messages": [{"role": "user", "content": text}]})
        assert chat.status_code == 200, chat.text
        embed = http.post("/v1/embeddings", json={"model": "bot", "input": [text]})
        assert embed.status_code == 200, embed.text


def test_limits_are_configured_and_checked(tmp_path: Path) -> None:
    base = CONFIG.format(state=tmp_path / "state", db=tmp_path / "t.db")
    cfg = write_config(tmp_path, base.replace("server: {", "server: {body_limits_kb: {feedback: 1, admin: 2}, "))
    limits = load_config(cfg, environ={"BODY_LIMITS_ADMIN": ADMIN}).config.server.body_limits_kb
    assert limits.for_path("/v1/feedback") == (1024, "server.body_limits_kb.feedback")
    assert limits.for_path("/admin/review/items/1") == (2048, "server.body_limits_kb.admin")
    assert limits.for_path("/metrics") == (64 * KB, "server.body_limits_kb.other")
    for bad, key in (("{feedback: 0}", "feedback"), ("{admin: big}", "admin"), ("{feedbak: 1}", "feedbak")):
        cfg = write_config(tmp_path, base.replace("server: {", f"server: {{body_limits_kb: {bad}, "))
        with pytest.raises(ConfigError) as err:
            load_config(cfg, environ={"BODY_LIMITS_ADMIN": ADMIN})
        assert f"server.body_limits_kb.{key}" in str(err.value)
