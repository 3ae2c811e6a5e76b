"""Run a real gateway for tests: uvicorn on 127.0.0.1 in a thread (fast), or ``python -m gateway serve`` in a
subprocess (for signals, crashes and multi-process cases).

Usage::

    cfg = write_config(tmp_path, CONFIG.format(upstream=fake.url))
    with served(cfg) as gw:            # in-thread uvicorn, fresh CollectorRegistry
        httpx.post(gw.url + "/v1/chat/completions", json=...)
    with GatewayProcess(cfg) as proc:  # subprocess; proc.url, proc.stop(sig)
        ...
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Awaitable, Iterator
from pathlib import Path

import httpx
import uvicorn
from prometheus_client import CollectorRegistry, generate_latest

from collectors.metrics import Metrics
from collectors.record import Interaction
from collectors.sink import Sink
from gateway.app import capture_sink, create_app
from gateway.config import load_config

ROOT = Path(__file__).resolve().parent.parent
PROTOCOL = "gateway.server_protocol:BoundedHttpToolsProtocol"  # what turnout serve runs


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def write_config(directory: Path, text: str, name: str = "turnout.yaml") -> Path:
    path = directory / name
    path.write_text(text)
    return path


class RecordingSink(Sink):
    """The served gateway's real sink, also keeping every interaction it is handed once ``seen`` is a list
    (``tests.gateway.interactions.tap``): primaries and shadows alike."""

    seen: list[Interaction] | None = None

    def finish(self, it: Interaction) -> Awaitable[None] | None:
        if self.seen is not None:
            self.seen.append(it)
        return super().finish(it)


class Served:
    def __init__(
        self, url: str, registry: CollectorRegistry, server: uvicorn.Server, config: Path, sink: RecordingSink
    ) -> None:
        self.url = url
        self.registry = registry
        self.server = server
        self.config = config
        self.sink = sink

    def metrics(self) -> str:
        return generate_latest(self.registry).decode()

    def metric(self, name: str, **labels: str) -> float:
        """The sample value of ``name`` with exactly these labels (0.0 when absent)."""
        value = self.registry.get_sample_value(name, labels)
        return 0.0 if value is None else value


class _Uvicorn(uvicorn.Server):
    """uvicorn's server, whose main loop also wakes as soon as the test asks it to exit, and whose shutdown does
    not pause 0.1 s once every connection is gone (uvicorn's own looks every 0.1 s and then pauses 0.1 s: that
    much idle waiting at the end of every served gateway, hundreds of times a run)."""

    _loop: asyncio.AbstractEventLoop | None = None
    _wake: asyncio.Event | None = None

    async def main_loop(self) -> None:  # uvicorn's, with the 0.1 s sleep cut short by exit_now()
        self._wake = asyncio.Event()
        self._loop = asyncio.get_running_loop()
        counter = 0
        while not await self.on_tick(counter):
            counter = (counter + 1) % 864000
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), 0.1)

    async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
        """uvicorn's, but its fixed 0.1 s pause after asking the connections to close ends once none is left."""
        for server in self.servers:
            server.close()
        for connection in list(self.server_state.connections):
            connection.shutdown()
        pause_until = time.monotonic() + 0.1
        # uvicorn sets no event when its last connection goes
        while (self.server_state.connections or self.server_state.tasks) and time.monotonic() < pause_until:  # noqa: ASYNC110
            await asyncio.sleep(0.005)
        try:
            async with asyncio.timeout(self.config.timeout_graceful_shutdown):
                await self._wait_tasks_to_complete()
        except TimeoutError:
            for task in self.server_state.tasks:
                task.cancel(msg="Task cancelled, timeout graceful shutdown exceeded")
        if not self.force_exit:
            await self.lifespan.shutdown()

    def exit_now(self) -> None:
        self.should_exit = True
        if self._loop is not None and self._wake is not None:
            with contextlib.suppress(RuntimeError):  # its loop already closed
                self._loop.call_soon_threadsafe(self._wake.set)


@contextlib.contextmanager
def served(
    config: Path, *, reload_interval: float = 0.1, env: dict[str, str] | None = None, http: str = PROTOCOL
) -> Iterator[Served]:
    """A gateway app served by uvicorn in a background thread with its own event loop, with the server protocol
    ``turnout serve`` uses (``http="httptools"``: uvicorn's own, as another server would be)."""
    loaded = load_config(config, environ={**os.environ, **(env or {})})
    registry = CollectorRegistry()
    metrics = Metrics(registry)
    sink = RecordingSink(metrics, capture_sink(loaded, metrics).capture)
    app = create_app(loaded, registry=registry, reload_interval=reload_interval, sink=sink)
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    server = _Uvicorn(
        uvicorn.Config(
            app, loop="uvloop", http=http, log_level="warning", access_log=False, timeout_graceful_shutdown=5
        )
    )
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started:
        if time.monotonic() > deadline or not thread.is_alive():
            raise RuntimeError("gateway did not start")
        time.sleep(0.01)
    try:
        yield Served(f"http://127.0.0.1:{port}", registry, server, config, sink)
    finally:
        server.exit_now()
        thread.join(10)
        sock.close()


class GatewayProcess:
    """``python -m gateway serve`` in a subprocess; waits for /readyz."""

    def __init__(
        self, config: Path, *, env: dict[str, str] | None = None, args: tuple[str, ...] = (), cwd: Path | None = None
    ) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = (cwd or config.parent) / f"gateway-{self.port}.log"
        full_env = {**os.environ, "PYTHONPATH": str(ROOT), **(env or {})}
        command = [
            sys.executable,
            "-m",
            "gateway",
            "serve",
            "-c",
            str(config),
            "--host",
            "127.0.0.1",
            "--port",
            str(self.port),
            *args,
        ]
        with self.log.open("wb") as log:  # the child keeps its own descriptor
            self.proc = subprocess.Popen(  # a session of its own: whatever it leaves behind is killed at exit
                command,
                env=full_env,
                cwd=cwd or config.parent,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )

    def wait_ready(self, timeout: float = 60.0) -> None:  # importing litellm alone takes seconds on a busy machine
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"gateway exited {self.proc.returncode}: {self.output()}")
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(self.url + "/readyz", timeout=1).status_code == 200:
                    return
            time.sleep(0.05)
        raise RuntimeError(f"gateway not ready after {timeout}s: {self.output()}")

    def output(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 20.0) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            return self.proc.wait(5)

    def __enter__(self) -> GatewayProcess:
        try:
            self.wait_ready()
        except BaseException:
            self.__exit__(RuntimeError)
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        try:
            self.stop(signal.SIGKILL if exc[0] else signal.SIGTERM)
        finally:  # workers, loaders or a resource tracker orphaned by a SIGKILL above or in the test
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(self.proc.pid, signal.SIGKILL)
