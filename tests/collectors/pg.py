"""A throwaway PostgreSQL server for the tests: initdb in a temporary directory, 127.0.0.1, a free port.

Missing PostgreSQL binaries fail the test (never a skip): ``.ci/run`` installs them. As root the server
runs as the ``postgres`` user (PostgreSQL refuses to run as root).

Usage (import the fixtures into a test module)::

    from tests.collectors.pg import pg_dsn, postgres_server  # noqa: F401

    def test_x(pg_dsn: str) -> None: ...     # a fresh database per test
"""

from __future__ import annotations

import itertools
import os
import pwd
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.harness import free_port

BIN_DIRS = ("/usr/lib/postgresql/15/bin", "/usr/lib/postgresql/16/bin", "/usr/lib/postgresql/17/bin")
_databases = itertools.count()


def _bin(name: str) -> str:
    for directory in BIN_DIRS:
        path = Path(directory) / name
        if path.exists():
            return str(path)
    found = shutil.which(name)
    if found is None:
        raise RuntimeError(f"PostgreSQL's {name} is not installed (.ci/run installs the postgresql package)")
    return found


class PostgresServer:
    def __init__(self) -> None:
        self.root = Path(tempfile.mkdtemp(prefix="turnout-pg-"))
        self.data = self.root / "data"
        self.port = free_port()
        self.as_user: list[str] = []
        if os.geteuid() == 0:
            user = pwd.getpwnam("postgres")
            os.chown(self.root, user.pw_uid, user.pw_gid)
            self.as_user = ["runuser", "-u", "postgres", "--"]
        self._run(_bin("initdb"), "-D", str(self.data), "-A", "trust", "-U", "turnout", "-E", "UTF8", "--no-sync")
        self.start()

    def _run(self, *args: str) -> None:
        done = subprocess.run([*self.as_user, *args], capture_output=True, text=True, timeout=60)
        if done.returncode != 0:
            raise RuntimeError(f"{args[0]} failed: {done.stdout}{done.stderr}")

    def dsn(self, database: str = "postgres") -> str:
        return f"postgresql://turnout@127.0.0.1:{self.port}/{database}"

    def start(self) -> None:
        options = f"-p {self.port} -k {self.root} -c listen_addresses=127.0.0.1 -c fsync=off -c full_page_writes=off"
        self._run(_bin("pg_ctl"), "-D", str(self.data), "-o", options, "-l", str(self.root / "log"), "-w", "start")

    def stop(self) -> None:
        self._run(_bin("pg_ctl"), "-D", str(self.data), "-m", "fast", "-w", "stop")

    def create_database(self) -> str:
        name = f"t{next(_databases)}"
        self._run(_bin("createdb"), "-h", "127.0.0.1", "-p", str(self.port), "-U", "turnout", name)
        return self.dsn(name)

    def close(self) -> None:
        try:  # thrown away: no shutdown checkpoint of every database the session made
            self._run(_bin("pg_ctl"), "-D", str(self.data), "-m", "immediate", "-w", "stop")
        finally:
            shutil.rmtree(self.root, ignore_errors=True)


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[PostgresServer]:
    server = PostgresServer()
    try:
        yield server
    finally:
        server.close()


@pytest.fixture
def pg_dsn(postgres_server: PostgresServer) -> str:
    return postgres_server.create_database()
