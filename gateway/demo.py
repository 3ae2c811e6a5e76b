"""``turnout demo``: the whole retraining loop on one machine, with no keys and no network, in a few minutes.

It starts a real gateway (``turnout serve`` on a free port of 127.0.0.1, SQLite, in ``--dir``), two built-in
models of different quality and simulated users (``gateway/demo_world.py``), then walks the brief's loop with
the same commands an operator types, printing each step in a sentence with the figures behind it:
capture -> review -> dataset version -> eval gate -> shadow -> A/B rollout and its report -> promote -> drift
and its alert. Prometheus evaluates the alert when its binary is installed; otherwise the demo evaluates the
rule's expression on the gateway's ``/metrics`` itself, and says so. The directory is left for inspection,
with ``demo-report.html`` (the experiment report and the loop's timeline) and the commands to re-run by hand.

Usage: ``turnout demo [--dir turnout-demo] [--fast]``.
"""

from __future__ import annotations

import argparse
import asyncio
import html
import os
import secrets
import shlex
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager, suppress
from pathlib import Path
from typing import Any

import aiohttp
import orjson
from tqdm import tqdm

from collectors import rollouts
from collectors.store import open_store
from gateway import demo_world as world_
from gateway.demo_alert import AlertWatch
from gateway.demo_world import CAND, PROD, ROUTE, World

ADMIN_ENV = "TURNOUT_DEMO_ADMIN_KEY"
FINAL = ("succeeded", "rolled_back", "aborted")
# requests a second while the rollout runs: the controller judges only what the capture has stored, and unpaced
# users (~250 requests a second here) outran the capture on a loaded 2-core machine (~140 stored a second): it
# fell ~50 s behind and held every step by that lag. This pace keeps it current and still gives each step's
# analysis its users within seconds.
ROLLOUT_RATE = 40.0


