"""The OpenAPI document at /openapi.json, and schema fuzzing of the ASGI app with schemathesis (IN-3): no 5xx."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from prometheus_client import CollectorRegistry
from schemathesis.checks import not_a_server_error
from starlette.routing import Route

from gateway.app import create_app
from gateway.config import load_config
from tests.harness import served, write_config

CONFIG = """
server: {{state_dir: {state}}}
store: sqlite:///{db}
upstreams:
  d1: {{provider: dummy, model: one}}
  d2: {{provider: dummy, model: two}}
routes:
  bot: {{variants: {{d1: 50, d2: 50}}, sticky_by: none}}
  solo: {{variants: {{d2: 100}}}}
"""


def config(directory: Path) -> Path:
    return write_config(directory, CONFIG.format(state=directory / "state", db=directory / "t.db"))


@pytest.fixture(scope="module")
def api(tmp_path_factory: pytest.TempPathFactory) -> Iterator[object]:
    app = create_app(load_config(config(tmp_path_factory.mktemp("openapi"))), registry=CollectorRegistry())
    yield schemathesis.openapi.from_asgi("/openapi.json", app)


schema = schemathesis.pytest.from_fixture("api")


@schema.parametrize()
@settings(max_examples=100, deadline=None, suppress_health_check=list(HealthCheck))
def test_fuzzed_requests_never_get_a_5xx(case: schemathesis.Case) -> None:
    case.call_and_validate(checks=[not_a_server_error])


def test_the_document_covers_every_served_endpoint_and_names_the_routes(tmp_path: Path) -> None:
    cfg = config(tmp_path)
    app = create_app(load_config(cfg), registry=CollectorRegistry())
    served_paths = {
        re.sub(r":\w+}", "}", r.path)
        for r in app.routes
        if isinstance(r, Route) and not r.path.startswith("/admin/review")  # the review page: its own tests
    }
    with served(cfg) as gw:
        doc = httpx.get(gw.url + "/openapi.json").json()
    assert doc["openapi"].startswith("3.1")
    assert set(doc["paths"]) == served_paths - {"/openapi.json", "/admin/config", "/admin/reload"}
    for name in ("ChatCompletionRequest", "CompletionRequest", "EmbeddingRequest"):
        assert doc["components"]["schemas"][name]["properties"]["model"]["enum"] == ["bot", "solo"]
    chat = doc["paths"]["/v1/chat/completions"]["post"]["responses"]
    assert {"200", "400", "401", "404", "413", "429", "502", "503", "504"} <= set(chat)
