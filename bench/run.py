"""Benchmark harness: every subject in front of the same mock upstream, measured side by side.

Subjects: direct (no proxy), passthrough (bench/passthrough.py), turnout-plain (capture off), turnout
(defaults: capture + metrics), turnout-shadow (one shadow at 100 %), nginx and litellm when installed; on
request, turnout-w2 (``--workers 2`` on both CPUs), turnout-base (``turnout`` from ``--base-root``: A/B) and
turnout-aiohttp and turnout-pyqwest (``turnout`` with ``server.http_client: aiohttp`` or ``pyqwest``: the A/B of
the upstream HTTP client against the default, httptools).
The proxy runs on CPU 0; wrk, the asyncio clients, the mock and this harness on CPU 1. Every repetition
measures every subject once per figure, and the ratios are computed within each repetition.

Usage (from the repository root): python -m bench.run [--quick] [--readme]
"""

from __future__ import annotations

import argparse
import json
import os
import re
import signal
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path

from bench import ledger, measure, report
from bench.subjects import (
    BENCH_DIR,
    REPO_ROOT,
    Subject,
    measure_turnout_startup,
    start_litellm,
    start_mock,
    start_nginx,
    start_passthrough,
    start_turnout,
    stop,
)

PROXY_CPU = 0
LOAD_CPU = 1
ALL_SUBJECTS = ["direct", "passthrough", "turnout-plain", "turnout", "turnout-shadow", "turnout-drift", "turnout-w2",
                "turnout-base", "turnout-aiohttp", "turnout-pyqwest", "nginx", "litellm"]  # fmt: skip
CLIENTS = {"turnout-aiohttp": "aiohttp", "turnout-pyqwest": "pyqwest"}  # subject -> server.http_client
DEFAULT_SUBJECTS = [s for s in ALL_SUBJECTS if s not in ("turnout-w2", "turnout-base", *CLIENTS)]
# name -> (capture, shadow, drift): turnout-drift is turnout with a drift check every minute (its jobs child included)
TURNOUT_SUBJECTS = {
    "turnout-plain": (False, False, False),
    "turnout": (True, False, False),
    "turnout-shadow": (True, True, False),
    "turnout-drift": (True, False, True),
    "turnout-w2": (True, False, False),  # `--workers 2` on both CPUs (the load shares the second one)
    "turnout-base": (True, False, False),  # `turnout` from the --base-root checkout: an A/B within one run
    "turnout-aiohttp": (True, False, False),  # `turnout` with server.http_client: aiohttp
    "turnout-pyqwest": (True, False, False),  # `turnout` with server.http_client: pyqwest
}
RATIOS = [
    ("turnout", "passthrough"),
    ("turnout-w2", "turnout"),
    ("turnout", "turnout-base"),
    ("turnout-aiohttp", "turnout"),
    ("turnout-aiohttp", "passthrough"),
    ("turnout-pyqwest", "turnout"),
    ("turnout-pyqwest", "passthrough"),
    ("turnout-base", "passthrough"),
    ("turnout-plain", "passthrough"),
    ("turnout-shadow", "turnout"),
    ("turnout-drift", "turnout"),
    ("turnout", "nginx"),
    ("turnout", "litellm"),
]

Results = dict[str, dict[str, list[float]]]


def start_subjects(args: argparse.Namespace, workdir: Path, mock_url: str) -> list[Subject]:
    subjects: list[Subject] = []
    for name in args.subjects:
        print(f"starting {name}", file=sys.stderr)
        if name == "direct":
            subjects.append(Subject("direct", mock_url, None))
        elif name == "passthrough":
            subjects.append(start_passthrough(workdir, PROXY_CPU, mock_url))
        elif name in TURNOUT_SUBJECTS:
            capture, shadow, drift = TURNOUT_SUBJECTS[name]
            workers, cpus = (2, f"{PROXY_CPU},{LOAD_CPU}") if name == "turnout-w2" else (1, str(PROXY_CPU))
            root = args.base_root if name == "turnout-base" else args.gateway_root
            client = CLIENTS.get(name)
            subjects.append(
                start_turnout(
                    workdir, cpus, mock_url, root, name, capture=capture, shadow=shadow, drift=drift, workers=workers,
                    http_client=client,
                )
            )  # fmt: skip
        elif name == "nginx":
            nginx = start_nginx(workdir, PROXY_CPU, mock_url)
            if nginx is None:
                print("nginx: not installed, skipped", file=sys.stderr)
            else:
                subjects.append(nginx)
        elif name == "litellm":
            litellm = start_litellm(workdir, PROXY_CPU, mock_url, args.litellm)
            if litellm is None:
                print("litellm: no working proxy binary, skipped", file=sys.stderr)
            else:
                subjects.append(litellm)
    return subjects


def cpu_before(subject: Subject) -> float:
    return measure.settle(subject.process.pid) if subject.process else 0.0


