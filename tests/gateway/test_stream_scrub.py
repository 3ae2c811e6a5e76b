"""Secrets in streamed answers (security finding 10): a configured key an upstream echoes is masked in the SSE
stream the client receives, also when it arrives split across two reads. Before, only whole answers were
scrubbed: the stream relayed the key as it came."""

from __future__ import annotations

import socket
import threading
import time
from pathlib import Path

import httpx

from tests.harness import served, write_config

KEY = "sk-upstream-canary-0123456789abcdef"
EVENT = (
    b'data: {"id":"c1","object":"chat.completion.chunk","created":1,"model":"m","choices":[{"index":0,'
    b'"delta":{"role":"assistant","content":"your key is ' + KEY.encode() + b' ok"},"finish_reason":null}]}\n\n'
)
DONE = (
    b'data: {"id":"c1","object":"chat.completion.chunk","created":1,"model":"m","choices":[{"index":0,'
    b'"delta":{},"finish_reason":"stop"}]}\n\ndata: [DONE]\n\n'
)


def _split_upstream() -> tuple[socket.socket, threading.Thread]:
    """An upstream that streams one event in two writes, cut in the middle of the key."""
    listener = socket.create_server(("127.0.0.1", 0))

    def serve() -> None:
        conn, _ = listener.accept()
        with conn:
            conn.settimeout(5)
            head = b""
            while b"\r\n\r\n" not in head:
                head += conn.recv(65536)
            length = int(
                next(line.split(b":")[1] for line in head.split(b"\r\n") if line.lower().startswith(b"content-length"))
            )
            body = head.split(b"\r\n\r\n", 1)[1]
            while len(body) < length:
                body += conn.recv(65536)
            conn.sendall(b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\nconnection: close\r\n\r\n")
            cut = EVENT.index(KEY.encode()) + len(KEY) // 2
            conn.sendall(EVENT[:cut])
            time.sleep(0.2)
            conn.sendall(EVENT[cut:] + DONE)

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    return listener, thread


def test_a_key_split_across_reads_is_masked_in_the_stream(tmp_path: Path) -> None:
    listener, thread = _split_upstream()
    port = listener.getsockname()[1]
    text = f"""
server: {{state_dir: {tmp_path / "state"}, heartbeat_s: 0}}
store: sqlite:///{tmp_path / "t.db"}
upstreams:
  up: {{base_url: "http://127.0.0.1:{port}/v1", model: m, api_key_env: T_UP, retries: 0}}
routes:
  bot: {{variants: {{up: 100}}}}
"""
    try:
        with served(write_config(tmp_path, text), env={"T_UP": KEY}) as gw:
            body = {"model": "bot", "messages": [{"role": "user", "content": "hi"}], "stream": True}
            with httpx.stream("POST", gw.url + "/v1/chat/completions", json=body, timeout=10) as resp:
                assert resp.status_code == 200
                streamed = b"".join(resp.iter_bytes())
        assert KEY.encode() not in streamed and KEY[: len(KEY) // 2].encode() not in streamed
        assert b"your key is [redacted] ok" in streamed and streamed.endswith(b"data: [DONE]\n\n")
    finally:
        thread.join(5)
        listener.close()
