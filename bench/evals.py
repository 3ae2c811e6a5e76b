"""Eval suites: how fast a suite runs, what a scheduled eval costs live traffic, and how the statistics agree
with scipy and scikit-learn. Run on demand (never in CI); prints one Markdown section.

1. **Suite wall time**: a 200-case suite (one `equals` assertion each) against a fake OpenAI upstream that
   answers after 50 ms, through `gateway.evals.run_suite` (the upstream seam and retry loop), at concurrency
   1, 16 and 64. The floor at concurrency 16 is ceil(200/16) x 50 ms = 650 ms.
2. **Overhead on live traffic** (JB-3): `turnout serve` with a dummy route, open-loop requests at a fixed rate
   (`bench/latency_client.py rate`), with and without an `evals:` entry that runs a 400-case suite every
   second in the jobs process (once against the dummy, so the eval is all CPU, once against the 50 ms fake).
   Alternating runs, same machine, p50 and p99 of the live requests.
3. **Agreement with the oracles**: the largest differences between `policies.evals` and scikit-learn's
   `cohen_kappa_score`, scipy's `binomtest` (exact McNemar) and `ttest_rel` over random inputs.

Usage: python bench/evals.py [--repeat 3] [--rate 100] [--duration 8]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import math
import os
import random
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from aiohttp import web

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from collectors.evals.suite import load_suite  # noqa: E402
from gateway.config import load_config  # noqa: E402
from gateway.evals import run_suite  # noqa: E402


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class SlowUpstream:
    """An OpenAI-shaped chat upstream answering "echo: <prompt>" after ``delay_s``, in its own thread."""

    def __init__(self, delay_s: float) -> None:
        self.port = free_port()
        self.delay_s = delay_s
        self.loop = asyncio.new_event_loop()
        threading.Thread(target=self.loop.run_forever, daemon=True).start()
        asyncio.run_coroutine_threadsafe(self._start(), self.loop).result(5)

    async def _answer(self, request: web.Request) -> web.Response:
        body = await request.json()
        await asyncio.sleep(self.delay_s)
        text = "echo: " + body["messages"][-1]["content"]
        return web.json_response(
            {
                "id": "chatcmpl-bench",
                "object": "chat.completion",
                "created": 0,
                "model": body["model"],
                "choices": [{"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "stop"}],
                "usage": {"prompt_tokens": 5, "completion_tokens": 5, "total_tokens": 10},
            }
        )

    async def _start(self) -> None:
        app = web.Application()
        app.router.add_post("/v1/chat/completions", self._answer)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", self.port, backlog=1024).start()


def write_suite(directory: Path, cases: int) -> Path:
    lines = [
        {
            "id": f"c{i:04d}",
            "messages": [{"role": "user", "content": f"question {i}"}],
            "assert": [{"type": "equals", "value": f"echo: question {i}"}, {"type": "contains", "value": "question"}],
        }
        for i in range(cases)
    ]
    (directory / f"cases-{cases}.jsonl").write_text("".join(json.dumps(line) + "\n" for line in lines))
    path = directory / f"suite-{cases}.yaml"
    path.write_text(f"suite: bench-{cases}\ncases_file: cases-{cases}.jsonl\n")
    return path


def suite_wall_time(tmp: Path, repeat: int) -> list[str]:
    fake = SlowUpstream(0.05)
    config_path = tmp / "suite-bench.yaml"
    config_path.write_text(
        f"upstreams: {{slow: {{base_url: 'http://127.0.0.1:{fake.port}/v1', model: m}}}}\n"
        "routes: {r: {variants: {slow: 1}}}\n"
    )
    config = load_config(config_path).config
    suite = load_suite(write_suite(tmp, 200))
    rows = ["| concurrency | wall time (s), each run | median | floor |", "|---|---|---|---|"]
    for concurrency in (1, 16, 64):
        times = []
        for _ in range(1 if concurrency == 1 else repeat):
            t0 = time.perf_counter()
            run = asyncio.run(run_suite(config, suite, "slow", concurrency=concurrency))
            times.append(time.perf_counter() - t0)
            assert run.pass_rate == 1.0, run.notes
        floor = math.ceil(200 / concurrency) * 0.05
        rows.append(
            f"| {concurrency} | {', '.join(f'{t:.2f}' for t in times)} | {statistics.median(times):.2f} | {floor:.2f} |"
        )
    return rows


def _serve(config: Path, port: int) -> subprocess.Popen[bytes]:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    cmd = [sys.executable, "-m", "gateway", "serve", "-c", str(config), "--host", "127.0.0.1", "--port", str(port)]
    proc = subprocess.Popen(cmd, env=env, cwd=config.parent, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    import httpx

    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=1).status_code == 200:
                return proc
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    proc.kill()
    raise RuntimeError("gateway did not start")


def _rate(port: int, rate: float, duration: float) -> dict[str, float]:
    out = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "latency_client.py"), "rate", "--url", f"http://127.0.0.1:{port}",
         "--rate", str(rate), "--duration", str(duration)],
        capture_output=True, text=True, check=True, timeout=duration + 60,
    )  # fmt: skip
    return json.loads(out.stdout.strip().splitlines()[-1])  # type: ignore[no-any-return]


def _eval_runs(db: Path) -> int:
    """Complete eval runs stored so far (the eval really ran during the measurement)."""
    import sqlite3

    if not db.exists():
        return 0
    with contextlib.closing(sqlite3.connect(db)) as conn:
        try:
            return int(conn.execute("SELECT COUNT(*) FROM eval_runs WHERE status = 'complete'").fetchone()[0])
        except sqlite3.OperationalError:
            return 0


def live_overhead(tmp: Path, repeat: int, rate: float, duration: float) -> list[str]:
    fake = SlowUpstream(0.05)
    write_suite(tmp, 400)
    base = (
        "server: {{state_dir: {state}}}\nstore: sqlite:///{db}\n"
        "upstreams:\n  live: {{provider: dummy, model: live}}\n  dummy-eval: {{provider: dummy, model: e}}\n"
        "  slow-eval: {{base_url: 'http://127.0.0.1:{port}/v1', model: e}}\n"
        "routes:\n  bench: {{variants: {{live: 1}}, capture: {{sample: 0}}}}\n"
        "  cpu-eval: {{variants: {{dummy-eval: 1}}}}\n  wait-eval: {{variants: {{slow-eval: 1}}}}\n"
    )
    subjects = {
        "no eval": "",
        "eval, dummy (CPU-bound)": "evals: [{suite: suite-400.yaml, route: cpu-eval, every: 1s}]\n",
        "eval, 50 ms upstream": "evals: [{suite: suite-400.yaml, route: wait-eval, every: 1s}]\n",
    }
    results: dict[str, list[dict[str, float]]] = {name: [] for name in subjects}
    for r in range(repeat):
        for i, (name, extra) in enumerate(subjects.items()):
            config = tmp / f"live-{r}-{i}.yaml"
            config.write_text(
                base.format(state=tmp / f"state-{r}-{i}", db=tmp / f"live-{r}-{i}.db", port=fake.port) + extra
            )
            port = free_port()
            proc = _serve(config, port)
            try:
                time.sleep(3)  # the jobs process starts and the first eval tick is running
                results[name].append({**_rate(port, rate, duration), "evals": _eval_runs(tmp / f"live-{r}-{i}.db")})
            finally:
                proc.terminate()
                proc.wait(30)
    rows = [
        "| subject | p50 ms (each run) | median p50 | p99 ms (median) | eval runs completed |",
        "|---|---|---|---|---|",
    ]
    for name, runs in results.items():
        p50s = [x["p50_ms"] for x in runs]
        p99s = [x["p99_ms"] for x in runs]
        rows.append(
            f"| {name} | {', '.join(f'{v:.2f}' for v in p50s)} | {statistics.median(p50s):.2f} |"
            f" {statistics.median(p99s):.2f} | {sum(int(x['evals']) for x in runs)} |"
        )
    return rows


def oracle_agreement(samples: int) -> list[str]:
    from scipy import stats
    from sklearn.metrics import cohen_kappa_score

    from policies.evals import cohen_kappa, mcnemar_exact, paired_t

    rng = random.Random(3)
    kappa_diff = 0.0
    for _ in range(samples):
        n = rng.randint(5, 300)
        a = [rng.choice("pfe") for _ in range(n)]
        b = [x if rng.random() < rng.random() else rng.choice("pfe") for x in a]
        if len(set(a) | set(b)) > 1:
            kappa_diff = max(kappa_diff, abs(cohen_kappa(a, b) - cohen_kappa_score(a, b)))
    mcnemar_diff = max(
        abs(mcnemar_exact(b, c) - stats.binomtest(b, b + c, 0.5).pvalue)
        for b in range(0, 151)
        for c in range(0, 151)
        if b + c
    )
    t_diff = 0.0
    for _ in range(samples):
        n = rng.randint(3, 300)
        x = [rng.random() for _ in range(n)]
        y = [min(1.0, max(0.0, v + rng.gauss(rng.uniform(-0.1, 0.1), 0.2))) for v in x]
        t_diff = max(t_diff, abs(paired_t(x, y).p_worse - stats.ttest_rel(y, x, alternative="less").pvalue))
    return [
        "| statistic | oracle | inputs | largest absolute difference |",
        "|---|---|---|---|",
        f"| Cohen's kappa | sklearn cohen_kappa_score | {samples} random rater pairs, 5-300 items | {kappa_diff:.1e} |",
        f"| exact McNemar p | scipy.stats.binomtest | every b, c <= 150 | {mcnemar_diff:.1e} |",
        f"| paired t p (one-sided) | scipy.stats.ttest_rel | {samples} random pairs, 3-300 cases | {t_diff:.1e} |",
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--rate", type=float, default=100.0)
    parser.add_argument("--duration", type=float, default=8.0)
    parser.add_argument("--samples", type=int, default=2000)
    parser.add_argument("--only", choices=("wall", "live", "oracles"))
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as directory:
        tmp = Path(directory)
        print(f"## Eval suites (bench/evals.py, {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())})\n")
        if args.only in (None, "wall"):
            print("200-case suite against a 50 ms upstream:\n\n" + "\n".join(suite_wall_time(tmp, args.repeat)) + "\n")
        if args.only in (None, "live"):
            rows = live_overhead(tmp, args.repeat, args.rate, args.duration)
            print(f"Live traffic at {args.rate:g} req/s while a scheduled eval runs:\n\n" + "\n".join(rows) + "\n")
        if args.only in (None, "oracles"):
            print("Agreement with the oracles:\n\n" + "\n".join(oracle_agreement(args.samples)) + "\n")


if __name__ == "__main__":
    main()