def cpu_after(subject: Subject, before: float, count: float) -> float | None:
    """CPU µs per unit of `count` since `before`, once the subject is quiet; None for `direct`."""
    if subject.process is None or count <= 0:
        return None
    return (measure.settle(subject.process.pid) - before) / count * 1e6


def record(results: Results, name: str, figure: str, value: float | None) -> None:
    if value is not None:
        results[name][figure].append(value)


def load_phase(subjects: list[Subject], args: argparse.Namespace, results: Results, mock_url: str) -> None:
    for connections in args.connections:
        for subject in subjects:
            before = cpu_before(subject)
            posts = measure.upstream_posts(mock_url)
            wrk = measure.run_wrk(subject.url, connections, args.duration, LOAD_CPU)
            if wrk["errors"] or wrk["status_errors"]:
                print(f"WARNING {subject.name} c={connections}: {wrk}", file=sys.stderr)
            record(results, subject.name, f"cpu_us_c{connections}", cpu_after(subject, before, wrk["requests"]))
            record(results, subject.name, f"rps_c{connections}", wrk["rps"])
            if connections == max(args.connections) and wrk["requests"]:
                calls = (measure.upstream_posts(mock_url) - posts) / wrk["requests"]
                record(results, subject.name, "upstream_calls", calls)
            if connections == 1:
                record(results, subject.name, "p50_ms_c1", wrk["p50_us"] / 1000)
                record(results, subject.name, "p99_ms_c1", wrk["p99_us"] / 1000)


def stream_phase(subjects: list[Subject], args: argparse.Namespace, results: Results) -> None:
    for subject in subjects:
        first = measure.run_client("stream", subject.url, args.stream_duration, LOAD_CPU, "--concurrency", "1")
        before = cpu_before(subject)
        loaded = measure.run_client("stream", subject.url, args.stream_duration, LOAD_CPU, "--concurrency", "16")
        if first["errors"] or loaded["errors"]:
            print(f"WARNING {subject.name} stream errors: {first} {loaded}", file=sys.stderr)
        record(results, subject.name, "stream_cpu_us_per_event", cpu_after(subject, before, loaded["events"]))
        record(results, subject.name, "ttfe_p50_ms", first.get("ttfe_p50_ms"))
        record(results, subject.name, "ttfe_p99_ms", first.get("ttfe_p99_ms"))


def rate_phase(subjects: list[Subject], args: argparse.Namespace, results: Results) -> None:
    for subject in subjects:
        cpu_before(subject)
        rate = measure.run_client("rate", subject.url, args.duration, LOAD_CPU, "--rate", f"{args.rate:g}")
        if rate["errors"]:
            print(f"WARNING {subject.name} fixed-rate errors: {rate}", file=sys.stderr)
        record(results, subject.name, "rate_p50_ms", rate.get("p50_ms"))
        record(results, subject.name, "rate_p99_ms", rate.get("p99_ms"))


def add_differences(results: Results, rep: int) -> None:
    """Added latency over `direct` for repetition `rep` (the last value of each series)."""
    direct = results.get("direct")
    if not direct:
        return
    for figure in ("p50_ms_c1", "p99_ms_c1", "ttfe_p50_ms", "rate_p50_ms"):
        if len(direct.get(figure, [])) <= rep:
            continue
        for series in results.values():
            if len(series.get(figure, [])) > rep:
                series[f"added_{figure}"].append(series[figure][rep] - direct[figure][rep])


def ratios(results: Results, figures: list[str]) -> dict[str, list[float]]:
    out: dict[str, list[float]] = {}
    for top, bottom in RATIOS:
        if top not in results or bottom not in results:
            continue
        for figure in figures:
            pairs = zip(results[top].get(figure, []), results[bottom].get(figure, []), strict=False)
            values = [a / b for a, b in pairs if b]
            if values:
                out[f"{top}/{bottom} {figure}"] = values
    if "turnout" in results and "turnout-plain" in results:  # what capture costs the tail, in ms
        for figure in ("p50_ms_c1", "p99_ms_c1", "rate_p50_ms", "rate_p99_ms"):
            pairs = zip(results["turnout"].get(figure, []), results["turnout-plain"].get(figure, []), strict=False)
            values = [a - b for a, b in pairs]
            if values:
                out[f"turnout - turnout-plain {figure} (capture on - off)"] = values
    return out


def commit(root: Path) -> str:
    done = subprocess.run(["git", "-C", str(root), "rev-parse", "--short", "HEAD"], capture_output=True, text=True)
    return done.stdout.strip() or "unknown"


