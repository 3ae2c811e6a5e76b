"""Client and admin keys (SE-1, SE-4), secret canaries (SE-2), header and path tricks (IN-5)."""

from __future__ import annotations

import logging
import socket
from collections.abc import Iterator
from pathlib import Path

import httpx
import openai
import pytest
from starlette.routing import Route

from gateway.app import create_app
from gateway.config import load_config
from tests.fakes.openai_server import Behavior, FakeOpenAI
from tests.harness import Served, served, write_config

CLIENT_KEY = "ck-canary-1111"
ADMIN_KEY = "ak-canary-2222"
UPSTREAM_KEY = "uk-canary-3333"
CANARIES = (CLIENT_KEY, ADMIN_KEY, UPSTREAM_KEY)
CONFIG = """
auth: {{client_keys_env: T_CLIENT_KEYS, admin_key_env: T_ADMIN_KEY}}
upstreams:
  main: {{base_url: "{url}", model: up, api_key_env: T_UP_KEY}}
  other: {{provider: dummy}}
routes:
  bot: {{variants: {{main: 100, other: 0}}}}
"""
MESSAGES = [{"role": "user", "content": "hi"}]


@pytest.fixture
def gw(tmp_path: Path, fake_openai: FakeOpenAI, monkeypatch: pytest.MonkeyPatch) -> Iterator[Served]:
    monkeypatch.setenv("T_CLIENT_KEYS", f"other-key,{CLIENT_KEY}")
    monkeypatch.setenv("T_ADMIN_KEY", ADMIN_KEY)
    monkeypatch.setenv("T_UP_KEY", UPSTREAM_KEY)
    with served(write_config(tmp_path, CONFIG.format(url=fake_openai.url))) as server:
        yield server


def bearer(key: str) -> dict[str, str]:
    return {"authorization": f"Bearer {key}"}


@pytest.mark.parametrize(
    "headers",
    [
        {},
        {"authorization": "Bearer"},
        {"authorization": CLIENT_KEY},
        {"authorization": f"Basic {CLIENT_KEY}"},
        bearer("wrong"),
        bearer(CLIENT_KEY + "x"),
        bearer(CLIENT_KEY[:-1]),
    ],
)
def test_missing_malformed_and_wrong_keys_get_401(gw: Served, fake_openai: FakeOpenAI, headers: dict[str, str]) -> None:
    resp = httpx.post(gw.url + "/v1/chat/completions", json={"model": "bot", "messages": MESSAGES}, headers=headers)
    assert resp.status_code == 401
    assert resp.json()["error"]["type"] == "authentication_error"
    assert httpx.get(gw.url + "/v1/models", headers=headers).status_code == 401
    assert fake_openai.requests == []


def test_client_and_admin_keys_are_accepted_everywhere_a_client_key_is(gw: Served) -> None:
    for key in (CLIENT_KEY, "other-key", ADMIN_KEY):
        client = openai.OpenAI(base_url=gw.url + "/v1", api_key=key, max_retries=0)
        assert client.chat.completions.create(model="bot", messages=MESSAGES).choices
        assert [m.id for m in client.models.list().data] == ["bot"]


def test_forced_variant_is_honoured_for_the_admin_key_only(gw: Served) -> None:
    url = gw.url + "/v1/chat/completions"
    body = {"model": "bot", "messages": MESSAGES}
    as_client = httpx.post(url, json=body, headers={**bearer(CLIENT_KEY), "x-turnout-variant": "other"})
    assert as_client.headers["x-turnout-variant"] == "main"
    as_admin = httpx.post(url, json=body, headers={**bearer(ADMIN_KEY), "x-turnout-variant": "other"})
    assert as_admin.headers["x-turnout-variant"] == "other"
    unknown = httpx.post(url, json=body, headers={**bearer(ADMIN_KEY), "x-turnout-variant": "nope"})
    assert unknown.status_code == 400


def test_every_admin_route_requires_the_admin_key(gw: Served, tmp_path: Path) -> None:
    app = create_app(load_config(gw.config))
    # the review page has its own login and session (tests/e2e/test_review_page.py checks its every route)
    admin_routes = [
        r
        for r in app.routes
        if isinstance(r, Route) and r.path.startswith("/admin") and not r.path.startswith("/admin/review")
    ]
    assert {r.path for r in admin_routes} >= {"/admin/config", "/admin/reload"}
    for route in admin_routes:
        for method in route.methods or ():
            if method == "HEAD":
                continue
            for headers in ({}, bearer(CLIENT_KEY), bearer("wrong")):
                resp = httpx.request(method, gw.url + route.path, headers=headers)
                assert resp.status_code == 401, (method, route.path, headers)
            assert httpx.request(method, gw.url + route.path, headers=bearer(ADMIN_KEY)).status_code == 200


