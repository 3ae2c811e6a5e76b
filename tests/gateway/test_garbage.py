"""A request leaves no reference cycle behind (issue 8): per-request cycles cost ~40 µs of collector time.

The gateway runs in this process (uvicorn in a thread), so the collector sees its objects. With
``gc.DEBUG_SAVEALL`` every object the collector frees is kept in ``gc.garbage``, where the test looks for
anything of the data path's: calls, attempts, facts, or asyncio tasks (a cancelled task is a cycle).
"""

# The fixtures are imported by name, so every test parameter "redefines" them.
# ruff: noqa: F811

from __future__ import annotations

import gc
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.fakes.fixtures import fake_openai  # noqa: F401
from tests.fakes.openai_server import FakeOpenAI
from tests.harness import served, write_config

CONFIG = """
upstreams:
  main: {{base_url: "{url}", model: main-model}}
routes:
  bot: {{variants: {{main: 100}}}}
"""
BODY = {"model": "bot", "messages": [{"role": "user", "content": "hello"}]}
WATCHED = ("gateway.", "policies.", "collectors.", "asyncio.", "_asyncio.")


@pytest.fixture
def saved_garbage() -> Iterator[list[object]]:
    gc.collect()
    gc.set_debug(gc.DEBUG_SAVEALL)
    try:
        yield gc.garbage
    finally:
        gc.set_debug(0)
        gc.garbage.clear()


def kinds(garbage: list[object]) -> Counter[str]:
    names = (f"{type(o).__module__}.{type(o).__qualname__}" for o in garbage)
    return Counter(name for name in names if name.startswith(WATCHED) and name != "asyncio.events.Handle")


def test_requests_leave_no_cycles(tmp_path: Path, fake_openai: FakeOpenAI, saved_garbage: list[object]) -> None:
    with served(write_config(tmp_path, CONFIG.format(url=fake_openai.url))) as gw, httpx.Client() as client:
        for _ in range(3):  # warm: first-use caches, pooled connections
            client.post(gw.url + "/v1/chat/completions", json=BODY).raise_for_status()
            client.post(gw.url + "/v1/chat/completions", json={**BODY, "stream": True}).raise_for_status()
        gc.collect()
        saved_garbage.clear()
        for _ in range(40):
            assert client.post(gw.url + "/v1/chat/completions", json=BODY).status_code == 200
            streamed = client.post(gw.url + "/v1/chat/completions", json={**BODY, "stream": True})
            assert streamed.status_code == 200 and streamed.text.endswith("data: [DONE]\n\n")
        gc.collect()
        found = kinds(saved_garbage)
    per_request = {kind: n for kind, n in found.items() if n >= 20}  # (a one-off, e.g. a closed socket, is not)
    assert not per_request, f"80 requests left reference cycles: {found.most_common(10)}"