def write_readme(markdown: str) -> None:
    readme = BENCH_DIR / "README.md"
    text = readme.read_text()
    start, end = "<!-- results:start -->", "<!-- results:end -->"
    block = f"{start}\n{markdown}\n{end}"
    readme.write_text(re.sub(re.escape(start) + ".*?" + re.escape(end), lambda _: block, text, flags=re.S))


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="short runs, 2 repetitions: checks the harness")
    parser.add_argument("--reps", type=int, help="repetitions (default 3)")
    parser.add_argument("--duration", type=float, help="seconds per wrk and fixed-rate run (default 10)")
    parser.add_argument("--stream-duration", type=float, help="seconds per streaming run (default 6)")
    parser.add_argument("--connections", type=int, nargs="+", default=[1, 16, 64])
    parser.add_argument("--rate", type=float, default=100, help="open-loop requests/s (default 100)")
    parser.add_argument("--events", type=int, default=32, help="SSE events per streamed answer")
    parser.add_argument("--event-delay-ms", type=float, default=1.0, help="spacing of the mock's SSE events")
    parser.add_argument("--subjects", nargs="+", default=DEFAULT_SUBJECTS, choices=ALL_SUBJECTS)
    parser.add_argument("--gateway-root", type=Path, default=REPO_ROOT, help="checkout holding gateway/")
    parser.add_argument("--base-root", type=Path, help="checkout the turnout-base subject runs (an A/B of a change)")
    parser.add_argument("--litellm", help="LiteLLM proxy binary (default: `litellm` on PATH, if it works)")
    parser.add_argument("--json", type=Path, help="also write the raw figures here")
    parser.add_argument("--readme", action="store_true", help="write the tables into bench/README.md")
    args = parser.parse_args()
    if "turnout-base" in args.subjects and args.base_root is None:
        parser.error("the turnout-base subject needs --base-root")
    args.reps = args.reps or (2 if args.quick else 3)
    args.duration = args.duration or (2.0 if args.quick else 10.0)
    args.stream_duration = args.stream_duration or (2.0 if args.quick else 6.0)
    return args


def main() -> None:
    args = parse_args()
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # run the `finally` that stops subjects
    if not os.path.exists("/proc/self/stat") or (os.cpu_count() or 1) < 2:
        sys.exit("needs Linux /proc and at least 2 CPUs")
    os.sched_setaffinity(0, {LOAD_CPU})
    workdir = Path(tempfile.mkdtemp(prefix="turnout-bench-"))
    print(f"work directory (logs, configs, stores): {workdir}", file=sys.stderr)
    mock, mock_url = start_mock(workdir, LOAD_CPU, args.events, args.event_delay_ms)
    results: Results = defaultdict(lambda: defaultdict(list))
    subjects: list[Subject] = []
    try:
        if any(name in TURNOUT_SUBJECTS for name in args.subjects):
            for _ in range(args.reps):
                startup = measure_turnout_startup(workdir, PROXY_CPU, mock_url, args.gateway_root)
                results["turnout"]["startup_s"].append(startup)
        subjects = start_subjects(args, workdir, mock_url)
        for subject in subjects:  # warm-up: connection pools, lazy imports, first store writes
            measure.run_wrk(subject.url, 16, 1, LOAD_CPU)
            measure.run_client("stream", subject.url, 1, LOAD_CPU, "--concurrency", "4")
        for rep in range(args.reps):
            started = time.monotonic()
            load_phase(subjects, args, results, mock_url)
            stream_phase(subjects, args, results)
            rate_phase(subjects, args, results)
            add_differences(results, rep)
            print(f"repetition {rep + 1}/{args.reps} took {time.monotonic() - started:.0f} s", file=sys.stderr)
        capturing = [s for s in subjects if TURNOUT_SUBJECTS.get(s.name, (False, False, False))[0]]
        ledger_lines = [ledger.check(s, workdir / s.name / "turnout.db") for s in capturing]
    finally:
        for subject in subjects:
            if subject.process is not None:
                stop(subject.process)
        stop(mock)
    ordered = {s.name: dict(results[s.name]) for s in subjects}
    if results["turnout"].get("startup_s"):
        ordered.setdefault("turnout", {})["startup_s"] = results["turnout"]["startup_s"]
    figures = [f"cpu_us_c{c}" for c in args.connections] + ["stream_cpu_us_per_event"]
    figures += [f"rps_c{c}" for c in args.connections] + ["added_p50_ms_c1"]
    ratio_values = ratios(ordered, figures)
    settings = (
        f"Gateway at commit {commit(args.gateway_root)}; {args.reps} repetitions; "
        f"wrk {args.duration:g} s per run (1 thread); "
        f"streams {args.stream_duration:g} s per run, {args.events} events {args.event_delay_ms:g} ms apart; "
        f"fixed rate {args.rate:g}/s."
    )
    markdown = report.render(ordered, ratio_values, args.connections, settings)
    if ledger_lines:
        markdown += "\n**Ledger: finished calls (the gateway's `turnout_requests_total`) against store rows**\n\n"
        markdown += "".join(f"- {line}\n" for line in ledger_lines)
    print(markdown)
    if args.json:
        args.json.write_text(json.dumps({"results": ordered, "ratios": ratio_values}, indent=1))
    if args.readme:
        write_readme(markdown)


if __name__ == "__main__":
    main()
