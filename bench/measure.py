"""Measurements: CPU time of a process tree from /proc, wrk runs, and the asyncio latency clients.

CPU is read as utime+stime+cutime+cstime of the subject and every live descendant (reaped children are in
their parent's cutime/cstime), before a load run and after the subject has gone quiet again, so work a
subject defers (capture writes, shadow calls) is charged to the requests that caused it.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

from bench.subjects import BENCH_DIR

TICK_S = 1 / os.sysconf("SC_CLK_TCK")


def _stat(pid: int) -> tuple[int, int] | None:
    """(ppid, utime+stime+cutime+cstime in ticks) of a live process, None if it is gone."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return None
    fields = text[text.rindex(")") + 2 :].split()
    # fields[0] is the state (stat field 3): ppid is field 4, utime..cstime are fields 14..17
    return int(fields[1]), sum(int(value) for value in fields[11:15])


def tree_cpu_seconds(pid: int) -> float:
    """CPU seconds used so far by `pid` and all of its descendants, reaped ones included."""
    stats = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            stat = _stat(int(entry))
            if stat is not None:
                stats[int(entry)] = stat
    tree = {pid}
    grew = True
    while grew:
        grew = False
        for child, (parent, _) in stats.items():
            if parent in tree and child not in tree:
                tree.add(child)
                grew = True
    return sum(stats[member][1] for member in tree if member in stats) * TICK_S


def settle(pid: int, *, window_s: float = 0.3, quiet_ticks: int = 1, limit_s: float = 20.0) -> float:
    """Wait until the tree spends at most `quiet_ticks` per `window_s` (deferred work done); its CPU then."""
    deadline = time.monotonic() + limit_s
    before = tree_cpu_seconds(pid)
    while True:
        time.sleep(window_s)
        now = tree_cpu_seconds(pid)
        if now - before <= quiet_ticks * TICK_S + 1e-9 or time.monotonic() > deadline:
            return now
        before = now


def run_wrk(
    url: str,
    connections: int,
    duration: float,
    cpu: int,
    *,
    script: str = "post.lua",
    path: str = "/v1/chat/completions",
) -> dict[str, float]:
    """wrk with a bench/ script (default post.lua) against `url`; requests, errors, req/s, latency (µs)."""
    command = ["taskset", "-c", str(cpu), "wrk", "-t1", f"-c{connections}", f"-d{max(1, round(duration))}s"]
    command += ["--timeout", "10s", "-s", str(BENCH_DIR / script), url + path]
    done = subprocess.run(command, capture_output=True, text=True, timeout=duration + 60, check=True)
    for line in done.stdout.splitlines():
        if line.startswith("WRKJSON "):
            result: dict[str, float] = json.loads(line.removeprefix("WRKJSON "))
            result["rps"] = result["requests"] / (result["duration_us"] / 1e6)
            return result
    raise RuntimeError(f"wrk printed no summary: {done.stdout}\n{done.stderr}")


def upstream_posts(mock_url: str) -> int:
    """POSTs the mock has answered so far (primary and shadow calls of every subject)."""
    with urllib.request.urlopen(mock_url + "/stats", timeout=5) as response:
        return int(json.loads(response.read())["posts"])


def run_client(mode: str, url: str, duration: float, cpu: int, *args: str) -> dict[str, float]:
    """bench/latency_client.py `mode` against `url`, pinned to `cpu`; its JSON result."""
    command = ["taskset", "-c", str(cpu), sys.executable, str(BENCH_DIR / "latency_client.py"), mode]
    command += ["--url", url, "--duration", f"{duration:g}", *args]
    done = subprocess.run(command, capture_output=True, text=True, timeout=duration + 90, check=True)
    result: dict[str, float] = json.loads(done.stdout.strip().splitlines()[-1])
    return result
