"""The capture loader is a child process of each gateway process: it, not the server, holds the store; a
SIGKILL of the gateway stops it and the next start replays the rest exactly once; a SIGKILL of the loader
alone is noticed, logged and repaired by the gateway without losing anything."""

from __future__ import annotations

import asyncio
import os
import signal
import sqlite3
import time
from pathlib import Path

import httpx

from tests.collectors.pg import PostgresServer, pg_dsn, postgres_server  # noqa: F401
from tests.e2e.capture_client import Seen, export
from tests.e2e.test_store_outage import drained, load, readiness, stored_ids
from tests.fakes.openai_server import FakeOpenAI
from tests.harness import GatewayProcess, write_config

CONFIG = """
server: {{state_dir: {state}}}
{store}
upstreams:
  prod: {{base_url: "{url}", model: m-ok}}
routes:
  bot: {{variants: {{prod: 1}}}}
"""


def config(tmp_path: Path, fake: FakeOpenAI, store: str) -> Path:
    return write_config(tmp_path, CONFIG.format(state=tmp_path / "state", store=store, url=fake.url))


def loader_of(
    gateway_pid: int,
    within: float = 10.0,
    other_than: int | None = None,
    module: bytes = b"collectors.spool.loader_child",
) -> int:
    """The pid of the gateway's capture loader, or its child running ``module`` (a new one when ``other_than``)."""
    deadline = time.monotonic() + within
    while True:
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit() or int(entry.name) == other_than:
                continue
            try:
                ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
                cmdline = (entry / "cmdline").read_bytes()
            except (OSError, IndexError, ValueError):
                continue
            if ppid == gateway_pid and module in cmdline:
                return int(entry.name)
        assert time.monotonic() < deadline, f"no {module.decode()} process"
        time.sleep(0.05)


def gone(pid: int) -> bool:
    """Exited (a zombie waiting for its reaper counts: it no longer runs)."""
    try:
        return (Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]) == "Z"
    except OSError:
        return True


def open_files(pid: int) -> set[str]:
    found = set()
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        try:
            found.add(os.readlink(fd))
        except OSError:
            continue
    return found


def sockets_to(pid: int, port: int) -> set[str]:
    """Socket fds of ``pid`` connected to 127.0.0.1:``port``."""
    inodes = set()
    for line in Path(f"/proc/{pid}/net/tcp").read_text().splitlines()[1:]:
        fields = line.split()
        if int(fields[2].split(":")[1], 16) == port:
            inodes.add(f"socket:[{fields[9]}]")
    return inodes & open_files(pid)


def exactly_once(db: Path, seen: list[Seen]) -> None:
    with sqlite3.connect(db) as conn:
        texts = [
            r[0] for r in conn.execute("SELECT json_extract(record, '$.request.messages[0].content') FROM interactions")
        ]
    assert sorted(stored_ids(db)) == sorted(s.request_id for s in seen)
    assert sorted(texts) == sorted(s.messages[0]["content"] for s in seen)


async def test_the_loader_process_holds_the_store_and_the_server_does_not(
    tmp_path: Path, fake_openai: FakeOpenAI
) -> None:
    db = tmp_path / "t.db"
    cfg = config(tmp_path, fake_openai, f"store: sqlite:///{db}")
    with GatewayProcess(cfg) as gw:
        loader = loader_of(gw.proc.pid)
        assert os.sched_getscheduler(loader) == os.SCHED_IDLE  # a batch never delays a request on a shared core
        async with httpx.AsyncClient(timeout=30) as client:
            assert (await client.get(gw.url + "/readyz")).json()["status"] == "ok"  # a healthy start is not degraded
            before = cpu_seconds(loader)
            seen = await load(client, gw.url, "q", 300)
            await drained(client, gw.url)
        assert str(db) in open_files(loader)
        assert not {f for f in open_files(gw.proc.pid) if f.startswith(str(db))}  # no db, -wal or -shm file
        assert cpu_seconds(loader) > before  # the loader did the storing
        assert str(db).encode() not in proc_file(loader, "cmdline")  # the store URL goes in the environment only
        assert f"TURNOUT_STORE_DSN=sqlite:///{db}".encode() in proc_file(loader, "environ")
        gw.stop(signal.SIGTERM)
    assert gone(loader)
    exactly_once(db, seen)
    assert list((tmp_path / "state" / "journal").iterdir()) == []


