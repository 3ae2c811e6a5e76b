"""A/B split through real gateway processes: forced variant for the admin only, headers on every response,
stickiness across two processes and a restart, and a weight edit in the file shifting traffic within a second
on every process reading it (SH-4, CF-3)."""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from policies.routing import sticky_variant
from tests.fakes.openai_server import Behavior, FakeOpenAI
from tests.harness import GatewayProcess, write_config

CLIENT_KEY = "ck-ab-1111"
ADMIN_KEY = "ak-ab-2222"
CONFIG = """
auth: {{client_keys_env: T_CLIENT_KEYS, admin_key_env: T_ADMIN_KEY}}
upstreams:
  a: {{base_url: "{url}", model: a-model}}
  b: {{base_url: "{url}", model: b-model}}
  drained: {{base_url: "{url}", model: drained-model}}
  broken: {{base_url: "{url}", model: broken-model}}
routes:
  ab: {{variants: {{a: {wa}, b: {wb}, drained: 0}}, experiment: ab-1}}
  by-header: {{variants: {{a: 50, b: 50}}, sticky_by: "header:x-tenant"}}
  fresh: {{variants: {{a: 50, b: 50}}, sticky_by: none}}
  broken: {{variants: {{broken: 100}}}}
"""
ENV = {"T_CLIENT_KEYS": CLIENT_KEY, "T_ADMIN_KEY": ADMIN_KEY}
USERS = [f"user-{i}" for i in range(200)]


@dataclass
class Rig:
    config: Path
    url: str
    procs: list[GatewayProcess]

    def write(self, wa: int, wb: int) -> None:
        tmp = self.config.with_suffix(".tmp")
        tmp.write_text(CONFIG.format(url=self.url, wa=wa, wb=wb))
        tmp.replace(self.config)


def chat(
    proc: GatewayProcess, route: str = "ab", key: str = CLIENT_KEY, stream: bool = False, **headers: str
) -> httpx.Response:
    body = {"model": route, "messages": [{"role": "user", "content": "hi"}], "stream": stream}
    return httpx.post(
        proc.url + "/v1/chat/completions",
        json=body,
        headers={"authorization": f"Bearer {key}", **{k.replace("_", "-"): v for k, v in headers.items()}},
        timeout=10,
    )


def variants(proc: GatewayProcess, users: list[str]) -> list[str]:
    with httpx.Client(base_url=proc.url, timeout=10, headers={"authorization": f"Bearer {CLIENT_KEY}"}) as http:
        body = {"model": "ab", "messages": [{"role": "user", "content": "hi"}]}
        return [
            http.post("/v1/chat/completions", json=body, headers={"x-turnout-user": u}).headers["x-turnout-variant"]
            for u in users
        ]


def weights_exported(proc: GatewayProcess) -> dict[str, float]:
    text = httpx.get(proc.url + "/metrics", timeout=5).text
    return {
        s.labels["variant"]: s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
        if s.name == "turnout_experiment_weight" and s.labels["route"] == "ab"
    }


@pytest.fixture(scope="module")
def rig(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Rig]:
    fake = FakeOpenAI()
    fake.set("broken-model", Behavior(statuses=[500] * 1000))
    tmp = tmp_path_factory.mktemp("ab")
    cfg = write_config(tmp, CONFIG.format(url=fake.url, wa=70, wb=30))
    rig = Rig(cfg, fake.url, [GatewayProcess(cfg, env=ENV), GatewayProcess(cfg, env=ENV)])
    try:
        for proc in rig.procs:
            proc.wait_ready()
        yield rig
    finally:
        for proc in rig.procs:
            proc.stop()
        fake.close()


def test_every_routed_response_names_its_route_and_variant(rig: Rig) -> None:
    proc = rig.procs[0]
    for response in (chat(proc), chat(proc, stream=True), chat(proc, "broken")):
        assert response.headers["x-turnout-route"] in ("ab", "broken")
        assert response.headers["x-turnout-variant"] in ("a", "b", "broken")
        assert len(response.headers["x-turnout-request-id"]) == 44
    assert chat(proc, "broken").status_code == 502


def test_forced_variant_is_honoured_for_the_admin_key_only(rig: Rig) -> None:
    proc = rig.procs[0]
    user = next(u for u in USERS if sticky_variant("ab-1", u, {"a": 70, "b": 30}) == "a")
    assert chat(proc, x_turnout_user=user, x_turnout_variant="b").headers["x-turnout-variant"] == "a"
    forced = chat(proc, key=ADMIN_KEY, x_turnout_user=user, x_turnout_variant="b")
    assert forced.status_code == 200 and forced.headers["x-turnout-variant"] == "b"
    assert forced.json()["model"] == "b-model"
    drained = chat(proc, key=ADMIN_KEY, x_turnout_variant="drained")  # a drained variant can still be probed
    assert drained.headers["x-turnout-variant"] == "drained"
    unknown = chat(proc, key=ADMIN_KEY, x_turnout_variant="nope")
    assert unknown.status_code == 400 and "nope" in unknown.json()["error"]["message"]


def test_sticky_by_header_and_none(rig: Rig) -> None:
    proc = rig.procs[0]
    for tenant in ("t1", "t2", "t3", "t4"):
        seen = {chat(proc, "by-header", x_tenant=tenant).headers["x-turnout-variant"] for _ in range(5)}
        assert seen == {sticky_variant("by-header", tenant, {"a": 50, "b": 50})}
    fresh = {chat(proc, "fresh", x_turnout_user="same").headers["x-turnout-variant"] for _ in range(30)}
    assert fresh == {"a", "b"}  # sticky_by: none draws per request (P(all one) = 2**-29)


def test_sticky_across_two_processes_and_a_restart(rig: Rig) -> None:
    expected = [sticky_variant("ab-1", u, {"a": 70, "b": 30}) for u in USERS]
    assert "drained" not in expected
    first, second = variants(rig.procs[0], USERS), variants(rig.procs[1], USERS)
    assert first == second == expected
    rig.procs[0].stop()
    rig.procs[0] = GatewayProcess(rig.config, env=ENV)
    rig.procs[0].wait_ready()
    assert variants(rig.procs[0], USERS) == expected


def test_a_weight_edit_shifts_traffic_within_a_second_on_every_process(rig: Rig) -> None:
    probe = next(u for u in USERS if sticky_variant("ab-1", u, {"a": 70, "b": 30}) == "a")
    before = variants(rig.procs[0], USERS)
    rig.write(wa=20, wb=80)
    written = time.monotonic()
    shifted: list[float] = []
    for proc in rig.procs:
        while chat(proc, x_turnout_user=probe).headers["x-turnout-variant"] != "b":
            assert time.monotonic() - written < 3.0, "the edit was not picked up"
            time.sleep(0.02)
        shifted.append(time.monotonic() - written)
    print(f"\nweight edit seen after {[f'{s:.2f}s' for s in shifted]}")
    assert max(shifted) < 1.0
    after = [variants(proc, USERS) for proc in rig.procs]
    assert after[0] == after[1] == [sticky_variant("ab-1", u, {"a": 20, "b": 80}) for u in USERS]
    # weight moved from a to b: only a's users moved, and only to b
    assert all(old == new or (old, new) == ("a", "b") for old, new in zip(before, after[0], strict=True))
    assert sum(old != new for old, new in zip(before, after[0], strict=True)) > 0
    for proc in rig.procs:
        assert weights_exported(proc) == {"a": 20.0, "b": 80.0, "drained": 0.0}
    rig.write(wa=70, wb=30)