def test_admin_config_shows_env_names_never_values(gw: Served) -> None:
    resp = httpx.get(gw.url + "/admin/config", headers=bearer(ADMIN_KEY))
    assert resp.status_code == 200
    data = resp.json()
    assert data["config"]["auth"]["client_keys_env"] == "T_CLIENT_KEYS"
    assert data["config"]["upstreams"]["main"]["api_key_env"] == "T_UP_KEY"
    assert not any(c in resp.text for c in CANARIES)


def test_no_client_keys_means_open_and_admin_closed(tmp_path: Path, fake_openai: FakeOpenAI) -> None:
    text = (
        CONFIG.format(url=fake_openai.url)
        .replace("auth: {client_keys_env: T_CLIENT_KEYS, admin_key_env: T_ADMIN_KEY}", "")
        .replace(", api_key_env: T_UP_KEY", "")
    )
    with served(write_config(tmp_path, text)) as gw:
        resp = httpx.post(
            gw.url + "/v1/chat/completions",
            json={"model": "bot", "messages": MESSAGES},
            headers={"authorization": "whatever"},
        )
        assert resp.status_code == 200
        assert httpx.get(gw.url + "/admin/config").status_code == 401
        assert httpx.get(gw.url + "/admin/config", headers=bearer("anything")).status_code == 401


def test_secret_canaries_appear_nowhere(gw: Served, fake_openai: FakeOpenAI, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    url = gw.url + "/v1/chat/completions"
    body = {"model": "bot", "messages": MESSAGES}
    seen = []
    fake_openai.set("up", Behavior(statuses=[401, 500, 400]))
    for _ in range(3):
        seen.append(httpx.post(url, json=body, headers=bearer(CLIENT_KEY)).text)
    fake_openai.set("up", Behavior())
    seen.append(httpx.post(url, json={**body, "stream": True}, headers=bearer(CLIENT_KEY)).text)
    seen.append(httpx.post(url, json=body, headers=bearer("bad-" + CLIENT_KEY)).text)
    seen.append(httpx.post(url, json={"model": CLIENT_KEY, "messages": MESSAGES}, headers=bearer(ADMIN_KEY)).text)
    seen.append(httpx.get(gw.url + "/admin/config", headers=bearer(ADMIN_KEY)).text)
    seen.append(httpx.get(gw.url + "/metrics").text)
    seen.append(gw.metrics())
    everything = "\n".join(seen) + caplog.text
    for canary in CANARIES:
        assert canary not in everything.replace(f"unknown model '{CLIENT_KEY}'", "")
    for rec in fake_openai.requests:  # the upstream sees its own key only, never the client's
        assert CLIENT_KEY not in str(rec.headers) and ADMIN_KEY not in str(rec.headers)


def test_crlf_in_echoed_values_and_path_tricks(gw: Served) -> None:
    port = int(gw.url.rsplit(":", 1)[1])

    def raw(request: bytes) -> bytes:
        with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
            sock.sendall(request)
            return sock.recv(65536)

    answer = raw(b"GET /v1/..%2fadmin/config HTTP/1.1\r\nhost: x\r\n\r\n")
    assert not answer.startswith(b"HTTP/1.1 200")
    for path in (b"/v1/../admin/config", b"/v1/%2e%2e/admin/config", b"/admin/./config", b"//admin/config"):
        answer = raw(b"GET " + path + b" HTTP/1.1\r\nhost: x\r\n\r\n")
        assert answer.split(b"\r\n", 1)[0] in (b"HTTP/1.1 404 Not Found", b"HTTP/1.1 401 Unauthorized"), path
    for host in (b"localhost", b"127.0.0.1:1", b"admin.internal", b"evil\r\nx-injected: 1"):
        answer = raw(b"GET /admin/config HTTP/1.1\r\nhost: " + host + b"\r\n\r\n")
        assert not answer.startswith(b"HTTP/1.1 200")
        assert b"\r\nx-injected" not in answer
    body = b'{"model": "bot", "messages": [{"role": "user", "content": "x"}]}'
    answer = raw(
        b"POST /v1/chat/completions HTTP/1.1\r\nhost: x\r\nauthorization: Bearer "
        + CLIENT_KEY.encode()
        + b"\r\nx-turnout-user: a%0d%0ax-evil: 1\r\ncontent-length: "
        + str(len(body)).encode()
        + b"\r\n\r\n"
        + body
    )
    assert answer.startswith(b"HTTP/1.1 200") and b"\r\nx-evil" not in answer
