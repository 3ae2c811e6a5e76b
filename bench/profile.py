"""Profile one subject under wrk load with py-spy and summarise where its CPU goes.

Starts the mock and the subject (pinned like bench/run.py), loads it with wrk (or the streaming client with
`--stream`), records with `py-spy record --nonblocking --threads --subprocesses --format raw`, and prints:
samples per thread, self time per module group (gateway, collectors, starlette, uvicorn, aiohttp, asyncio,
...), and the top functions by self and by inclusive samples. py-spy is a bench-only tool:
`pip install -r bench/requirements.txt`.

Usage (from the repository root): python -m bench.profile --subject turnout --duration 15 --connections 64
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

from bench import measure
from bench.subjects import REPO_ROOT, Subject, start_mock, start_passthrough, start_turnout, stop

PROXY_CPU = 0
LOAD_CPU = 1
FRAME = re.compile(r"^(?P<function>.*) \((?P<file>[^():]*)(?::\d+)?\)$")
PROJECT = ("gateway", "policies", "collectors", "bench")


def group_of(shown: str) -> str:
    """The package (first path component) of a frame's file as py-spy shows it: `uvicorn`, `gateway`, ..."""
    head, _, rest = shown.partition("/")
    return head if rest else shown or "?"


def short(frame: str) -> tuple[str, str]:
    """(`function (file)`, file) for one raw py-spy frame, the file relative to site-packages or the repo."""
    match = FRAME.match(frame)
    if match is None:
        return frame, ""
    file = re.sub(r".*/site-packages/", "", match["file"])
    file = re.sub(r".*/(gateway|policies|collectors|bench)/", r"\1/", file)
    return f"{match['function']} ({file})", file


def summarise(raw: Path, top: int, unit_us: float | None = None) -> str:
    """The report; with `unit_us` (CPU µs per request or event) each share is also shown as ≈ µs of it."""
    threads: Counter[str] = Counter()
    own: Counter[str] = Counter()
    inclusive: Counter[str] = Counter()
    groups: Counter[str] = Counter()
    total = 0
    for line in raw.read_text().splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        count = int(count_text)
        frames = stack.split(";")
        total += count
        code = [f for f in frames if not f.startswith(("process ", "thread "))]
        threads[";".join(f for f in frames if f.startswith(("process ", "thread ")))] += count
        if not code:
            continue
        leaf, leaf_file = short(code[-1])
        own[leaf] += count
        groups[group_of(leaf_file)] += count
        for name, file in {short(frame) for frame in code}:
            if group_of(file) in PROJECT and not name.startswith("<module>"):
                inclusive[name] += count
    if total == 0:
        return "no samples (is the subject running Python? is ptrace allowed?)"

    def share(count: int) -> str:
        fraction = count / total
        return f"{100 * fraction:5.1f} %" + (f" {fraction * unit_us:6.1f} µs" if unit_us else "")

    lines = [f"{total} samples"]
    lines += ["", "samples per process/thread:"] + [f"  {share(c)}  {t}" for t, c in threads.most_common()]
    lines += ["", "self time by package (asyncio/runners self = uvloop's C loop: syscalls, dispatch):"] + [
        f"  {share(c)}  {g}" for g, c in groups.most_common(20)
    ]
    lines += ["", f"top {top} functions by self time:"] + [f"  {share(c)}  {f}" for f, c in own.most_common(top)]
    lines += ["", f"top {top} project functions (gateway, policies, collectors) by inclusive time:"]
    lines += [f"  {share(c)}  {f}" for f, c in inclusive.most_common(top)]
    return "\n".join(lines)


def start_subject(name: str, workdir: Path, mock_url: str, gateway_root: Path) -> Subject:
    if name == "passthrough":
        return start_passthrough(workdir, PROXY_CPU, mock_url)
    capture, shadow = {"turnout-plain": (False, False), "turnout": (True, False), "turnout-shadow": (True, True)}[name]
    return start_turnout(workdir, PROXY_CPU, mock_url, gateway_root, name, capture=capture, shadow=shadow)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--subject", default="turnout", choices=["passthrough", "turnout-plain", "turnout", "turnout-shadow"]
    )
    parser.add_argument("--duration", type=int, default=15)
    parser.add_argument("--connections", type=int, default=64)
    parser.add_argument("--stream", action="store_true", help="load with 16 concurrent SSE streams instead")
    parser.add_argument("--rate", type=int, default=500, help="py-spy samples per second")
    parser.add_argument("--top", type=int, default=30)
    parser.add_argument("--gateway-root", type=Path, default=REPO_ROOT)
    parser.add_argument("--out", type=Path, help="keep the raw py-spy stacks (collapsed format) here")
    args = parser.parse_args()
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # run the `finally` that stops subjects
    py_spy = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
    if not Path(py_spy).exists():
        sys.exit("py-spy not found: pip install -r bench/requirements.txt")
    os.sched_setaffinity(0, {LOAD_CPU})
    workdir = Path(tempfile.mkdtemp(prefix="turnout-profile-"))
    raw = args.out or workdir / "profile.txt"
    mock, mock_url = start_mock(workdir, LOAD_CPU, 32, 1.0)
    subject: Subject | None = None
    try:
        subject = start_subject(args.subject, workdir, mock_url, args.gateway_root)
        assert subject.process is not None
        measure.run_wrk(subject.url, args.connections, 2, LOAD_CPU)  # warm-up
        record = subprocess.Popen(
            ["taskset", "-c", str(LOAD_CPU), py_spy, "record", "--pid", str(subject.process.pid), "--duration",
             str(args.duration), "--rate", str(args.rate), "--nonblocking", "--threads", "--subprocesses",
             "--format", "raw", "--output", str(raw)],
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
        )  # fmt: skip
        time.sleep(0.5)
        before = measure.tree_cpu_seconds(subject.process.pid)
        if args.stream:
            load = measure.run_client("stream", subject.url, args.duration, LOAD_CPU, "--concurrency", "16")
            count, unit = load["events"], "event"
        else:
            load = measure.run_wrk(subject.url, args.connections, args.duration, LOAD_CPU)
            count, unit = load["requests"], "request"
        after = measure.settle(subject.process.pid)
        _, errors = record.communicate(timeout=args.duration + 60)
        if record.returncode != 0:
            sys.exit(f"py-spy failed: {errors.decode(errors='replace')}")
    finally:
        if subject is not None and subject.process is not None:
            stop(subject.process)
        stop(mock)
    unit_us = (after - before) / count * 1e6
    print(f"{args.subject}: {unit_us:.0f} µs CPU per {unit} while profiled ({count} {unit}s)")
    print(summarise(raw, args.top, unit_us))
    print(f"\nraw stacks: {raw}")


if __name__ == "__main__":
    main()
