"""A ConfigMap edit reaches a running gateway without a restart: the chart's rendered turnout.yaml is laid
out the way kubelet mounts a ConfigMap (`turnout.yaml -> ..data/turnout.yaml`, `..data -> ..<timestamp>`)
and replaced the way kubelet replaces it (new timestamped directory, atomic rename of the `..data` link).
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import yaml
from prometheus_client.parser import text_string_to_metric_families

from tests.deploy.test_helm import template, turnout_yaml
from tests.harness import free_port

UPSTREAMS = {"prod-v3": {"provider": "dummy", "model": "v3"}, "cand-v4": {"provider": "dummy", "model": "v4"}}


class ConfigMapVolume:
    """A directory written like kubelet's AtomicWriter writes a ConfigMap volume."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.root.mkdir()
        self.generation = 0

    def publish(self, files: dict[str, bytes]) -> None:
        self.generation += 1
        stamp = self.root / f"..2026_11_26_08_00_{self.generation:02d}.{self.generation:09d}"
        stamp.mkdir()
        for name, data in files.items():
            (stamp / name).write_bytes(data)
        old = (self.root / "..data").resolve() if (self.root / "..data").exists() else None
        tmp = self.root / "..data_tmp"
        tmp.symlink_to(stamp.name)
        tmp.rename(self.root / "..data")
        for name in files:
            if not (self.root / name).is_symlink():
                (self.root / name).symlink_to(f"..data/{name}")
        if old is not None:
            shutil.rmtree(old)


def rendered_config(tmp_path: Path, weights: dict[str, int]) -> bytes:
    """turnout.yaml as the chart renders it for these weights, with the pod's paths moved under tmp_path."""
    values = tmp_path / "values.yaml"
    values.write_text(yaml.safe_dump({"config": {"upstreams": UPSTREAMS, "routes": {"bot": {"variants": weights}}}}))
    result = template(values)
    assert result.returncode == 0, result.stderr
    config = turnout_yaml(tuple(doc for doc in yaml.safe_load_all(result.stdout) if doc))
    config["server"]["state_dir"] = str(tmp_path / "state")
    config["store"] = f"sqlite:///{tmp_path / 'turnout.db'}"
    return yaml.safe_dump(config).encode()


def scrape(url: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    text = httpx.get(url + "/metrics", timeout=5).text
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def serving(url: str) -> tuple[set[str], float, float]:
    """(sha256 of the config served, weight of cand-v4 in route bot, failed reloads)."""
    samples = scrape(url)
    shas = {dict(labels)["sha256"] for (name, labels), v in samples.items() if name == "turnout_config_info" and v}
    weight = samples.get(
        ("turnout_experiment_weight", (("experiment", "bot"), ("route", "bot"), ("variant", "cand-v4"))), -1.0
    )
    failures = samples.get(("turnout_config_reloads_total", (("result", "failure"),)), 0.0)
    return shas, weight, failures


def wait_for(condition: Callable[[set[str], float, float], bool], url: str, timeout: float) -> float:
    start = time.monotonic()
    while time.monotonic() - start < timeout:
        if condition(*serving(url)):
            return time.monotonic() - start
        time.sleep(0.05)
    raise AssertionError(f"not reached in {timeout}s; serving {serving(url)}")


@contextlib.contextmanager
def gateway(config: Path, log: Path) -> Iterator[tuple[subprocess.Popen[bytes], str]]:
    """`python -m gateway serve -c <config>` as the pod runs it, ready, stopped with SIGTERM."""
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    command = [sys.executable, "-m", "gateway", "serve", "-c", str(config), "--host", "127.0.0.1", "--port", str(port)]
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2])}
    with log.open("wb") as out, subprocess.Popen(command, env=env, cwd=log.parent, stdout=out, stderr=out) as proc:
        try:
            deadline = time.monotonic() + 20
            while not _ready(url):
                assert proc.poll() is None and time.monotonic() < deadline, log.read_text(errors="replace")
                time.sleep(0.05)
            yield proc, url
        finally:
            proc.terminate()
            try:
                proc.wait(20)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(5)


def _ready(url: str) -> bool:
    with contextlib.suppress(httpx.HTTPError):
        return httpx.get(url + "/readyz", timeout=1).status_code == 200
    return False


def test_configmap_symlink_swap_shifts_traffic_without_restart(tmp_path: Path) -> None:
    volume = ConfigMapVolume(tmp_path / "etc-turnout")
    first = rendered_config(tmp_path, {"prod-v3": 90, "cand-v4": 10})
    volume.publish({"turnout.yaml": first})
    with gateway(volume.root / "turnout.yaml", tmp_path / "gateway.log") as (proc, url):
        pid = proc.pid
        assert serving(url) == ({hashlib.sha256(first).hexdigest()}, 10.0, 0.0)

        # helm upgrade with new weights: kubelet swaps ..data to a new timestamped directory
        second = rendered_config(tmp_path, {"prod-v3": 50, "cand-v4": 50})
        volume.publish({"turnout.yaml": second})
        took = wait_for(lambda shas, weight, _: weight == 50.0, url, timeout=5)
        assert took < 2.0, f"new weights served after {took:.2f}s"
        assert serving(url)[0] == {hashlib.sha256(second).hexdigest()}

        # a broken edit is refused: the previous config keeps serving, the failure is counted
        broken = second.replace(b"cand-v4: 50", b"cand-v5: 50")
        volume.publish({"turnout.yaml": broken})
        wait_for(lambda shas, weight, failures: failures == 1.0, url, timeout=5)
        assert serving(url) == ({hashlib.sha256(second).hexdigest()}, 50.0, 1.0)
        assert proc.pid == pid and proc.poll() is None
        answer = httpx.post(
            url + "/v1/chat/completions",
            json={"model": "bot", "messages": [{"role": "user", "content": "hi"}]},
            timeout=10,
        )
        assert answer.status_code == 200, answer.text
