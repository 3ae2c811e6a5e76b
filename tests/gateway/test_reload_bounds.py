"""Reload storms (CF-5): 50 writes in a second under traffic, then 1,000 reloads with memory and fds flat."""

from __future__ import annotations

import gc
import os
import threading
import time
import tracemalloc
from pathlib import Path

import httpx
import pytest

from tests.harness import served

CONFIG = """
auth: {{admin_key_env: T_ADMIN}}
upstreams:
  a: {{provider: dummy, model: a}}
  b: {{provider: dummy, model: b}}
  remote: {{base_url: "http://127.0.0.1:9/v1", model: r}}
routes:
  bot: {{variants: {{a: {wa}, b: {wb}}}, sticky_by: none}}
  other: {{variants: {{remote: 100}}, fallbacks: [a]}}
"""
BODY = {"model": "bot", "messages": [{"role": "user", "content": "hi"}]}


def write(path: Path, wa: int) -> None:
    tmp = path.with_name(".next.yaml")
    tmp.write_text(CONFIG.format(wa=wa, wb=100 - wa))
    os.replace(tmp, path)


def open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


def test_fifty_writes_in_a_second_then_a_thousand_reloads_stay_flat(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("T_ADMIN", "adm")  # the reloader reads the environment at every reload
    path = tmp_path / "turnout.yaml"
    write(path, 50)
    failures: list[int] = []
    stop = threading.Event()
    tracemalloc.start()  # before the app exists, so the base is the whole gateway and not a few reloads
    try:
        with served(path, reload_interval=0.05) as gw:

            def traffic() -> None:
                with httpx.Client(base_url=gw.url, timeout=10) as client:
                    while not stop.is_set():
                        status = client.post("/v1/chat/completions", json=BODY).status_code
                        if status != 200:
                            failures.append(status)

            load = threading.Thread(target=traffic)
            load.start()
            try:
                start = time.monotonic()
                for i in range(50):
                    write(path, 1 + i % 2 * 98)
                    time.sleep(max(0.0, start + (i + 1) / 50 - time.monotonic()))
                write(path, 100)  # only a serves from here on
                deadline = time.monotonic() + 2
                while httpx.post(gw.url + "/v1/chat/completions", json=BODY).headers["x-turnout-variant"] != "a":
                    assert time.monotonic() < deadline
                seen = {
                    httpx.post(gw.url + "/v1/chat/completions", json=BODY).headers["x-turnout-variant"]
                    for _ in range(20)
                }
            finally:
                stop.set()
                load.join(10)
            assert failures == [] and seen == {"a"}

            admin = {"authorization": "Bearer adm"}
            with httpx.Client(base_url=gw.url, headers=admin, timeout=10) as client:

                def reloads(n: int) -> None:
                    for i in range(n):
                        write(path, 10 + i % 80)
                        assert client.post("/admin/reload").status_code == 200

                reloads(100)  # warm-up
                gc.collect()
                base_mem, base_fds = tracemalloc.get_traced_memory()[0], open_fds()
                reloads(900)
                gc.collect()
                mem, fds = tracemalloc.get_traced_memory()[0], open_fds()
            applied = gw.metric("turnout_config_reloads_total", result="success")
    finally:
        tracemalloc.stop()
    growth = (mem - base_mem) / base_mem
    traced = f"{base_mem / 1e6:.2f} -> {mem / 1e6:.2f} MB ({growth:+.1%})"
    per_reload = (mem - base_mem) / 900
    print(f"CF-5: 1,000 reloads: traced {traced}, {per_reload:.0f} B per reload, fds {base_fds} -> {fds}")
    assert applied >= 1000
    assert growth < 0.25
    assert fds <= base_fds + 2
