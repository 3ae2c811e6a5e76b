"""The jobs child of a serving process: ``JobsProcess`` (run in the serving process) starts it once the config
asks for any job, restarts it if it dies and stops it at shutdown; ``python -P -m gateway.jobs_process``
(the child) runs ``gateway.jobs.run_jobs`` until its stdin reaches end of file (the serving process is gone,
SIGKILL included) or it gets SIGTERM.

Jobs run in their own process so that an eval run, a dataset build or a report never takes CPU from the
event loop serving requests. The child reads the config file itself (and re-reads it when it changes), so
it sees every edit the serving process sees; secrets reach it through its environment, as they reach
``turnout serve``.

Usage (lifespan): ``jobs = JobsProcess(loaded.path, lambda: gw.generation.config)``; ``jobs.start()``;
``await jobs.close()``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import socket
import sys
from collections.abc import Callable
from pathlib import Path

from collectors.store import open_store
from gateway.config import Config, ConfigError, Loaded, load_config
from gateway.jobs import jobs_for, run_jobs

log = logging.getLogger(__name__)

RESTART_S = (0.5, 30.0)  # back-off between restarts of a child that keeps dying
CHECK_S = 1.0  # how often the serving process looks for a config that now asks for jobs
_ROOT = str(Path(__file__).resolve().parent.parent)


class JobsProcess:
    def __init__(self, config_path: Path, config: Callable[[], Config]) -> None:
        self.config_path = Path(config_path).resolve()
        self._config = config
        self.proc: asyncio.subprocess.Process | None = None
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._supervise(), name="jobs-process")

    async def _supervise(self) -> None:
        delay = RESTART_S[0]
        while not jobs_for(self._config()):  # noqa: ASYNC110 (a config generation is not an event)
            await asyncio.sleep(CHECK_S)
        while True:
            path = os.pathsep.join(p for p in (_ROOT, os.environ.get("PYTHONPATH")) if p)
            self.proc = await asyncio.create_subprocess_exec(
                sys.executable, "-P", "-m", "gateway.jobs_process", str(self.config_path),
                # the serving process's working directory: a relative sqlite:///turnout.db, state_dir and
                # datasets_dir mean the same files here (-P and PYTHONPATH find the code)
                stdin=asyncio.subprocess.PIPE, env={**os.environ, "PYTHONPATH": path},
            )  # fmt: skip
            code = await self.proc.wait()
            log.error("jobs process exited with %s; restarting it in %.1fs", code, delay)
            await asyncio.sleep(delay)
            delay = min(delay * 2, RESTART_S[1])

    async def close(self, grace_s: float = 5.0) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        proc = self.proc
        if proc is None or proc.returncode is not None:
            return
        proc.terminate()
        try:
            await asyncio.wait_for(proc.wait(), grace_s)
        except TimeoutError:
            proc.kill()
            await proc.wait()


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
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    loop.add_signal_handler(signal.SIGINT, stop.set)
    loop.add_reader(sys.stdin.fileno(), lambda: stop.set() if not os.read(sys.stdin.fileno(), 512) else None)
    try:
        await run_jobs(load, store, holder=f"{socket.gethostname()}:{os.getpid()}", stop=stop)
    finally:
        await store.close()


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    asyncio.run(_main(sys.argv[1]))
