"""Client side of the capture end-to-end tests: send chat requests (plain or streamed), note what the
client saw complete, and read the store back through ``turnout export``.

Usage::

    async with httpx.AsyncClient() as client:
        seen = await ask(client, gw.url, "bot", "q1", stream=True)   # None unless the answer completed
    rows = export(config_path, "--format", "raw")
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from tests.harness import ROOT


@dataclass
class Seen:
    """One request whose answer the client received completely."""

    request_id: str
    route: str
    stream: bool
    opted_out: bool
    messages: list[dict[str, Any]]
    status: int
    content: str | None
    response_id: str | None
    usage: dict[str, Any] | None = field(default=None)


async def ask(
    client: httpx.AsyncClient, url: str, route: str, text: str, *, stream: bool, opted_out: bool = False
) -> Seen | None:
    """One chat completion; returns what the client saw, or None when the answer did not complete."""
    messages = [{"role": "user", "content": text}]
    body: dict[str, Any] = {"model": route, "messages": messages, "stream": stream}
    headers = {"x-turnout-no-capture": "1"} if opted_out else {}
    try:
        if not stream:
            r = await client.post(url + "/v1/chat/completions", json=body, headers=headers)
            data = r.json()
            ok = r.status_code == 200
            return Seen(
                r.headers["x-turnout-request-id"],
                route,
                False,
                opted_out,
                messages,
                r.status_code,
                data["choices"][0]["message"]["content"] if ok else None,
                data.get("id") if ok else None,
                data.get("usage") if ok else None,
            )
        async with client.stream("POST", url + "/v1/chat/completions", json=body, headers=headers) as r:
            parts: list[str] = []
            response_id = None
            done = False
            async for line in r.aiter_lines():
                if line == "data: [DONE]":
                    done = True
                elif line.startswith("data: "):
                    chunk = json.loads(line[6:])
                    response_id = response_id or chunk.get("id")
                    for choice in chunk.get("choices") or []:
                        parts.append((choice.get("delta") or {}).get("content") or "")
            if not done:
                return None
            return Seen(r.headers["x-turnout-request-id"], route, True, opted_out, messages, 200, "".join(parts),
                        response_id)  # fmt: skip
    except (httpx.HTTPError, KeyError, ValueError):
        return None


def export(config: Path, *args: str, env: dict[str, str] | None = None) -> list[dict[str, Any]]:
    """``turnout export -c config args...`` in a subprocess; the JSON lines it wrote."""
    done = subprocess.run(
        [sys.executable, "-m", "gateway", "export", "-c", str(config), *args],
        env={**os.environ, "PYTHONPATH": str(ROOT), **(env or {})},
        cwd=config.parent,
        capture_output=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr.decode()
    return [json.loads(line) for line in done.stdout.splitlines()]
