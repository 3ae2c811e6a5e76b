"""The jobs child of a serving process (``python -P -m gateway.jobs_child CONFIG``, started by
``gateway.jobs_process.JobsProcess``): runs ``gateway.jobs.run_jobs`` until its stdin reaches end of file, when
the serving process closed it or is gone (SIGKILL included).

SIGTERM and SIGINT are ignored from the first line on: sent to the whole process group (Ctrl-C in a terminal,
systemd, ``timeout``) they reach the serving process too, which decides; so the child is neither cut mid-job nor
reported dead and restarted while the server shuts down.
"""

from __future__ import annotations

import signal

if __name__ == "__main__":  # before the imports below: they take a while in a fresh interpreter
    for _sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(_sig, signal.SIG_IGN)

import asyncio
import logging
import os
import socket
import sys

from collectors.datasets import build  # noqa: F401  (dataset jobs run it; the serving process imports it lazily)
from collectors.store import open_store
from gateway import evals  # noqa: F401  (eval jobs too: imported here at start, out of every run's time)
from gateway.config import ConfigError, Loaded, load_config
from gateway.jobs import run_jobs

log = logging.getLogger(__name__)


class _Reloading:
    """The config generation the child runs with: re-read when the file changes, kept when the edit is bad."""

    def __init__(self, path: str) -> None:
        self.path = path
        self.loaded = load_config(path)
        self._stamp = self._stat()

    def _stat(self) -> tuple[int, int]:
        st = os.stat(self.path)
        return st.st_mtime_ns, st.st_size

    def __call__(self) -> Loaded:
        try:
            stamp = self._stat()
            if stamp != self._stamp:
                self._stamp = stamp
                self.loaded = load_config(self.path)
        except (OSError, ConfigError) as exc:
            log.warning("jobs: keeping the previous config: %s", exc)
        return self.loaded


async def _main(path: str) -> None:
    load = _Reloading(path)
    store = open_store(load.loaded.secrets.store_dsn)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    loop.add_reader(sys.stdin.fileno(), lambda: stop.set() if not os.read(sys.stdin.fileno(), 512) else None)
    try:
        await run_jobs(load, store, holder=f"{socket.gethostname()}:{os.getpid()}", stop=stop)
    finally:
        await store.close()


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    asyncio.run(_main(sys.argv[1]))
