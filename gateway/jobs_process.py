"""The jobs child of a serving process: ``JobsProcess`` (run in the serving process) starts it once the config
asks for any job, restarts it if it dies and stops it at shutdown by closing its stdin;
``python -P -m gateway.jobs_child`` (the child, ``gateway/jobs_child.py``) runs ``gateway.jobs.run_jobs``.

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
import sys
from collections.abc import Callable
from pathlib import Path

from gateway.config import Config
from gateway.jobs import jobs_for

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
                sys.executable, "-P", "-m", "gateway.jobs_child", str(self.config_path),
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
        assert proc.stdin is not None
        proc.stdin.close()  # end of file: the child stops
        try:
            await asyncio.wait_for(proc.wait(), grace_s)
        except TimeoutError:
            proc.kill()
            await proc.wait()
