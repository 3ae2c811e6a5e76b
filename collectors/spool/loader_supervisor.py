"""The serving process's side of the capture loader (``collectors/spool/loader_child.py``): starts it, applies its
reports to the metrics and the journal's accounting, restarts it if it dies, and drains it at shutdown.

The loader gets the journal's lock fd (``pass_fds``: flock locks belong to the open file description, so the
journal stays owned while either process lives), a control pipe (whose end of file tells it this process is
gone, SIGKILL included) and a report pipe; the store URL goes in its environment only.

Usage::

    loader = LoaderSupervisor("sqlite:///turnout.db", journal, metrics=metrics, dead_letter=state_dir / "dl.jsonl")
    await loader.start()                        # waits for its first report: is the store available?
    loader.retention({"support-bot": 86400.0}, None)
    loader.degraded, loader.idle
    await loader.close(drain_s=10)
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import subprocess
import sys
import time
from collections.abc import Mapping
from pathlib import Path

import orjson

import collectors
from collectors.metrics import Metrics
from collectors.spool.journal import Journal
from collectors.spool.loader_child import DSN_ENV
from collectors.spool.report import Report
from collectors.store.base import Claimed

log = logging.getLogger(__name__)

START_WAIT_S = 10.0  # serve (degraded) if the loader has not reported by then
EXIT_GRACE_S = 3.0  # after its drain time, how long the loader may take to exit before it is killed
RESTART_S = (0.5, 30.0)  # backoff between restarts of a loader that keeps dying
HEALTHY_S = 30.0  # a loader that lived this long resets the backoff
BEHIND_SHARE = 1 / 16  # this share of the spool bound not yet stored: the loader gets normal priority
STEER_S = 1.0  # how often the serving process looks at how far behind the loader is
_ROOT = str(Path(collectors.__file__).resolve().parent.parent)


# what a loader needs from the environment: locale, paths, TLS and libpq settings; never the client, admin or
# upstream keys the serving process holds
_KEEP = ("PATH", "HOME", "LANG", "LC_", "TZ", "TMPDIR", "PG", "SSL_CERT_", "PYTHONUNBUFFERED", "PYTHONHASHSEED")


def _loader_environment() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if k.startswith(_KEEP)}


class LoaderSupervisor:
    def __init__(
        self,
        store_dsn: str,
        journal: Journal,
        *,
        metrics: Metrics,
        dead_letter: Path,
        retention_interval: float = 600.0,
        review: dict[str, object] | None = None,
    ) -> None:
        self.journal = journal
        self.metrics = metrics
        self.dead_letter = dead_letter
        self.retention_interval = retention_interval
        self.degraded = True  # until the loader says the store is open
        self.adopted: int | None = None  # journals of dead processes it still replays (None: not heard yet)
        self.stored = 0  # lines the loaders stored, every journal
        self.proc: subprocess.Popen[bytes] | None = None
        self._dsn = store_dsn
        self._cwd = os.getcwd()  # fixed at start: a relative sqlite path or state_dir keeps its meaning
        self._policy: bytes | None = None
        self._review = orjson.dumps({"review": review or {}}) + b"\n"
        self._control: int | None = None
        self._closing = asyncio.Event()
        self._reported = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._steering: asyncio.Task[None] | None = None
        self.urgent = False  # the loader runs at normal priority (it fell behind), not SCHED_IDLE
        self._switching = False  # the loader was stopped to start it again at the other priority

    @property
    def idle(self) -> bool:
        """Everything journaled so far is in the store."""
        return self.adopted == 0 and self.journal.pending_bytes == 0

    async def start(self) -> None:
        self._task = asyncio.create_task(self._supervise(), name="capture-loader")
        self._steering = asyncio.create_task(self._steer(), name="capture-loader-priority")
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._reported.wait(), START_WAIT_S)

    def retention(self, routes: Mapping[str, float], default: float | None) -> None:
        """The retention policy of the config generation now serving (sent on change, and to each new loader)."""
        line = orjson.dumps({"retention": {"routes": dict(routes), "default": default}}) + b"\n"
        if line != self._policy:
            self._policy = line
            self._tell(line)

    def review(self, policy: dict[str, object]) -> None:
        """The review policy of the config generation now serving (sent on change, and to each new loader)."""
        line = orjson.dumps({"review": policy}) + b"\n"
        if line != self._review:
            self._review = line
            self._tell(line)

    async def _steer(self) -> None:
        """A loader at ``SCHED_IDLE`` never delays a request, but a core kept busy starves it. Once it is
        ``BEHIND_SHARE`` of the spool bound behind (with the store available: an outage is not a matter of
        CPU), it is restarted at normal priority, so accepted interactions reach the store instead of the
        spool's limit; once it has caught up, it goes back to ``SCHED_IDLE``. Unprivileged processes cannot
        raise their own priority, hence the restart (a SIGKILL loses nothing: the journal is replayed)."""
        behind = self.journal.max_pending_bytes * BEHIND_SHARE
        while True:
            await asyncio.sleep(STEER_S)
            pending = self.journal.pending_bytes
            if not self.urgent and pending > behind and not self.degraded:
                self._switch()
            elif self.urgent and pending < behind / 8:
                self._switch()

    def _switch(self) -> None:
        if self.proc is None or self.proc.poll() is not None or self._closing.is_set():
            return
        self.urgent = not self.urgent
        self._switching = True
        log.warning(
            "capture loader %s (%d bytes not yet stored): restarting it at %s priority",
            "falling behind" if self.urgent else "caught up",
            self.journal.pending_bytes,
            "normal" if self.urgent else "idle",
        )
        self.proc.kill()

    def _tell(self, line: bytes) -> None:
        """Write one control line; never blocks the serving loop (the pipe is non-blocking)."""
        if self._control is None:
            return
        try:
            os.write(self._control, line)
        except BlockingIOError:  # 64 KiB of control lines unread: the loader is stuck
            log.error("capture loader is not reading its control pipe: dropped %r", line[:100])
        except OSError:  # it died: its successor gets the policy when it starts
            pass

    def _spawn(self) -> int:
        """Start a loader; returns the read end of its report pipe."""
        assert self.journal.directory is not None
        control_r, self._control = os.pipe()
        os.set_blocking(self._control, False)
        report_r, report_w = os.pipe()
        path = os.pathsep.join(p for p in (_ROOT, os.environ.get("PYTHONPATH")) if p)
        command = [
            sys.executable,
            "-P",  # never the working directory's modules first: nothing planted there runs with the DSN
            "-m",
            "collectors.spool.loader_child",
            "--journal",
            str(self.journal.directory),
            "--lock-fd",
            str(self.journal.lock_fd),
            "--control-fd",
            str(control_r),
            "--report-fd",
            str(report_w),
            "--dead-letter",
            str(self.dead_letter),
            "--retention-interval",
            str(self.retention_interval),
            *(() if self.urgent else ("--idle",)),
        ]
        try:
            self.proc = subprocess.Popen(
                command,
                env={**_loader_environment(), "PYTHONPATH": path, DSN_ENV: self._dsn},
                cwd=self._cwd,
                stdin=subprocess.DEVNULL,
                pass_fds=(self.journal.lock_fd, control_r, report_w),
            )
        except OSError:
            os.close(report_r)
            os.close(self._control)
            self._control = None
            raise
        finally:
            os.close(control_r)
            os.close(report_w)
        log.info("capture loader started (pid %d)", self.proc.pid)
        self._tell(self._review)
        if self._policy is not None:
            self._tell(self._policy)
        return report_r

    async def _supervise(self) -> None:
        backoff = RESTART_S[0]
        while True:
            started = time.monotonic()
            try:
                report_fd = self._spawn()
            except OSError as exc:  # fork or exec failed (out of memory, process limit): try again later
                log.error("capture loader could not start: %s", exc)
                code: int | None = None
            else:
                await self._follow(report_fd)
                code = await self._reap()
            if self._closing.is_set():
                return
            if self._switching:
                self._switching = False
                continue
            if time.monotonic() - started > HEALTHY_S:
                backoff = RESTART_S[0]
            log.error("capture loader exited with code %s; restarting it in %.1fs", code, backoff)
            self.degraded = True  # nothing is stored until its successor reports
            self.adopted = None
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._closing.wait(), backoff)
                return
            backoff = min(backoff * 2, RESTART_S[1])

    async def _follow(self, fd: int) -> None:
        """Apply the reports on the pipe ``fd`` until it ends (the loader exited)."""
        reader = asyncio.StreamReader(limit=1 << 24)
        transport, _ = await asyncio.get_running_loop().connect_read_pipe(
            lambda: asyncio.StreamReaderProtocol(reader), os.fdopen(fd, "rb", buffering=0)
        )
        try:
            while line := await reader.readline():
                try:
                    self._apply(Report.parse(line))
                except Exception:
                    log.exception("capture loader: unreadable report %r", line[:200])
        finally:
            transport.close()

    async def _reap(self, within: float = EXIT_GRACE_S) -> int | None:
        """Its report pipe ended: wait for the exit (killing it after ``within``); returns the exit code."""
        assert self.proc is not None
        if self._control is not None:
            os.close(self._control)
            self._control = None
        try:
            return await asyncio.to_thread(self.proc.wait, within)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            return self.proc.wait()

    def _apply(self, report: Report) -> None:
        if report.own is not None:
            self.journal.loaded(report.own, report.own_lines)
        self.metrics.capture_queue_depth.set(self.journal.pending_lines)
        for route, count in report.captured.items():
            self.metrics.captured.labels(route).inc(count)
        for reason, count in report.dropped.items():
            self.metrics.capture_dropped.labels(reason).inc(count)
        self._count_feedback(report.claimed)
        self.degraded = report.degraded
        self.adopted = report.adopted
        self.stored += report.stored
        self._reported.set()

    def _count_feedback(self, claimed: list[Claimed]) -> None:
        for claim in claimed:
            label = claim.label if claim.label in ("good", "bad") else "none"
            self.metrics.feedback.labels(claim.route, claim.variant, label).inc()
            # a bare good/bad vote counts as 1.0/0.0, so label-only ratings move the score alert too
            score = claim.score if claim.score is not None else {"good": 1.0, "bad": 0.0}.get(label)
            if score is not None:
                self.metrics.feedback_score.labels(claim.route, claim.variant).observe(score)

    async def close(self, drain_s: float) -> None:
        """Ask the loader to drain for up to ``drain_s`` (it does not wait while the store is unavailable), then
        exit; one that overruns by ``EXIT_GRACE_S`` is killed. What is not stored stays in the journal."""
        self._closing.set()
        if self._steering is not None:
            self._steering.cancel()
        self._tell(orjson.dumps({"drain": drain_s}) + b"\n")
        if self._task is None:
            return
        try:
            await asyncio.wait_for(asyncio.shield(self._task), drain_s + EXIT_GRACE_S)
        except TimeoutError:
            log.warning("capture loader did not finish draining in %.1fs: killed", drain_s)
            if self.proc is not None and self.proc.poll() is None:
                self.proc.kill()
            await self._task
