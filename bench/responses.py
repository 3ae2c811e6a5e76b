"""`/v1/responses` against chat: CPU per request of one Turnout process (capture and metrics on) in front of the
mock upstream, the two endpoints measured alternately in one run, so the ratio is within one repetition.

Usage: python -m bench.responses --duration 5 --reps 3 --connections 16
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
from pathlib import Path

from bench.measure import run_wrk, settle
from bench.subjects import REPO_ROOT, start_mock, start_turnout, stop

ENDPOINTS = {"chat": ("post.lua", "/v1/chat/completions"), "responses": ("post_responses.lua", "/v1/responses")}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=float, default=5.0, help="seconds per wrk run (default 5)")
    parser.add_argument("--reps", type=int, default=3, help="repetitions, endpoints alternating (default 3)")
    parser.add_argument("--connections", type=int, default=16)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="turnout-bench-") as tmp:
        workdir = Path(tmp)
        mock, mock_url = start_mock(workdir, 1, events=32, delay_ms=1.0)
        subject = start_turnout(workdir, 0, mock_url, REPO_ROOT, "turnout", capture=True, shadow=False)
        figures: dict[str, list[float]] = {name: [] for name in ENDPOINTS}
        assert subject.process is not None
        try:
            for rep in range(args.reps):
                for name, (script, path) in ENDPOINTS.items():
                    before = settle(subject.process.pid)
                    result = run_wrk(subject.url, args.connections, args.duration, 1, script=script, path=path)
                    assert result["errors"] == 0 and result["status_errors"] == 0, result
                    used = settle(subject.process.pid) - before
                    figures[name].append(used / result["requests"] * 1e6)
                    print(
                        f"rep {rep + 1} {name}: {figures[name][-1]:.0f} us CPU per request, {result['rps']:.0f} req/s"
                    )
        finally:
            stop(subject.process)
            stop(mock)
    chat, responses = statistics.median(figures["chat"]), statistics.median(figures["responses"])
    ratios = [r / c for r, c in zip(figures["responses"], figures["chat"], strict=True)]
    print(f"median CPU per request: chat {chat:.0f} us, responses {responses:.0f} us")
    print(f"responses / chat per repetition: {', '.join(f'{r:.2f}' for r in ratios)}")


if __name__ == "__main__":
    main()