class DemoError(Exception):
    """A step of the demo failed; the message says which command and why."""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Demo:
    def __init__(self, directory: Path, *, fast: bool, out: Callable[[str], None] = print) -> None:
        self.dir = directory.resolve()
        self.fast = fast
        self.out = out
        self.port = _free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.admin_key = secrets.token_urlsafe(24)
        self.env = {**os.environ, ADMIN_ENV: self.admin_key}
        self.world = World()
        self.started = time.monotonic()
        self.wall_started = time.time()
        self.timeline: list[tuple[float, str, str]] = []
        self.commands: list[str] = []
        self.tty = sys.stdout.isatty()

    # narration and commands
    def say(self, step: str, sentence: str, *, at: float | None = None) -> None:
        at = time.monotonic() - self.started if at is None else at
        self.timeline.append((at, step, sentence))
        self.out(f"[{at:5.1f}s] {step}: {sentence}")

    def bar(self, total: int | None, what: str) -> tqdm[Any]:
        return tqdm(total=total, desc=f"         {what}", disable=not self.tty, leave=False, unit="")

    def turnout(self, *args: str, ok: tuple[int, ...] = (0,)) -> subprocess.CompletedProcess[str]:
        shown = shlex.join(["turnout", *args])
        if shown not in self.commands:
            self.commands.append(shown)
        done = subprocess.run(
            [sys.executable, "-m", "gateway", *args], cwd=self.dir, env=self.env, capture_output=True, text=True,
            timeout=300,
        )  # fmt: skip
        if done.returncode not in ok:
            raise DemoError(f"`{shown}` exited {done.returncode}: {done.stderr.strip()[-2000:]}")
        return done

    async def count(self, sql: str, *args: Any) -> int:
        store = open_store("sqlite:///" + str(self.dir / "turnout.db"))
        try:
            return int((await store.fetch(sql, *args))[0][0])
        finally:
            await store.close()

    async def until(self, what: str, check: Callable[[], Any], within: float = 60.0) -> Any:
        deadline = time.monotonic() + within
        while time.monotonic() < deadline:
            found = await check()
            if found:
                return found
            await asyncio.sleep(0.25)
        raise DemoError(f"gave up waiting for {what} after {within:.0f}s (see {self.dir / 'gateway.log'})")

    def write_config(self, candidate_dataset: str | None = None) -> None:
        text = world_.config(self.port, ADMIN_ENV, candidate_dataset=candidate_dataset, fast=self.fast)
        tmp = self.dir / "turnout.yaml.tmp"
        tmp.write_text(text)
        tmp.replace(self.dir / "turnout.yaml")

    @asynccontextmanager
    async def gateway(self) -> AsyncIterator[subprocess.Popen[bytes]]:
        with (self.dir / "gateway.log").open("ab") as log:
            proc = subprocess.Popen(  # noqa: ASYNC220 (fork and exec: nothing to wait for)
                [sys.executable, "-m", "gateway", "serve", "-c", "turnout.yaml"],
                cwd=self.dir, env=self.env, stdout=log, stderr=subprocess.STDOUT,
            )  # fmt: skip
        try:
            yield proc
        finally:
            proc.terminate()
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()

    async def ready(self, http: aiohttp.ClientSession) -> str:
        async def probe() -> str | None:
            with suppress(aiohttp.ClientError):
                async with http.get(f"{self.url}/readyz") as reply:
                    if reply.status == 200:
                        return str((await reply.json())["config_sha256"])
            return None

        return str(await self.until("the gateway to be ready", probe, within=30))

    # the loop
    async def run(self) -> int:
        self.dir.mkdir(parents=True, exist_ok=True)
        for stale in ("turnout.db", "turnout.db-wal", "turnout.db-shm", "state", "datasets", "prometheus"):
            path = self.dir / stale
            shutil.rmtree(path) if path.is_dir() else path.unlink(missing_ok=True)
        (self.dir / "evals").mkdir(exist_ok=True)
        (self.dir / "evals" / "support.yaml").write_text(world_.suite())
        self.write_config()
        self.out(f"turnout demo: the retraining loop in {self.dir} (gateway on {self.url})")
        timeout = aiohttp.ClientTimeout(total=30)
        connector = aiohttp.TCPConnector(keepalive_timeout=2)  # below uvicorn's 5 s: never reuse a closing socket
        async with self.gateway(), aiohttp.ClientSession(timeout=timeout, connector=connector) as http:
            await self.ready(http)
            async with AlertWatch(self.dir / "prometheus", f"127.0.0.1:{self.port}", self.url, http) as alerts:
                await self.loop(http, alerts)
        self.report()
        self.out("\nRe-run any step by hand, in that directory with `turnout serve -c turnout.yaml` running:")
        self.out(f"  cd {self.dir}  # the admin key for /admin/review is in {ADMIN_ENV} when the demo runs")
        for command in self.commands:
            self.out(f"  {command}")
        self.out(f"\nWrote {self.dir / 'demo-report.html'} in {time.monotonic() - self.started:.0f}s.")
        return 0

    async def loop(self, http: aiohttp.ClientSession, alerts: AlertWatch) -> None:
        n = 300 if self.fast else 800
        since = time.time()
        with self.bar(n, "users asking") as bar:
            tally = await self.world.traffic(http, self.url, requests=n, progress=bar)
        await self.until("interactions to be stored", lambda: self._stored(n, since), within=120)
        self.say(
            "1 capture",
            f"{tally.requests} requests from {world_.USERS} simulated users to {PROD} were answered and stored with "
            f"their feedback ({tally.right / max(tally.requests, 1):.0%} right answers, {tally.feedback} ratings).",
        )
        queued = await self.until("the review queue", lambda: self.count("SELECT COUNT(*) FROM review_items"))
        done = await self.world.review(http, self.url, self.admin_key)
        self.say(
            "2 review",
            f"{queued} interactions were queued for review (a random 15 % and every answer rated bad); the reviewer "
            f"approved {done['approve']}, corrected {done['edit']} and rejected {done['reject']}.",
        )
        await self.dataset(http)
        self.eval_gate()
        await self.rollout(http)
        await self.drift(http, alerts)

    async def _stored(self, n: int, since: float) -> bool:
        """At least ``n`` primary interactions that started at or after ``since`` are in the store (the loader
        stores them in the background: a plain count would also see earlier traffic that was stored late)."""
        return await self.count("SELECT COUNT(*) FROM interactions WHERE role = 'primary' AND ts >= $1", since) >= n

    async def dataset(self, http: aiohttp.ClientSession) -> None:
        self.turnout("dataset", "build", "support", "-c", "turnout.yaml")
        version = sorted(p.name for p in (self.dir / "datasets" / "support").iterdir() if p.name.startswith("v"))[-1]
        manifest = orjson.loads((self.dir / "datasets" / "support" / version / "manifest.json").read_bytes())
        before = await self.ready(http)
        self.write_config(candidate_dataset=f"support@{version}")
        await self.until("the gateway to reload the config", lambda: self._reloaded(http, before))
        lineage = self.turnout("lineage", CAND, "-c", "turnout.yaml").stdout.split()
        self.say(
            "3 dataset",
            f"version support@{version} was written ({manifest.get('counts', {}).get('examples', '?')} examples, "
            f"sha256 {str(manifest.get('sha256'))[:12]}...); {CAND} is declared trained on it (turnout lineage: "
            + " ".join(lineage)
            + ")",
        )

    async def _reloaded(self, http: aiohttp.ClientSession, before: str) -> bool:
        return await self.ready(http) != before

    def eval_gate(self) -> None:
        done = self.turnout(
            "eval", "compare", "evals/support.yaml", "-c", "turnout.yaml", "--baseline", PROD, "--candidate", CAND,
            "--json", "eval-compare.json", ok=(0, 1),
        )  # fmt: skip
        verdict = [line for line in done.stdout.splitlines() if line.startswith(("NOT WORSE", "WORSE"))]
        self.say("4 eval gate", (verdict[0] if verdict else done.stdout.strip()[-300:]))
        if done.returncode != 0:
            raise DemoError("the eval gate failed: the candidate is worse than production on the golden set")

    async def rollout(self, http: aiohttp.ClientSession) -> None:
        self.turnout("rollout", "start", ROUTE, "-c", "turnout.yaml", "--actor", "demo", "--reason", "v2 retrained")
        store = open_store("sqlite:///" + str(self.dir / "turnout.db"))
        stop = asyncio.Event()

        async def users() -> None:
            while not stop.is_set():
                await self.world.traffic(http, self.url, requests=60, concurrency=8, rate=ROLLOUT_RATE)

        traffic = asyncio.create_task(users())
        seen = "start"
        try:
            with self.bar(None, "rollout") as bar:
                deadline = time.monotonic() + (90 if self.fast else 240)
                while time.monotonic() < deadline:
                    row = await rollouts.load(store, ROUTE)
                    where = f"{row.phase} {row.step}%" if row else "starting"
                    if where != seen:
                        seen = where
                        bar.set_postfix_str(where)
                    if row is not None and row.phase in FINAL:
                        break
                    await asyncio.sleep(0.5)
                    bar.update(1)
            trail = list(reversed(await rollouts.audit_log(store, ROUTE)))
        finally:
            stop.set()
            await traffic
            await store.close()
        for audit in trail[1:]:
            moved = f"{audit.from_phase} -> {audit.to_phase} {audit.to_percent or 0}%: {audit.reason}"
            self.say("5 rollout", moved, at=audit.ts - self.wall_started)
        if row is None or row.phase != "succeeded":
            raise DemoError(f"the rollout ended {row.phase if row else 'nowhere'}: {row.reason if row else ''}")
        self.turnout(
            "experiment", "report", ROUTE, "-c", "turnout.yaml", "--json", "report.json", "--html", "report.html"
        )
        decision = orjson.loads((self.dir / "report.json").read_bytes())
        why = "; ".join(decision["reasons"][:3])
        if decision["decision"] == "continue":  # the controller advances on non-inferiority, the report wants better
            why += " (each step passed because the candidate was shown no worse; a promote needs it shown better)"
        self.say("6 report", f"decision {decision['decision'].upper()} over the last step: {why}")
        self.turnout("promote", ROUTE, CAND, "-c", "turnout.yaml", "--actor", "demo")
        self.say("7 promote", f"turnout.yaml now routes every user of {ROUTE} to {CAND} (comments kept).")

    async def drift(self, http: aiohttp.ClientSession, alerts: AlertWatch) -> None:
        self.turnout("drift", "check", ROUTE, "-c", "turnout.yaml", ok=(0, 1))  # closes the month-1 window
        n = 150 if self.fast else 400
        since = time.time()
        with self.bar(n, "month 6") as bar:
            await self.world.traffic(http, self.url, requests=n, month=6, progress=bar)
        await self.until("month-6 interactions to be stored", lambda: self._stored(n, since), within=120)
        self.turnout("drift", "check", ROUTE, "-c", "turnout.yaml", ok=(0, 1))
        report = self.turnout("drift", "report", ROUTE, "-c", "turnout.yaml", ok=(0, 1)).stdout
        (self.dir / "drift-report.txt").write_text(report)
        headline = next((line for line in report.splitlines() if line.startswith(("DRIFT", "no drift"))), "")
        self.say("8 drift", f"months later users ask about other things; {headline}")
        fired = await alerts.wait("TurnoutInputDrift", within=60)
        self.say("9 alert", fired)

    def report(self) -> None:
        page = (self.dir / "report.html").read_text() if (self.dir / "report.html").exists() else "<html><body>"
        rows = "".join(
            f"<tr><td>{at:.1f}s</td><td>{html.escape(step)}</td><td>{html.escape(text)}</td></tr>"
            for at, step, text in self.timeline
        )
        section = (
            "<section id='loop'><h2>The retraining loop, as the demo ran it</h2>"
            "<table style='text-align: left'><thead><tr><th>at</th><th>step</th><th>what happened</th></tr></thead>"
            f"<tbody>{rows}</tbody>"
            "</table></section>"
        )
        page = page.replace("</body>", section + "</body>") if "</body>" in page else page + section
        (self.dir / "demo-report.html").write_text(page)


def demo(args: argparse.Namespace) -> int:
    try:
        return asyncio.run(Demo(Path(args.dir), fast=args.fast).run())
    except DemoError as exc:
        print(f"turnout demo: {exc}", file=sys.stderr)
        return 1
