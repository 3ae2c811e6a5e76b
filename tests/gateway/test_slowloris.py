"""Slowloris (security finding 4): a request head must arrive within ``server.head_timeout_s``, whether the
socket stays silent or trickles a header byte at a time; other clients are served meanwhile.

Before: idle sockets, and sockets sending a header byte every 3 s, were still open after 50 s, and 300 of them
exhausted 256 file descriptors so that /healthz failed."""

from __future__ import annotations

import socket
import time
from pathlib import Path

import httpx

from tests.harness import GatewayProcess, write_config

CONFIG = """
server: {{state_dir: {state}, head_timeout_s: 1}}
store: sqlite:///{db}
upstreams:
  d: {{provider: dummy, model: d}}
routes:
  bot: {{variants: {{d: 100}}}}
"""


def _closed_after(sock: socket.socket, trickle: bytes, limit_s: float) -> float:
    """Seconds until the gateway closes ``sock``, sending one byte of ``trickle`` every 0.2 s meanwhile."""
    t0 = time.monotonic()
    sock.settimeout(0.2)
    sent = 0
    while time.monotonic() - t0 < limit_s:
        try:
            if sock.recv(1024) == b"":
                return time.monotonic() - t0
        except TimeoutError:
            pass
        except ConnectionResetError:
            return time.monotonic() - t0
        if sent < len(trickle):
            try:
                sock.send(trickle[sent : sent + 1])
            except (BrokenPipeError, ConnectionResetError):
                return time.monotonic() - t0
            sent += 1
    return float("inf")


def test_a_slow_or_silent_request_head_is_cut_at_the_deadline(tmp_path: Path) -> None:
    cfg = write_config(tmp_path, CONFIG.format(state=tmp_path / "state", db=tmp_path / "t.db"))
    with GatewayProcess(cfg) as gw:
        port = int(gw.url.rsplit(":", 1)[1])
        t0 = time.monotonic()
        assert httpx.get(gw.url + "/healthz", timeout=5).status_code == 200
        baseline = time.monotonic() - t0
        silent = socket.create_connection(("127.0.0.1", port))
        slow = socket.create_connection(("127.0.0.1", port))
        try:
            trickle = b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Pad: " + b"a" * 200
            assert _closed_after(slow, trickle, 6.0) < 1.0 + 2.0 + 10 * baseline
            assert _closed_after(silent, b"", 6.0) < 1.0 + 2.0 + 10 * baseline
        finally:
            silent.close()
            slow.close()
        # a normal client is not affected: its head arrives at once
        with httpx.Client(base_url=gw.url, timeout=5) as http:
            assert http.get("/healthz").status_code == 200
            time.sleep(1.5)  # an idle keep-alive connection between requests is uvicorn's keep-alive timer's
            assert http.get("/healthz").status_code == 200
