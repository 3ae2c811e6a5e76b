"""A fast mock OpenAI upstream for the benchmark: raw asyncio, HTTP/1.1 keep-alive, tiny fixed answers.

`POST /v1/chat/completions` answers a fixed `chat.completion` (`POST /v1/responses` a fixed `response`), each with
an id of its own (random, as a real upstream's: the gateway stores and indexes it); with
`"stream": true` in the body it answers `--events` SSE chunks (the first at once, the rest `--event-delay-ms`
apart), a usage chunk when the body asks for `include_usage`, then `data: [DONE]`. `GET /stats` answers the
number of POSTs answered so far (`{"posts": N}`, so a harness can count shadow calls); any other request gets a
small 200. The mock costs so little CPU that whatever sits in front of it is what a benchmark measures.

Usage: python bench/mock_upstream.py --port 9001 --events 32 --event-delay-ms 1
"""

from __future__ import annotations

import argparse
import asyncio
import os
from typing import cast

try:
    import uvloop
except ImportError:  # the mock also runs on a bare asyncio loop
    uvloop = None

ID = b"0" * 24  # each answer's id: 24 random hex digits in its place
COMPLETION = (
    b'{"id":"chatcmpl-%s","object":"chat.completion","created":1767225600,"model":"mock-model",'
    b'"choices":[{"index":0,"message":{"role":"assistant","content":"Hello! How can I help you today?"},'
    b'"finish_reason":"stop"}],"usage":{"prompt_tokens":9,"completion_tokens":9,"total_tokens":18}}'
)
RESPONSE = (  # the Responses API's answer to POST /v1/responses
    b'{"id":"resp_%s","object":"response","created_at":1767225600,"status":"completed","model":"mock-model",'
    b'"output":[{"type":"message","id":"msg_bench","status":"completed","role":"assistant","content":[{"type":'
    b'"output_text","text":"Hello! How can I help you today?","annotations":[]}]}],"usage":{"input_tokens":9,'
    b'"output_tokens":9,"total_tokens":18}}'
)


def _answer(body: bytes) -> bytes:
    """The whole HTTP answer, with the ``%s`` of its id left to fill (24 hex digits: the length is known)."""
    return b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: %d\r\n\r\n" % len(body % ID) + body


RESPONSE_RESPONSE = _answer(RESPONSE)
COMPLETION_RESPONSE = _answer(COMPLETION)
OTHER_BODY = b'{"object":"list","data":[{"id":"mock-model","object":"model","owned_by":"bench"}]}'
OTHER_RESPONSE = (
    b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: %d\r\n\r\n" % len(OTHER_BODY) + OTHER_BODY
)
STATS = {"posts": 0}
SSE_HEAD = (
    b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ncache-control: no-cache\r\n"
    b"transfer-encoding: chunked\r\n\r\n"
)
_CHUNK_PREFIX = b'{"id":"chatcmpl-%s","object":"chat.completion.chunk","created":1767225600,"model":"mock-model",'


def _chunked(payload: bytes) -> bytes:
    return b"%x\r\n%s\r\n" % (len(payload), payload)


def _event(json_body: bytes) -> bytes:
    return _chunked(b"data: " + json_body + b"\n\n")


def _events(answer_id: bytes) -> tuple[bytes, bytes, bytes, bytes]:
    """A stream's first, token, last and usage events, all carrying its id."""
    prefix = _CHUNK_PREFIX % answer_id
    return (
        _event(prefix + b'"choices":[{"index":0,"delta":{"role":"assistant","content":""}}]}'),
        _event(prefix + b'"choices":[{"index":0,"delta":{"content":"tok "}}]}'),
        _event(prefix + b'"choices":[{"index":0,"delta":{},"finish_reason":"stop"}]}'),
        _event(prefix + b'"choices":[],"usage":{"prompt_tokens":9,"completion_tokens":30,"total_tokens":39}}'),
    )


def _new_id() -> bytes:
    return os.urandom(12).hex().encode()


DONE_EVENT = _event(b"[DONE]") + b"0\r\n\r\n"


class MockUpstream(asyncio.Protocol):
    """One keep-alive connection; requests are answered in order (a stream holds later ones back)."""

    def __init__(self, events: int, delay_s: float) -> None:
        self.events = events
        self.delay_s = delay_s
        self.buffer = bytearray()
        self.transport: asyncio.Transport | None = None
        self.streaming = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's transports do not subclass it

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        if not self.streaming:
            self._answer_buffered()

    def _answer_buffered(self) -> None:
        transport = self.transport
        assert transport is not None
        while True:
            end = self.buffer.find(b"\r\n\r\n")
            if end < 0:
                return
            head = bytes(self.buffer[:end]).lower()
            length = 0
            at = head.find(b"content-length:")
            if at >= 0:
                line_end = head.find(b"\r\n", at)
                length = int(head[at + 15 : line_end if line_end >= 0 else None])
            total = end + 4 + length
            if len(self.buffer) < total:
                return
            body = bytes(self.buffer[end + 4 : total])
            del self.buffer[:total]
            if head.startswith(b"get /stats"):
                stats = b'{"posts":%d}' % STATS["posts"]
                transport.write(b"HTTP/1.1 200 OK\r\ncontent-length: %d\r\n\r\n%s" % (len(stats), stats))
            elif not head.startswith(b"post"):
                transport.write(OTHER_RESPONSE)
            elif b'"stream":true' in body.replace(b" ", b""):
                STATS["posts"] += 1
                self.streaming = True
                asyncio.get_running_loop().create_task(self._stream(b"include_usage" in body))
                return
            else:
                STATS["posts"] += 1
                answer = RESPONSE_RESPONSE if head.startswith(b"post /v1/responses") else COMPLETION_RESPONSE
                transport.write(answer % _new_id())

    async def _stream(self, usage: bool) -> None:
        transport = self.transport
        assert transport is not None
        first, token, last, usage_event = _events(_new_id())
        transport.write(SSE_HEAD + first)
        for i in range(1, self.events):
            if self.delay_s:
                await asyncio.sleep(self.delay_s)
            if transport.is_closing():
                return
            transport.write(last if i == self.events - 1 else token)
        transport.write((usage_event if usage else b"") + DONE_EVENT)
        self.streaming = False
        self._answer_buffered()

    def connection_lost(self, exc: Exception | None) -> None:
        self.transport = None


async def serve(host: str, port: int, events: int, delay_s: float) -> None:
    loop = asyncio.get_running_loop()
    server = await loop.create_server(
        lambda: MockUpstream(events, delay_s), host, port, reuse_address=True, backlog=1024
    )
    async with server:
        await server.serve_forever()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=9001)
    parser.add_argument("--events", type=int, default=32, help="SSE events per streamed answer (>= 2)")
    parser.add_argument("--event-delay-ms", type=float, default=1.0, help="spacing between SSE events")
    args = parser.parse_args()
    if args.events < 2:
        parser.error("--events must be at least 2")
    run = uvloop.run if uvloop is not None else asyncio.run
    run(serve(args.host, args.port, args.events, args.event_delay_ms / 1000))


if __name__ == "__main__":
    main()
