"""Instructions a request in Turnout's serving process, counted by valgrind (callgrind): the steady figure
for a change to the request path on a machine whose CPU times move 20-40 % from run to run.

Each subject's serving process runs under ``valgrind --tool=callgrind --instr-atstart=no`` (its loader child
runs natively and is not counted, nor is the kernel's share of its syscalls); the count is switched on for
a wrk run only, after a warm-up, and divided by the requests that run answered. The loopback, the mock and wrk
are real, as in ``bench.run``. ``--top N`` also lists the C functions (self cost) whose instructions a request
differ most from the first subject's: where a feature's cost goes below the interpreter (the regex engine,
orjson, uvloop, the Aho-Corasick pass). Needs valgrind (``apt install valgrind``); a subject starts in ~10 s.

Usage (from the repository root)::

    python -m bench.instructions                                  # turnout and turnout-shadow, 8 s each
    python -m bench.instructions --subjects turnout turnout-plain --duration 5 --top 25
"""

from __future__ import annotations

import argparse
import os
import re
import signal
import subprocess
import tempfile
from pathlib import Path

from bench import measure
from bench.subjects import (
    REPO_ROOT,
    free_port,
    spawn,
    start_mock,
    stop,
    turnout_command,
    turnout_config,
    turnout_env,
    wait_ready,
)

PROXY_CPU = 0
LOAD_CPU = 1
SUBJECTS = {"turnout": (True, False), "turnout-shadow": (True, True), "turnout-plain": (False, False)}
COST_LINE = re.compile(r"\s*([\d,]+) \([^)]*\)\s+(\S.*?)(?: \[[^\]]*\])?$")


def count(workdir: Path, mock_url: str, name: str, connections: int, duration: float) -> tuple[Path, int]:
    """Run ``name`` under callgrind; its profile (counted during one wrk run only) and that run's requests."""
    capture, shadow = SUBJECTS[name]
    port = free_port()
    config = turnout_config(workdir, name, mock_url, port, capture=capture, shadow=shadow)
    profile = workdir / f"{name}.callgrind"
    valgrind = ["valgrind", "--tool=callgrind", "--instr-atstart=no", f"--callgrind-out-file={profile}"]
    process = spawn(
        valgrind + turnout_command(config, port), PROXY_CPU, workdir / f"{name}.log", cwd=config.parent,
        env=turnout_env(REPO_ROOT),
    )  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    try:
        wait_ready(url + "/readyz", process, 300, body=None)
        wait_ready(url + "/v1/chat/completions", process, 60)
        measure.run_wrk(url, connections, 2, LOAD_CPU)  # warm-up: pools, caches, the loader's first batches
        subprocess.run(["callgrind_control", "--instr=on", str(process.pid)], check=True, capture_output=True)
        run = measure.run_wrk(url, connections, duration, LOAD_CPU)
        subprocess.run(["callgrind_control", "--instr=off", str(process.pid)], check=True, capture_output=True)
        os.killpg(process.pid, signal.SIGTERM)  # a graceful stop writes the profile
        process.wait(120)
    finally:
        stop(process)
    return profile, int(run["requests"])


def per_request(profile: Path, requests: int) -> dict[str, float]:
    """Self instructions a request by C function (``file:function``), and ``PROGRAM TOTALS``."""
    shown = subprocess.run(
        ["callgrind_annotate", "--threshold=100", str(profile)], check=True, capture_output=True, text=True
    ).stdout
    costs: dict[str, float] = {}
    for line in shown.splitlines():
        if match := COST_LINE.match(line):
            name = re.sub(r"^.*/(Python-[\d.]+|project|build)/", "", match[2])
            costs[name] = costs.get(name, 0.0) + int(match[1].replace(",", "")) / requests
    return costs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--subjects", nargs="+", choices=list(SUBJECTS), default=["turnout", "turnout-shadow"])
    parser.add_argument("--connections", type=int, default=16)
    parser.add_argument("--duration", type=float, default=8.0, help="seconds of counted load a subject")
    parser.add_argument("--top", type=int, default=0, help="C functions to list against the first subject")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="turnout-bench-instructions-") as tmp:
        workdir = Path(tmp)
        mock, mock_url = start_mock(workdir, LOAD_CPU, 32, 1.0)
        try:
            costs = {}
            for name in args.subjects:
                profile, requests = count(workdir, mock_url, name, args.connections, args.duration)
                costs[name] = per_request(profile, requests)
                print(f"{name}: {requests} requests counted", flush=True)
        finally:
            stop(mock)
    first = args.subjects[0]
    base = costs[first]["PROGRAM TOTALS"]
    print(f"\ninstructions a request in the serving process (c={args.connections}), against {first}:")
    for name, cost in costs.items():
        total = cost["PROGRAM TOTALS"]
        print(f"  {name:15s} {total:10,.0f}  {total / base:5.2f}x")
    for name, cost in list(costs.items())[1:] if args.top else []:
        print(f"\nC functions, self instructions a request: {first} -> {name}")
        functions = (set(cost) | set(costs[first])) - {"PROGRAM TOTALS"}
        moved = sorted(functions, key=lambda f: -abs(cost.get(f, 0.0) - costs[first].get(f, 0.0)))
        for function in moved[: args.top]:
            a, b = costs[first].get(function, 0.0), cost.get(function, 0.0)
            print(f"  {a:9,.0f} {b:9,.0f} {b - a:+9,.0f}  {function[:110]}")


if __name__ == "__main__":
    main()