def proc_file(pid: int, name: str) -> bytes:
    return Path(f"/proc/{pid}/{name}").read_bytes()


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def test_postgres_password_stays_out_of_argv_and_logs_and_the_server_holds_no_connection(
    tmp_path: Path,
    fake_openai: FakeOpenAI,
    postgres_server: PostgresServer,  # noqa: F811
    pg_dsn: str,  # noqa: F811
) -> None:
    password = "canary-pw-5d1e9a"
    dsn = pg_dsn.replace("turnout@", f"turnout:{password}@")  # the test server trusts; the password is a canary
    cfg = config(tmp_path, fake_openai, "store_env: T_STORE")
    with GatewayProcess(cfg, env={"T_STORE": dsn}) as gw:
        loader = loader_of(gw.proc.pid)
        async with httpx.AsyncClient(timeout=30) as client:
            seen = await load(client, gw.url, "pg", 40)
            await drained(client, gw.url)
        assert sockets_to(loader, postgres_server.port)
        assert not sockets_to(gw.proc.pid, postgres_server.port)
        for pid in (gw.proc.pid, loader):
            assert password.encode() not in proc_file(pid, "cmdline")
        gw.stop(signal.SIGTERM)
    assert password not in gw.output()
    rows = export(cfg, "--format", "raw", env={"T_STORE": dsn})
    assert sorted(r["request_id"] for r in rows) == sorted(s.request_id for s in seen)


async def test_sigkill_of_the_gateway_stops_its_loader_and_the_next_start_replays_once(
    tmp_path: Path, fake_openai: FakeOpenAI
) -> None:
    db = tmp_path / "t.db"
    cfg = config(tmp_path, fake_openai, f"store: sqlite:///{db}")
    gw = GatewayProcess(cfg)
    gw.wait_ready()
    loader = loader_of(gw.proc.pid)
    async with httpx.AsyncClient(timeout=30) as client:
        seen = await load(client, gw.url, "stored", 20)
        await drained(client, gw.url)
        holder = sqlite3.connect(db, timeout=0)
        holder.execute("BEGIN EXCLUSIVE")  # the loader is stuck in a write: the rest spools in the journal
        try:
            seen += await load(client, gw.url, "spooled", 40)
            await readiness(client, gw.url, "degraded")
            gw.stop(signal.SIGKILL)
            deadline = time.monotonic() + 5
            while not gone(loader):
                assert time.monotonic() < deadline, "the loader outlived its gateway"
                await asyncio.sleep(0.02)
        finally:
            holder.rollback()
            holder.close()
        with GatewayProcess(cfg) as again:
            await drained(client, again.url)
            again.stop(signal.SIGTERM)
    exactly_once(db, seen)
    assert list((tmp_path / "state" / "journal").iterdir()) == []


async def test_a_killed_loader_is_restarted_and_nothing_is_lost(tmp_path: Path, fake_openai: FakeOpenAI) -> None:
    db = tmp_path / "t.db"
    cfg = config(tmp_path, fake_openai, f"store: sqlite:///{db}")
    with GatewayProcess(cfg) as gw:
        first = loader_of(gw.proc.pid)
        async with httpx.AsyncClient(timeout=30) as client:
            seen = await load(client, gw.url, "before", 30)
            os.kill(first, signal.SIGKILL)  # perhaps mid-batch
            seen += await load(client, gw.url, "while-restarting", 30)
            second = loader_of(gw.proc.pid, other_than=first)
            seen += await load(client, gw.url, "after", 30)
            await drained(client, gw.url)
            text = (await client.get(gw.url + "/metrics")).text
        assert 'turnout_interactions_captured_total{route="bot"}' in text
        assert f"capture loader exited with code {-signal.SIGKILL}" in gw.output()
        gw.stop(signal.SIGTERM)
    assert gone(second)
    exactly_once(db, seen)
    assert list((tmp_path / "state" / "journal").iterdir()) == []


