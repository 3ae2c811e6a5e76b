"""The processes a benchmark run starts: the mock upstream and every subject in front of it.

Each subject is a process pinned to the proxy core with `taskset`, answering `POST /v1/chat/completions`
for the model `bench` by calling the mock. `direct` is the mock itself (no process of its own).
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

BENCH_DIR = Path(__file__).resolve().parent
REPO_ROOT = BENCH_DIR.parent
PROBE_BODY = json.dumps({"model": "bench", "messages": [{"role": "user", "content": "hi"}]}).encode()


@dataclass
class Subject:
    name: str
    url: str
    process: subprocess.Popen[bytes] | None  # None: `direct`, nothing between client and mock


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def spawn(
    command: list[str], cpu: int | str, log: Path, *, cwd: Path | None = None, env: dict[str, str] | None = None
) -> subprocess.Popen[bytes]:
    """Start `command` pinned to `cpu`, its output in `log` (taskset execs, so the pid is the command's)."""
    with log.open("ab") as out:
        return subprocess.Popen(
            ["taskset", "-c", str(cpu), *command],
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            cwd=cwd,
            env={**os.environ, **(env or {})},
            start_new_session=True,
        )


def stop(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is not None:
        return
    os.killpg(process.pid, signal.SIGTERM)
    try:
        process.wait(timeout=10)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait(timeout=10)


def _answers(url: str, body: bytes | None) -> bool:
    request = urllib.request.Request(url, data=body, headers={"content-type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=5) as response:
            response.read()
            return bool(response.status == 200)
    except (urllib.error.URLError, ConnectionError, TimeoutError):
        return False


def wait_ready(
    url: str, process: subprocess.Popen[bytes] | None, timeout: float, *, body: bytes | None = PROBE_BODY
) -> float:
    """Poll `url` (POST `body`, or GET if None) until it answers 200; seconds waited. Raises if never."""
    start = time.perf_counter()
    while time.perf_counter() - start < timeout:
        if process is not None and process.poll() is not None:
            raise RuntimeError(f"exited with status {process.returncode} before it was ready")
        if _answers(url, body):
            return time.perf_counter() - start
        time.sleep(0.005)
    raise RuntimeError(f"not ready after {timeout:.0f} s: {url}")


def start_mock(workdir: Path, cpu: int, events: int, delay_ms: float) -> tuple[subprocess.Popen[bytes], str]:
    port = free_port()
    command = [sys.executable, str(BENCH_DIR / "mock_upstream.py"), "--port", str(port)]
    command += ["--events", str(events), "--event-delay-ms", str(delay_ms)]
    process = spawn(command, cpu, workdir / "mock.log")
    url = f"http://127.0.0.1:{port}"
    wait_ready(url + "/v1/chat/completions", process, 10)
    return process, url


def start_passthrough(workdir: Path, cpu: int, mock_url: str) -> Subject:
    port = free_port()
    command = [sys.executable, str(BENCH_DIR / "passthrough.py"), "--port", str(port), "--upstream", mock_url]
    process = spawn(command, cpu, workdir / "passthrough.log")
    url = f"http://127.0.0.1:{port}"
    wait_ready(url + "/v1/chat/completions", process, 30)
    return Subject("passthrough", url, process)


def turnout_config(
    workdir: Path,
    name: str,
    mock_url: str,
    port: int,
    *,
    capture: bool,
    shadow: bool,
    drift: bool = False,
    http_client: str | None = None,
) -> Path:
    """Write a Turnout config: route `bench` -> upstream `mock`; capture at the default or off; one shadow; a
    drift check every minute; the upstream HTTP client when not the default."""
    home = workdir / name
    home.mkdir(exist_ok=True)
    route = ["  bench:", "    variants: {mock: 100}"]
    if not capture:
        route.append("    capture: {sample: 0}")
    if shadow:
        route.append("    shadows: [{upstream: mock-shadow, sample: 1.0}]")
    if drift:
        route.append("    drift: {reference: window:30d, every: 1m}")
    lines = [
        f"server: {{host: 127.0.0.1, port: {port}, state_dir: {home / 'state'}"
        + (f", http_client: {http_client}}}" if http_client else "}"),
        f"store: sqlite:///{home / 'turnout.db'}",
        "upstreams:",
        f"  mock: {{provider: openai, base_url: {mock_url}/v1, model: mock-model}}",
        f"  mock-shadow: {{provider: openai, base_url: {mock_url}/v1, model: mock-shadow}}",
        "routes:",
        *route,
    ]
    path = home / "turnout.yaml"
    path.write_text("\n".join(lines) + "\n")
    return path


def turnout_command(config: Path, port: int, workers: int = 1) -> list[str]:
    return [
        sys.executable,
        "-m",
        "gateway",
        "serve",
        "-c",
        str(config),
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--workers",
        str(workers),
    ]


def turnout_env(gateway_root: Path) -> dict[str, str]:
    return {"PYTHONPATH": str(gateway_root)}


def start_turnout(
    workdir: Path,
    cpu: int | str,
    mock_url: str,
    gateway_root: Path,
    name: str,
    *,
    capture: bool,
    shadow: bool,
    drift: bool = False,
    workers: int = 1,
    http_client: str | None = None,
) -> Subject:
    port = free_port()
    config = turnout_config(
        workdir, name, mock_url, port, capture=capture, shadow=shadow, drift=drift, http_client=http_client
    )
    command = turnout_command(config, port, workers)
    process = spawn(command, cpu, workdir / f"{name}.log", cwd=config.parent, env=turnout_env(gateway_root))
    url = f"http://127.0.0.1:{port}"
    wait_ready(url + "/readyz", process, 60, body=None)
    wait_ready(url + "/v1/chat/completions", process, 10)
    return Subject(name, url, process)


def measure_turnout_startup(workdir: Path, cpu: int, mock_url: str, gateway_root: Path) -> float:
    """Seconds from process start to the first 200 of /readyz, capture and metrics at their defaults, the
    checkout's modules byte-compiled first as the image (Dockerfile) and CI (.ci/run) do: where
    PYTHONDONTWRITEBYTECODE is set, each start would otherwise compile them again (~0.25 s of CPU)."""
    compile_command = [sys.executable, "-m", "compileall", "-q", "gateway", "collectors", "policies"]
    subprocess.run(compile_command, cwd=gateway_root, check=True, stdout=subprocess.DEVNULL)
    port = free_port()
    config = turnout_config(workdir, "turnout-startup", mock_url, port, capture=True, shadow=False)
    start = time.perf_counter()
    process = spawn(
        turnout_command(config, port),
        cpu,
        workdir / "turnout-startup.log",
        cwd=config.parent,
        env=turnout_env(gateway_root),
    )
    try:
        wait_ready(f"http://127.0.0.1:{port}/readyz", process, 60, body=None)
        return time.perf_counter() - start
    finally:
        stop(process)


NGINX_CONF = """\
daemon off;
master_process off;
worker_processes 1;
pid {home}/nginx.pid;
error_log {home}/error.log warn;
events {{ worker_connections 4096; }}
http {{
  access_log off;
  client_body_temp_path {home}/body;
  proxy_temp_path {home}/proxy;
  fastcgi_temp_path {home}/fastcgi;
  uwsgi_temp_path {home}/uwsgi;
  scgi_temp_path {home}/scgi;
  upstream mock {{ server {mock}; keepalive 128; }}
  server {{
    listen 127.0.0.1:{port};
    location / {{
      proxy_pass http://mock;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
      proxy_buffering off;
    }}
  }}
}}
"""


def start_nginx(workdir: Path, cpu: int, mock_url: str) -> Subject | None:
    binary = shutil.which("nginx") or ("/usr/sbin/nginx" if Path("/usr/sbin/nginx").exists() else None)
    if binary is None:
        return None
    home = workdir / "nginx"
    home.mkdir(exist_ok=True)
    port = free_port()
    conf = home / "nginx.conf"
    conf.write_text(NGINX_CONF.format(home=home, mock=mock_url.removeprefix("http://"), port=port))
    command = [binary, "-p", str(home), "-e", str(home / "error.log"), "-c", str(conf)]
    process = spawn(command, cpu, workdir / "nginx.log")
    url = f"http://127.0.0.1:{port}"
    wait_ready(url + "/v1/chat/completions", process, 10)
    return Subject("nginx", url, process)


def start_litellm(workdir: Path, cpu: int, mock_url: str, binary: str | None) -> Subject | None:
    """The LiteLLM proxy (`--num_workers 1`, no database); None when no working proxy binary is found."""
    binary = binary or shutil.which("litellm")
    if binary is None:
        return None
    home = workdir / "litellm"
    home.mkdir(exist_ok=True)
    config = home / "litellm.yaml"
    config.write_text(
        "model_list:\n"
        "  - model_name: bench\n"
        f"    litellm_params: {{model: openai/mock-model, api_base: {mock_url}/v1, api_key: sk-bench}}\n"
    )
    port = free_port()
    command = [
        binary,
        "--config",
        str(config),
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--num_workers",
        "1",
    ]
    # no auth, like the other subjects (Turnout runs without client keys here)
    env = {
        "LITELLM_LOCAL_MODEL_COST_MAP": "True",
        "LITELLM_LOG": "ERROR",
        "LITELLM_DANGEROUSLY_PERMIT_WEAK_OR_UNSET_MASTER_KEY": "true",
    }
    process = spawn(command, cpu, workdir / "litellm.log", cwd=home, env=env)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_ready(url + "/v1/chat/completions", process, 120)
    except RuntimeError as exc:
        stop(process)
        print(f"litellm: skipped ({exc}; see {workdir / 'litellm.log'})", file=sys.stderr)
        return None
    return Subject("litellm", url, process)
