"""Live reload: every way a file changes is picked up within 2 s; broken files never interrupt serving (CF-1, CF-4)."""

from __future__ import annotations

import os
import signal
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest

from tests.harness import GatewayProcess, served

CONFIG = """
auth: {{admin_key_env: T_ADMIN}}
upstreams:
  a: {{provider: dummy, model: a}}
  b: {{provider: dummy, model: b}}
routes:
  bot: {{variants: {{{variant}: 100}}}}
"""
BODY = {"model": "bot", "messages": [{"role": "user", "content": "hi"}]}


def config(variant: str) -> str:
    return CONFIG.format(variant=variant)


def variant_of(url: str) -> str:
    resp = httpx.post(url + "/v1/chat/completions", json=BODY, timeout=5)
    assert resp.status_code == 200, resp.text
    return resp.headers["x-turnout-variant"]


def wait_for_variant(url: str, expected: str, within: float = 2.0) -> float:
    start = time.monotonic()
    while time.monotonic() - start < within:
        if variant_of(url) == expected:
            return time.monotonic() - start
        time.sleep(0.02)
    raise AssertionError(f"variant {expected!r} not served within {within}s")


@pytest.fixture(autouse=True)
def admin_key(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("T_ADMIN", "adm")


def in_place(path: Path, text: str) -> None:
    with path.open("w") as f:
        f.write(text)


def rename_write(path: Path, text: str) -> None:
    tmp = path.with_name(".turnout.yaml.swp")
    tmp.write_text(text)
    os.replace(tmp, path)


def delete_recreate(path: Path, text: str) -> None:
    path.unlink()
    time.sleep(0.3)
    path.write_text(text)


def mv_over(path: Path, text: str) -> None:
    other = path.parent / "incoming" / "turnout.yaml"
    other.parent.mkdir(exist_ok=True)
    other.write_text(text)
    other.rename(path)


@pytest.mark.parametrize("write", [in_place, rename_write, delete_recreate, mv_over])
def test_each_kind_of_write_is_picked_up(tmp_path: Path, write: Callable[[Path, str], None]) -> None:
    path = tmp_path / "turnout.yaml"
    path.write_text(config("a"))
    with served(path, reload_interval=0.5) as gw:
        assert variant_of(gw.url) == "a"
        write(path, config("b"))
        wait_for_variant(gw.url, "b")
        assert gw.metric("turnout_config_reloads_total", result="success") >= 2


def test_configmap_symlink_swap_is_picked_up(tmp_path: Path) -> None:
    """Kubernetes mounts turnout.yaml -> ..data/turnout.yaml, ..data -> ..<timestamp>/, swapped atomically."""
    first = tmp_path / "..2026_11_26_08_00_00.1"
    first.mkdir()
    (first / "turnout.yaml").write_text(config("a"))
    (tmp_path / "..data").symlink_to(first.name)
    (tmp_path / "turnout.yaml").symlink_to("..data/turnout.yaml")
    with served(tmp_path / "turnout.yaml", reload_interval=0.5) as gw:
        assert variant_of(gw.url) == "a"
        second = tmp_path / "..2026_11_26_08_01_00.2"
        second.mkdir()
        (second / "turnout.yaml").write_text(config("b"))
        (tmp_path / "..data_tmp").symlink_to(second.name)
        os.replace(tmp_path / "..data_tmp", tmp_path / "..data")
        wait_for_variant(gw.url, "b")


@pytest.fixture
def load(tmp_path: Path) -> Iterator[Callable[[str], list[int]]]:
    """Steady traffic in a thread; yields a function that starts it against a URL and returns the statuses."""
    statuses: list[int] = []
    stop = threading.Event()
    threads = []

    def start(url: str) -> list[int]:
        def run() -> None:
            with httpx.Client(timeout=5) as client:
                while not stop.is_set():
                    try:
                        statuses.append(client.post(url + "/v1/chat/completions", json=BODY).status_code)
                    except httpx.HTTPError:
                        statuses.append(-1)

        thread = threading.Thread(target=run, daemon=True)
        thread.start()
        threads.append(thread)
        return statuses

    yield start
    stop.set()
    for thread in threads:
        thread.join(5)


BROKEN = [
    "upstreams: {a: [",  # broken YAML
    config("b")[: len(config("b")) // 2],  # half-written
    "",  # empty
    "\x00\xff garbage \x01",
    config("c"),  # unknown upstream
    config("b").replace("routes:", "routs:"),  # unknown key
    config("b").replace("{b: 100}", "{b: -5}"),  # bad weight
    config("b").replace("T_ADMIN", "T_MISSING_VAR"),  # missing env var
]


def test_broken_files_under_load_never_fail_a_request(tmp_path: Path, load: Callable[[str], list[int]]) -> None:
    path = tmp_path / "turnout.yaml"
    path.write_text(config("a"))
    with served(path, reload_interval=0.1) as gw:
        statuses = load(gw.url)
        for broken in BROKEN:
            rename_write(path, broken)  # atomic, so each broken file is seen (and counted) exactly once
            time.sleep(0.3)
            assert variant_of(gw.url) == "a"
        assert gw.metric("turnout_config_reloads_total", result="failure") == len(BROKEN)
        path.write_text(config("b"))
        wait_for_variant(gw.url, "b")
        time.sleep(0.2)
        assert statuses and set(statuses) == {200}, {s for s in statuses if s != 200}


def test_admin_reload_applies_or_explains(tmp_path: Path) -> None:
    path = tmp_path / "turnout.yaml"
    path.write_text(config("a"))
    with served(path, reload_interval=3600) as gw:
        headers = {"authorization": "Bearer adm"}
        path.write_text(config("c"))
        bad = httpx.post(gw.url + "/admin/reload", headers=headers)
        assert bad.status_code == 400
        assert "routes.bot.variants: unknown upstream 'c'" in bad.json()["error"]["message"]
        assert variant_of(gw.url) == "a"
        path.write_text(config("b"))
        good = httpx.post(gw.url + "/admin/reload", headers=headers)
        assert good.status_code == 200 and good.json()["status"] == "applied"
        assert variant_of(gw.url) == "b"
        sha = good.json()["sha256"]
        assert gw.metric("turnout_config_info", sha256=sha) == 1
        assert f'turnout_config_info{{sha256="{sha}"}} 1.0' in httpx.get(gw.url + "/metrics").text


def test_sighup_reloads_a_running_process(tmp_path: Path) -> None:
    path = tmp_path / "turnout.yaml"
    path.write_text(config("a"))
    with GatewayProcess(path) as proc:
        assert variant_of(proc.url) == "a"
        path.write_text(config("b"))
        proc.proc.send_signal(signal.SIGHUP)
        wait_for_variant(proc.url, "b")
        proc.proc.send_signal(signal.SIGHUP)
        time.sleep(0.2)
        assert proc.proc.poll() is None and variant_of(proc.url) == "b"
        assert "SIGHUP: reloading" in proc.output()


def test_reload_keeps_in_flight_streams_on_their_generation(tmp_path: Path, fake_openai: object) -> None:
    from tests.fakes.openai_server import Behavior, FakeOpenAI

    assert isinstance(fake_openai, FakeOpenAI)
    fake_openai.set("slow", Behavior(chunks=10, chunk_delay_s=0.1))
    text = f"""
upstreams:
  a: {{base_url: "{fake_openai.url}", model: slow}}
  b: {{provider: dummy, model: b}}
routes:
  bot: {{variants: {{a: 100}}}}
"""
    path = tmp_path / "turnout.yaml"
    path.write_text(text)
    with served(path, reload_interval=0.1) as gw:
        with httpx.stream("POST", gw.url + "/v1/chat/completions", json={**BODY, "stream": True}, timeout=10) as r:
            assert r.headers["x-turnout-variant"] == "a"
            path.write_text(text.replace("{a: 100}", "{b: 100}"))
            body = r.read().decode()
        assert body.rstrip().endswith("data: [DONE]")
        wait_for_variant(gw.url, "b")
