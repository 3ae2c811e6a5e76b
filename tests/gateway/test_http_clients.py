"""The upstream contract on every HTTP client (``server.http_client``: httptools, the default, aiohttp and
pyqwest): streams relayed chunk by chunk with back-pressure, a client disconnect aborting the upstream within 1 s
(SS-2), keep-alive, and transport failures mapped to the same errors and retry outcomes. The rest of the suite
runs on the default."""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.fakes.fake_server import Recorded
from tests.fakes.openai_server import Behavior, FakeOpenAI
from tests.harness import Served, free_port, served, write_config

CONFIG = """
server: {{http_client: {client}}}
upstreams:
  main: {{base_url: "{url}", model: up-main, timeout_s: 1.5, retries: 2}}
  abort: {{base_url: "{url}", model: up-abort, timeout_s: 10}}
  flood: {{base_url: "{flood}", model: up-flood, timeout_s: 30}}
  dead: {{base_url: "http://127.0.0.1:{dead}/v1", model: x, retries: 1}}
  raw-keep: {{base_url: "{raw}", model: keep, retries: 0}}
  raw-close: {{base_url: "{raw}", model: close, retries: 0}}
  raw-eof: {{base_url: "{raw}", model: eof, retries: 0}}
routes:
  bot: {{variants: {{main: 100}}}}
  abort: {{variants: {{abort: 100}}}}
  flood: {{variants: {{flood: 100}}, capture: {{sample: 0}}}}
  gone: {{variants: {{dead: 100}}}}
  keep: {{variants: {{raw-keep: 100}}}}
  close: {{variants: {{raw-close: 100}}}}
  eof: {{variants: {{raw-eof: 100}}}}
"""
MESSAGES = [{"role": "user", "content": "hello there"}]
EVENT = b'data: {"id":"c","object":"chat.completion.chunk","choices":[{"index":0,"delta":{"content":"%s"}}]}\n\n'


class LoopbackUpstream:
    """A raw-socket upstream on its own event loop thread; ``handle`` serves one connection. Every connection is
    closed before the loop ends (a writer collected later warns "loop is closed")."""

    def __init__(self) -> None:
        self.held: set[asyncio.Task[None]] = set()
        self.loop = asyncio.new_event_loop()
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self.sock.getsockname()[1]}/v1"
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        asyncio.run_coroutine_threadsafe(self._start(), self.loop).result(5)

    async def _start(self) -> None:
        self.server = await asyncio.start_server(self._serve, sock=self.sock)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self.held.add(task)
        try:
            await self.handle(reader, writer)
        finally:
            self.held.discard(task)
            writer.close()

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        raise NotImplementedError

    async def _stop(self) -> None:
        self.server.close()
        tasks = list(self.held)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    def close(self) -> None:
        asyncio.run_coroutine_threadsafe(self._stop(), self.loop).result(10)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(5)
        self.loop.close()


