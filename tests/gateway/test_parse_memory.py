"""Parsing memory (security finding 3): a 30 MB body of empty objects is refused before it is parsed, so the
gateway's peak memory stays near what holding the body costs. Before: the 400 came after a full parse and the
peak RSS went from 266 MB to 1.18 GB, past the chart's 1 Gi limit."""

from __future__ import annotations

from pathlib import Path

import httpx

from tests.harness import GatewayProcess, write_config

CONFIG = """
server: {{state_dir: {state}}}
store: sqlite:///{db}
upstreams:
  d: {{provider: dummy, model: d}}
routes:
  bot: {{variants: {{d: 100}}}}
"""


def _peak_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    raise AssertionError("no VmHWM")


def test_a_body_of_millions_of_objects_is_refused_before_parsing(tmp_path: Path) -> None:
    cfg = write_config(tmp_path, CONFIG.format(state=tmp_path / "state", db=tmp_path / "t.db"))
    with GatewayProcess(cfg) as gw, httpx.Client(base_url=gw.url, timeout=60) as http:
        half = b"x" * (15 << 20)  # two strings under check_shape's 16 MB each: a 30 MB body that is served
        plain = b'{"model": "bot", "messages": [{"role": "user", "content": "' + half + b'"}], "y": "' + half + b'"}'
        assert http.post("/v1/chat/completions", content=plain).status_code == 200  # the baseline: 30 MB held
        baseline = _peak_mb(gw.proc.pid)
        flood = (
            b'{"model": "bot", "messages": [{"role": "user", "content": "hi"}], "x": [' + b"{}," * (10 << 20) + b"{}]}"
        )
        resp = http.post("/v1/chat/completions", content=flood)
        assert resp.status_code == 400 and "keys and array items" in resp.json()["error"]["message"]
        assert _peak_mb(gw.proc.pid) < baseline + 150, (baseline, _peak_mb(gw.proc.pid))