async def test_a_loader_that_falls_behind_runs_at_normal_priority_until_it_caught_up(
    tmp_path: Path, fake_openai: FakeOpenAI
) -> None:
    """A starved SCHED_IDLE loader (here: stopped) is restarted at normal priority once the spool holds 1/16 of
    its bound, and goes back to SCHED_IDLE once it has caught up; every interaction is stored once."""
    db = tmp_path / "t.db"
    text = CONFIG.format(state=tmp_path / "state", store=f"store: sqlite:///{db}", url=fake_openai.url)
    cfg = write_config(tmp_path, text.replace("server: {", "server: {capture_spool_mb: 0.5, "))
    with GatewayProcess(cfg) as gw:
        idle = loader_of(gw.proc.pid)
        assert os.sched_getscheduler(idle) == os.SCHED_IDLE
        async with httpx.AsyncClient(timeout=30) as client:
            os.kill(idle, signal.SIGSTOP)  # as if a busy core never left it a moment
            seen = await load(client, gw.url, "behind", 60)  # ~57 KB of journal: over 1/16 of the 512 KiB bound
            urgent = loader_of(gw.proc.pid, other_than=idle)
            assert os.sched_getscheduler(urgent) == os.SCHED_OTHER
            await drained(client, gw.url)
            again = loader_of(gw.proc.pid, other_than=urgent)
            deadline = time.monotonic() + 5
            while os.sched_getscheduler(again) != os.SCHED_IDLE:  # set by the loader itself, once started
                assert time.monotonic() < deadline, "the caught-up loader did not go back to SCHED_IDLE"
                await asyncio.sleep(0.02)
            seen += await load(client, gw.url, "after", 10)
            await drained(client, gw.url)
        output = gw.output()
        assert "capture loader falling behind" in output and "capture loader caught up" in output
        assert "exited with code" not in output  # a planned restart is not reported as a crash
        gw.stop(signal.SIGTERM)
    exactly_once(db, seen)


async def test_a_signal_to_the_whole_process_group_stops_the_gateway_not_its_children_first(
    tmp_path: Path, fake_openai: FakeOpenAI
) -> None:
    """Ctrl-C in a terminal, systemd and ``timeout`` signal every process of the group: the children leave the
    decision to the serving process, which drains the loader and ends the jobs child; none is reported as
    exited nor restarted, and everything answered is stored once."""
    (tmp_path / "suite.yaml").write_text("suite: s\ncases: [{messages: [{role: user, content: hi}]}]\n")
    for sig in (signal.SIGTERM, signal.SIGINT):
        db = tmp_path / f"{sig.name}.db"  # a new store: the eval job has never run, so it runs at start
        text = CONFIG.format(state=tmp_path / sig.name, store=f"store: sqlite:///{db}", url=fake_openai.url)
        cfg = write_config(tmp_path, text + "evals: [{suite: suite.yaml, route: bot, every: 1h}]\n")
        with GatewayProcess(cfg) as gw:
            loader, jobs = loader_of(gw.proc.pid), loader_of(gw.proc.pid, module=b"gateway.jobs_child")
            async with httpx.AsyncClient(timeout=30) as client:
                seen = await load(client, gw.url, f"before-{sig.name}", 20)
            deadline = time.monotonic() + 30
            while "job eval:" not in gw.output():  # the child is up: it runs its never-run job at start
                assert time.monotonic() < deadline, gw.output()[-2000:]
                await asyncio.sleep(0.05)
            os.killpg(gw.proc.pid, sig)  # the harness starts it in its own session: the group is its own
            assert gw.proc.wait(20) == 0
            output = gw.output()
            assert "exited" not in output and "restarting" not in output, output[-2000:]
            assert gone(loader) and gone(jobs)
        exactly_once(db, seen)


def test_the_loader_never_imports_from_the_working_directory_nor_sees_the_keys(tmp_path: Path) -> None:
    # security finding 12: the loader child ran "python -m" with the working directory first on sys.path, so a
    # module planted there ran inside it, with every key of the serving process in its environment
    text = CONFIG.format(state=tmp_path / "state", store="store: sqlite:///t.db", url="http://127.0.0.1:9/v1")
    cfg = write_config(tmp_path, text.replace("upstreams:", "auth: {client_keys_env: T_KEYS}\nupstreams:"))
    marker = tmp_path / "planted-ran"
    with GatewayProcess(cfg, env={"T_KEYS": "sk-client-canary-77"}, cwd=tmp_path) as gw:
        first = loader_of(gw.proc.pid)
        # planted after start (the serving process has its modules already): the next loader would take it
        (tmp_path / "orjson.py").write_text(f"open({str(marker)!r}, 'w').write('ran')\nraise ImportError\n")
        os.kill(first, signal.SIGKILL)
        second = loader_of(gw.proc.pid, other_than=first)
        environ = Path(f"/proc/{second}/environ").read_bytes()
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline and not marker.exists():
            time.sleep(0.1)
        assert not marker.exists()
        assert b"sk-client-canary-77" not in environ and b"T_KEYS" not in environ
        assert Path(f"/proc/{second}/cwd").resolve() == tmp_path.resolve()  # relative store paths keep working
        assert httpx.get(gw.url + "/readyz", timeout=5).status_code == 200
