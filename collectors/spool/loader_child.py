"""The capture loader: the child process of a serving process that loads its journal into the store, so no
database work (and no database driver thread holding the GIL) runs where requests are served.

It runs the batch ``Writer`` on the serving process's journal (and on journals left by dead processes) and
the retention loop. The store URL comes in the environment (``TURNOUT_STORE_DSN``), never in argv: it may
carry a password. The journal's lock fd is inherited, so the journal stays owned while either process lives.
With ``--idle`` it runs as ``SCHED_IDLE``: on a core it shares with the serving process (``taskset``, a
one-CPU cpuset) it runs only when that core has nothing else to do, so a batch never delays a request (at
normal priority it added ~2 ms to p99 at concurrency 1 there). A core kept busy by requests for long makes it
fall behind; the serving process then restarts it without ``--idle`` until it has caught up
(``LoaderSupervisor._steer``).
Each batch or change of state goes to the serving process as one ``Report`` line on the report pipe. Control
lines come on the control pipe: ``{"retention": {"routes": {route: seconds}, "default": seconds}}`` and
``{"review": {policy}}`` (which interactions it queues for review after each batch, ``collectors/review/queue.py``;
batches wait for the first one, which comes with the config right after start) and ``{"drain": seconds}``
(drain that long, report, exit). End of file there means the serving process is gone:
stop now (at most the batch in flight is cut; the next start replays it, inserts are idempotent).

Usage (``LoaderSupervisor`` in ``collectors/spool/loader_supervisor.py`` starts it)::

    TURNOUT_STORE_DSN=sqlite:///turnout.db python -m collectors.spool.loader_child --journal DIR --lock-fd 5 \\
        --control-fd 6 --report-fd 7 --dead-letter state/dead-letter.jsonl --idle
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import os
import signal
import time
from collections.abc import Mapping
from pathlib import Path

import orjson

from collectors.review.queue import ReviewPolicy, enqueue
from collectors.spool.journal import Cursor
from collectors.spool.report import Report
from collectors.spool.writer import Writer
from collectors.store import open_store
from collectors.store.base import FeedbackRow, InteractionRow, Store
from collectors.store.retention import retention_loop

log = logging.getLogger("collectors.spool.loader_child")

DSN_ENV = "TURNOUT_STORE_DSN"
POLICY_WAIT_S = 30.0  # a review policy that has not come by then: batches go on without review (logged)
CLOSE_S = 2.0  # a store that does not close in this long is abandoned (the process exits anyway)


def _send(fd: int, report: Report) -> None:
    data = memoryview(report.line())
    try:
        while data:
            data = data[os.write(fd, data) :]
    except OSError:  # the serving process is gone; the control pipe's end of file stops us
        pass


class Control:
    """The serving process's instructions: the retention policy, and when to drain."""

    def __init__(self) -> None:
        self.routes: Mapping[str, float] = {}
        self.default: float | None = None
        self.policy_known = asyncio.Event()
        self.review = ReviewPolicy()
        self.review_known = asyncio.Event()

    async def queue_for_review(
        self, store: Store, interactions: list[InteractionRow], feedback: list[FeedbackRow]
    ) -> None:
        """The writer's after-batch step: queue what the review policy flags or samples."""
        if not self.review_known.is_set():
            try:
                await asyncio.wait_for(self.review_known.wait(), POLICY_WAIT_S)
            except TimeoutError:
                log.error("no review policy from the serving process after %.0fs: not queueing", POLICY_WAIT_S)
                self.review_known.set()
        await enqueue(store, interactions, feedback, self.review, now=time.time())

    def policy(self) -> tuple[Mapping[str, float], float | None]:
        return self.routes, self.default

    async def drain_seconds(self, fd: int) -> float:
        """Follow the control pipe until it says drain (its seconds) or ends (0: the serving process died)."""
        loop = asyncio.get_running_loop()
        reader = asyncio.StreamReader()
        transport, _ = await loop.connect_read_pipe(
            lambda: asyncio.StreamReaderProtocol(reader), os.fdopen(fd, "rb", buffering=0)
        )
        try:
            while line := await reader.readline():
                message = orjson.loads(line)
                if "drain" in message:
                    return float(message["drain"])
                if "review" in message:
                    self.review = ReviewPolicy.from_json(message["review"])
                    self.review_known.set()
                    continue
                retention = message["retention"]
                self.routes, self.default = retention["routes"], retention["default"]
                self.policy_known.set()
            log.warning("the serving process is gone: stopping")
            return 0.0
        finally:
            transport.close()


async def run(args: argparse.Namespace) -> None:
    store = open_store(os.environ.pop(DSN_ENV))
    control = Control()
    writer = Writer(
        store,
        Cursor(Path(args.journal), owned=True),
        dead_letter=Path(args.dead_letter),
        publish=lambda report: _send(args.report_fd, report),
        after=lambda interactions, feedback: control.queue_for_review(store, interactions, feedback),
    )

    async def retention() -> None:
        await control.policy_known.wait()  # the first policy comes with the config, right after start
        await retention_loop(store, control.policy, interval=args.retention_interval)

    await writer.start()
    expiry = asyncio.create_task(retention(), name="retention")
    drain_s = await control.drain_seconds(args.control_fd)
    expiry.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await expiry
    await writer.stop(drain_s)
    with contextlib.suppress(Exception):
        await asyncio.wait_for(store.close(), CLOSE_S)
    os.close(args.lock_fd)  # the journal is the serving process's alone again


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--journal", required=True, help="the serving process's journal directory")
    parser.add_argument("--lock-fd", type=int, required=True, help="inherited fd holding the journal's lock")
    parser.add_argument("--control-fd", type=int, required=True)
    parser.add_argument("--report-fd", type=int, required=True)
    parser.add_argument("--dead-letter", required=True)
    parser.add_argument("--retention-interval", type=float, default=600.0)
    parser.add_argument("--idle", action="store_true", help="run at SCHED_IDLE priority")
    args = parser.parse_args()
    for sig in (signal.SIGINT, signal.SIGTERM):  # sent to the whole group (Ctrl-C, systemd): the serving process
        signal.signal(sig, signal.SIG_IGN)  # decides, and drains this loader through the control pipe
    if args.idle:
        with contextlib.suppress(AttributeError, OSError):  # not on every platform
            os.sched_setscheduler(0, os.SCHED_IDLE, os.sched_param(0))
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s loader[%(process)d] %(name)s: %(message)s"
    )
    code = 0
    try:
        asyncio.run(run(args))
    except Exception:
        log.exception("capture loader failed")
        code = 1
    logging.shutdown()
    os._exit(code)  # not held up by a store driver thread that did not finish closing


if __name__ == "__main__":
    main()
