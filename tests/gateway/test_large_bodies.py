"""Security finding 3 (the rest): at most ``server.max_large_bodies`` request bodies over 1 MB are read and
parsed at once per process; one more gets a fast 503 with Retry-After (declared by Content-Length or counted
while a chunked body arrives), small requests go on, and a slot is free again once its body was parsed."""

from __future__ import annotations

import select
import socket
import time
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import orjson

from tests.harness import served, write_config

CONFIG = """
server: {{state_dir: {state}, max_large_bodies: 1}}
upstreams:
  d: {{provider: dummy, model: d}}
routes:
  bot: {{variants: {{d: 100}}}}
"""
SMALL = {"model": "bot", "messages": [{"role": "user", "content": "hi"}]}
LARGE = orjson.dumps({"model": "bot", "messages": [{"role": "user", "content": "x" * 2_000_000}]})


def _chunks() -> Iterator[bytes]:
    for start in range(0, len(LARGE), 64 * 1024):
        yield LARGE[start : start + 64 * 1024]


def _hold(address: tuple[str, int]) -> socket.socket:
    """A large body still arriving (its first KB sent), which holds a slot while it is read."""
    held = socket.create_connection(address, timeout=10)
    head = f"POST /v1/chat/completions HTTP/1.1\r\nhost: x\r\ncontent-length: {len(LARGE)}\r\n\r\n"
    held.sendall(head.encode() + LARGE[:1000])
    return held


def test_one_large_body_too_many_gets_a_fast_503(tmp_path: Path) -> None:
    config = write_config(tmp_path, CONFIG.format(state=tmp_path / "state"))
    with served(config) as gw, httpx.Client(base_url=gw.url, timeout=10) as http:
        assert http.post("/v1/chat/completions", content=LARGE).status_code == 200  # alone: served
        url = urlsplit(gw.url)
        held = _hold((str(url.hostname), int(url.port or 80)))
        try:
            deadline = time.monotonic() + 10
            while (refused := http.post("/v1/chat/completions", content=LARGE)).status_code != 503:
                assert refused.status_code == 200 and time.monotonic() < deadline
                if select.select([held], [], [], 0)[0]:  # our post took the slot first and held got the 503
                    held.close()
                    held = _hold((str(url.hostname), int(url.port or 80)))
                time.sleep(0.05)
            assert refused.headers["retry-after"] == "1"
            assert refused.json()["error"]["code"] == "overloaded"
            assert "server.max_large_bodies" in refused.json()["error"]["message"]
            chunked = http.post("/v1/chat/completions", content=_chunks())  # no Content-Length: counted
            assert chunked.status_code == 503
            assert http.post("/v1/chat/completions", json=SMALL).status_code == 200
            held.sendall(LARGE[1000:])
            answer = b""
            while b"\r\n\r\n" not in answer:
                answer += held.recv(65536)
            assert answer.startswith(b"HTTP/1.1 200")
        finally:
            held.close()
        assert http.post("/v1/chat/completions", content=LARGE).status_code == 200  # the slot was given back
        assert http.post("/v1/chat/completions", content=_chunks()).status_code == 200
