"""Live config reload: polls the file's bytes and listens for SIGHUP; swaps the generation atomically.

Polling the content hash (every ``interval`` seconds) catches every way a file changes: in-place writes,
editors' rename-writes, ``mv`` over it, delete-and-recreate, and Kubernetes ConfigMap ``..data`` symlink
swaps (the path is re-resolved on every read). A file that fails validation is rejected whole, counted,
logged with its key paths, and the previous generation keeps serving.

Usage: ``reloader = Reloader(gw, path)``; ``reloader.start()`` in the lifespan; ``reloader.reload()`` for
``POST /admin/reload``.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import signal
from pathlib import Path

from gateway.config import ConfigError, Loaded, parse_config
from gateway.runtime import Gateway

log = logging.getLogger(__name__)


class Reloader:
    def __init__(self, gw: Gateway, path: Path, *, interval: float = 0.5) -> None:
        self.gw = gw
        self.path = path
        self.interval = interval
        self.seen = ""
        self.task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self.seen = self.gw.generation.loaded.sha256
        self.task = asyncio.ensure_future(self._watch())
        loop = asyncio.get_running_loop()
        with contextlib.suppress(ValueError, RuntimeError, NotImplementedError):  # not the main thread
            loop.add_signal_handler(signal.SIGHUP, self._on_sighup)

    async def stop(self) -> None:
        if self.task is not None:
            self.task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self.task

    def _on_sighup(self) -> None:
        log.info("SIGHUP: reloading %s", self.path)
        with contextlib.suppress(ConfigError):
            self.reload()

    async def _watch(self) -> None:
        while True:
            await asyncio.sleep(self.interval)
            try:
                data = self.path.read_bytes()
            except OSError:
                continue  # mid-swap or deleted: keep serving, look again next tick
            sha = hashlib.sha256(data).hexdigest()
            if sha != self.seen:
                self.seen = sha
                with contextlib.suppress(ConfigError):
                    self._apply(data)

    def reload(self) -> Loaded:
        """Read and apply the file now; raises ``ConfigError`` (after counting it) if it is invalid."""
        try:
            data = self.path.read_bytes()
        except OSError as exc:
            error = ConfigError(self.path, [f"(file) cannot read: {exc.strerror}"])
            self._rejected(error)
            raise error from None
        self.seen = hashlib.sha256(data).hexdigest()
        return self._apply(data)

    def _apply(self, data: bytes) -> Loaded:
        try:
            loaded = parse_config(data, self.path)
        except ConfigError as exc:
            self._rejected(exc)
            raise
        self.gw.apply(loaded)
        log.info("config %s applied (sha256 %s)", self.path, loaded.sha256[:12])
        return loaded

    def _rejected(self, exc: ConfigError) -> None:
        self.gw.metrics.reload_result(False)
        log.error("config reload rejected, previous config keeps serving: %s", exc)