class Flood(LoopbackUpstream):
    """An upstream that streams 16 KB events as fast as its socket takes them, counting the bytes it got out."""

    def __init__(self) -> None:
        self.sent = 0
        super().__init__()

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        head = await reader.readuntil(b"\r\n\r\n")
        fields = dict(line.lower().partition(b":")[::2] for line in head.split(b"\r\n"))
        await reader.readexactly(int(fields[b"content-length"]))
        writer.write(b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ntransfer-encoding: chunked\r\n\r\n")
        event = EVENT % (b"x" * 16_000)
        chunk = b"%x\r\n%s\r\n" % (len(event), event)
        try:
            for _ in range(20_000):  # 320 MB at most
                writer.write(chunk)
                await writer.drain()
                self.sent += len(chunk)
        except (ConnectionError, OSError):
            pass


class Raw(LoopbackUpstream):
    """An upstream on raw sockets, by the request's model: ``keep`` answers with a length and keeps the connection,
    ``close`` answers with a length and then closes it without saying so, ``eof`` answers without a length and
    ends the body by closing. It counts connections and keeps each request's accept-encoding."""

    ANSWER = (
        b'{"id":"r","object":"chat.completion","choices":[{"index":0,"message":{"role":"assistant","content":"raw"}}]}'
    )

    def __init__(self) -> None:
        self.connections = 0
        self.encodings: list[bytes | None] = []
        super().__init__()

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        try:
            while head := await reader.readuntil(b"\r\n\r\n"):
                fields = dict(line.lower().partition(b": ")[::2] for line in head.split(b"\r\n"))
                self.encodings.append(fields.get(b"accept-encoding"))
                model = json.loads(await reader.readexactly(int(fields[b"content-length"])))["model"]
                if model == "eof":
                    writer.write(b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\n\r\n" + self.ANSWER)
                    break
                writer.write(b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: %d\r\n\r\n%s" % (
                    len(self.ANSWER), self.ANSWER))  # fmt: skip
                await writer.drain()
                if model == "close":
                    break
        except (asyncio.IncompleteReadError, ConnectionError):
            pass


@pytest.fixture(scope="module")
def raw() -> Iterator[Raw]:
    raw = Raw()
    yield raw
    raw.close()


@pytest.fixture(scope="module")
def fake() -> Iterator[FakeOpenAI]:
    with FakeOpenAI() as fake:
        yield fake


@pytest.fixture(scope="module")
def flood() -> Iterator[Flood]:
    flood = Flood()
    yield flood
    flood.close()


@pytest.fixture(scope="module", params=["httptools", "pyqwest", "aiohttp"])
def kind(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture(scope="module")
def gw(
    kind: str, fake: FakeOpenAI, flood: Flood, raw: Raw, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Served]:
    directory: Path = tmp_path_factory.mktemp(kind)
    text = CONFIG.format(client=kind, url=fake.url, flood=flood.url, dead=free_port(), raw=raw.url)
    with served(write_config(directory, text)) as server:
        yield server


def seen(fake: FakeOpenAI, model: str) -> list[Recorded]:
    return [r for r in fake.requests if isinstance(r.body, dict) and r.body.get("model") == model]


def attempts(gw: Served, upstream: str, outcome: str) -> float:
    return gw.metric("turnout_upstream_attempts_total", upstream=upstream, outcome=outcome)


def test_the_configured_client_makes_the_call(gw: Served, kind: str, fake: FakeOpenAI) -> None:
    fake.set("up-main", Behavior())
    resp = httpx.post(gw.url + "/v1/chat/completions", json={"model": "bot", "messages": MESSAGES}, timeout=10)
    assert resp.status_code == 200 and resp.json()["choices"][0]["message"]["content"] == "echo: hello there"
    agent = seen(fake, "up-main")[-1].headers.get("user-agent", "")
    assert ("aiohttp" in agent.lower()) == (kind == "aiohttp"), agent


def test_a_stream_is_relayed_chunk_by_chunk(gw: Served, fake: FakeOpenAI) -> None:
    fake.set("up-main", Behavior(chunks=4, chunk_delay_s=0.3))
    body = {"model": "bot", "messages": MESSAGES, "stream": True}
    arrived = []
    with httpx.stream("POST", gw.url + "/v1/chat/completions", json=body, timeout=10) as resp:
        for line in resp.iter_lines():
            if line.startswith("data: {") and '"content"' in line:
                arrived.append(time.monotonic())
    assert len(arrived) == 4
    assert arrived[-1] - arrived[0] > 0.6  # each piece went out when it came in, not all at the end


async def test_a_slow_reader_holds_the_upstream_back(gw: Served, flood: Flood) -> None:
    body = {"model": "flood", "messages": MESSAGES, "stream": True}
    async with httpx.AsyncClient(timeout=30) as client:
        async with client.stream("POST", gw.url + "/v1/chat/completions", json=body) as resp:
            reading = resp.aiter_raw()
            start, t0 = flood.sent, time.monotonic()
            async for _ in reading:  # the baseline: what the upstream gets out while the client reads
                if time.monotonic() - t0 > 0.5:
                    break
            read_rate = (flood.sent - start) / (time.monotonic() - t0)
            await asyncio.sleep(1.5)  # the client stops reading: every buffer on the way fills up
            stalled = flood.sent
            await asyncio.sleep(1.0)
            grown = flood.sent - stalled
    assert read_rate > 2_000_000  # the baseline moved data
    assert grown < 0.1 * read_rate, (grown, read_rate)  # then the upstream was held back, not read into memory


@pytest.mark.parametrize("phase", ["plain", "before-first-token", "mid-stream"])
async def test_client_disconnect_aborts_the_upstream_within_1s(gw: Served, fake: FakeOpenAI, phase: str) -> None:
    behavior = Behavior(chunks=50, chunk_delay_s=0.2) if phase == "mid-stream" else Behavior(delay_s=5)
    fake.set("up-abort", behavior)
    before = len(seen(fake, "up-abort"))
    body = {"model": "abort", "messages": MESSAGES, "stream": phase != "plain"}
    async with httpx.AsyncClient(timeout=10) as client:
        if phase == "mid-stream":
            async with client.stream("POST", gw.url + "/v1/chat/completions", json=body) as resp:
                async for line in resp.aiter_lines():
                    if line.startswith("data:"):
                        break
        else:  # the client gives up while the gateway waits for the upstream's answer (its head, for a stream)
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(0.3):
                    await client.post(gw.url + "/v1/chat/completions", json=body)
    closed_at = time.monotonic()
    (call,) = seen(fake, "up-abort")[before:]  # recorded before the fake's handler ran
    await asyncio.to_thread(call.wait_done, 3.0)
    assert call.aborted and call.finished_at is not None
    assert call.finished_at - closed_at < 1.0


def test_failures_map_to_the_same_errors_and_retry_outcomes(gw: Served, fake: FakeOpenAI) -> None:
    url = gw.url + "/v1/chat/completions"
    refused = httpx.post(url, json={"model": "gone", "messages": MESSAGES}, timeout=10)
    assert refused.status_code == 502 and refused.json()["error"]["code"] == "upstream_unreachable"
    assert attempts(gw, "dead", "connect_error") == 2  # retried once, like every connect error

    fake.set("up-main", Behavior(cut_after=0))  # the connection drops before an answer: a reset
    reset = httpx.post(url, json={"model": "bot", "messages": MESSAGES}, timeout=10)
    assert reset.status_code == 502 and reset.json()["error"]["code"] == "upstream_failed"
    assert attempts(gw, "main", "reset") == 3

    fake.set("up-main", Behavior(hang=True))
    started = time.monotonic()
    timed_out = httpx.post(url, json={"model": "bot", "messages": MESSAGES}, timeout=10)
    assert timed_out.status_code == 504 and "timed out after 1.5s" in timed_out.json()["error"]["message"]
    assert attempts(gw, "main", "timeout") == 1 and time.monotonic() - started < 3.5  # a timeout is not retried

    fake.set("up-main", Behavior(chunks=6, chunk_delay_s=0.05, cut_after=2))
    with httpx.stream("POST", url, json={"model": "bot", "messages": MESSAGES, "stream": True}, timeout=10) as resp:
        events = [line for line in resp.iter_lines() if line.startswith("data:")]
    assert "[DONE]" not in "".join(events) and json.loads(events[-1][5:])["error"]["code"] == "stream_broken"


def test_connections_are_kept_alive_and_reopened_when_the_upstream_closed_them(gw: Served, raw: Raw) -> None:
    url = gw.url + "/v1/chat/completions"
    with httpx.Client(timeout=10) as http:
        post = lambda model: http.post(url, json={"model": model, "messages": MESSAGES})  # noqa: E731
        post("keep")
        before = raw.connections
        answers = [post("keep") for _ in range(5)]
        assert raw.connections == before  # one pooled connection carried them all
        closed = []
        for _ in range(5):  # the upstream closes each connection after its answer, without a word
            closed.append(post("close"))
            time.sleep(0.05)  # its close reaches the gateway before the next call
        eof = post("eof")  # no length: the body ends where the connection does
    assert [a.status_code for a in answers + closed] == [200] * 10, [a.text for a in answers + closed]
    assert all(a.json()["choices"][0]["message"]["content"] == "raw" for a in answers + closed)
    assert eof.status_code == 200 and eof.json()["id"] == "r"


def test_no_client_asks_for_a_compressed_answer(gw: Served, raw: Raw) -> None:
    """Bytes are relayed as the upstream sent them, with the gateway's own headers: a gzipped answer would reach
    the client undeclared (aiohttp asks for gzip unless told otherwise)."""
    raw.encodings.clear()
    resp = httpx.post(gw.url + "/v1/chat/completions", json={"model": "keep", "messages": MESSAGES}, timeout=10)
    assert resp.status_code == 200
    assert raw.encodings and all(e in (None, b"identity") for e in raw.encodings), raw.encodings
