"""The Python baseline: a minimal Starlette + uvicorn (uvloop, httptools) proxy, one pooled aiohttp session.

It forwards the request body unchanged to `--upstream` and relays the answer (streamed as it arrives when
the upstream streams). No routing, capture or metrics: the least Python a proxy can run per request,
which is what Turnout's hot path is measured against.

Usage: python bench/passthrough.py --port 9002 --upstream http://127.0.0.1:9001
"""

from __future__ import annotations

import argparse
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import aiohttp
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.routing import Route

FORWARDED_HEADERS = ("content-type", "authorization")


def create_app(upstream: str) -> Starlette:
    session: aiohttp.ClientSession | None = None

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        nonlocal session
        session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0, ttl_dns_cache=None))
        yield
        await session.close()

    async def forward(request: Request) -> Response:
        assert session is not None
        body = await request.body()
        headers = {name: request.headers[name] for name in FORWARDED_HEADERS if name in request.headers}
        upstream_response = await session.post(upstream + request.url.path, data=body, headers=headers)
        content_type = upstream_response.headers.get("content-type", "application/json")
        if not content_type.startswith("text/event-stream"):
            content = await upstream_response.read()
            upstream_response.release()
            return Response(content, status_code=upstream_response.status, media_type=content_type)

        async def relay() -> AsyncIterator[bytes]:
            try:
                async for chunk in upstream_response.content.iter_any():
                    yield chunk
            finally:
                upstream_response.release()

        return StreamingResponse(relay(), status_code=upstream_response.status, media_type=content_type)

    async def healthz(request: Request) -> Response:
        return Response(b"ok")

    return Starlette(
        routes=[
            Route("/v1/chat/completions", forward, methods=["POST"]),
            Route("/v1/completions", forward, methods=["POST"]),
            Route("/v1/embeddings", forward, methods=["POST"]),
            Route("/healthz", healthz),
        ],
        lifespan=lifespan,
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=9002)
    parser.add_argument("--upstream", required=True, help="base URL without /v1, e.g. http://127.0.0.1:9001")
    args = parser.parse_args()
    uvicorn.run(
        create_app(args.upstream.rstrip("/")),
        host=args.host,
        port=args.port,
        loop="uvloop",
        http="httptools",
        access_log=False,
        log_level="warning",
    )


if __name__ == "__main__":
    main()
