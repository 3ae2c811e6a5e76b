"""How ``turnout demo`` sees an alert fire: a real Prometheus (Debian's ``prometheus`` binary, when installed)
scraping the demo's gateway every second with the shipped rules (``helm/turnout/files/alerts.yaml``) whose
``for:`` is cut to 0s, so nobody waits five minutes (the firing alert, as Prometheus's API gave it, is kept in
``firing.json``); without the binary, the alert's own expression evaluated on the gateway's ``/metrics`` by
the demo. Either way the demo says which.

Usage::

    async with AlertWatch(directory, "127.0.0.1:8080", "http://127.0.0.1:8080", http) as alerts:
        sentence = await alerts.wait("TurnoutInputDrift", within=60)
"""

from __future__ import annotations

import asyncio
import shutil
import socket
import subprocess
import time
from pathlib import Path
from types import TracebackType
from typing import Any

import aiohttp
import orjson
import yaml
from prometheus_client.parser import text_string_to_metric_families

RULES = Path(__file__).resolve().parent.parent / "helm" / "turnout" / "files" / "alerts.yaml"


class AlertWatch:
    def __init__(self, directory: Path, target: str, gateway_url: str, http: aiohttp.ClientSession) -> None:
        self.dir = directory
        self.target = target
        self.gateway_url = gateway_url
        self.http = http
        self.binary = shutil.which("prometheus") if RULES.exists() else None
        self.proc: subprocess.Popen[bytes] | None = None
        self.url = ""

    async def __aenter__(self) -> AlertWatch:
        if self.binary is None:
            return self
        self.dir.mkdir(parents=True, exist_ok=True)
        rules = yaml.safe_load(RULES.read_text())
        for group in rules["groups"]:
            group["interval"] = "1s"
            for rule in group["rules"]:
                rule.pop("for", None)
        (self.dir / "alerts-demo.yaml").write_text(yaml.safe_dump(rules, sort_keys=False))
        config = {
            "global": {"scrape_interval": "1s", "scrape_timeout": "1s", "evaluation_interval": "1s"},
            "rule_files": [str(self.dir / "alerts-demo.yaml")],
            "scrape_configs": [{"job_name": "turnout", "static_configs": [{"targets": [self.target]}]}],
        }
        (self.dir / "prometheus.yml").write_text(yaml.safe_dump(config))
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        self.url = f"http://127.0.0.1:{port}"
        with (self.dir / "prometheus.log").open("wb") as log:
            self.proc = subprocess.Popen(  # noqa: ASYNC220 (fork and exec: nothing to wait for)
                [self.binary, f"--config.file={self.dir / 'prometheus.yml'}", f"--web.listen-address=127.0.0.1:{port}",
                 f"--storage.tsdb.path={self.dir / 'data'}", "--log.level=warn"],
                stdout=log, stderr=subprocess.STDOUT,
            )  # fmt: skip
        return self

    async def __aexit__(self, *exc: type[BaseException] | BaseException | TracebackType | None) -> None:
        if self.proc is not None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()

    async def wait(self, alert: str, *, within: float) -> str:
        """A sentence saying whether and how ``alert`` fired within ``within`` seconds."""
        deadline = time.monotonic() + within
        while time.monotonic() < deadline:
            found = await (self._prometheus(alert) if self.proc is not None else self._expression(alert))
            if found is not None:
                return found
            await asyncio.sleep(0.5)
        return f"{alert} did not fire within {within:.0f}s"

    async def _prometheus(self, alert: str) -> str | None:
        try:
            async with self.http.get(f"{self.url}/api/v1/alerts") as reply:
                alerts: list[dict[str, Any]] = (await reply.json())["data"]["alerts"]
        except (aiohttp.ClientError, KeyError, ValueError):
            return None
        for found in alerts:
            if found["labels"].get("alertname") == alert and found["state"] == "firing":
                (self.dir / "firing.json").write_bytes(orjson.dumps(found, option=orjson.OPT_INDENT_2))
                labels = ", ".join(f"{k}={v}" for k, v in sorted(found["labels"].items()) if k != "alertname")
                return (
                    f"Prometheus fires {alert} ({labels}): {found['annotations'].get('summary', '')} "
                    "(the shipped rule, with its `for:` cut to 0s for the demo)"
                )
        return None

    async def _expression(self, alert: str) -> str | None:
        """TurnoutInputDrift's expression: a route's input drift score above its drift.max_psi."""
        async with self.http.get(f"{self.gateway_url}/metrics") as reply:
            text = await reply.text()
        score: dict[str, float] = {}
        limit: dict[str, float] = {}
        for family in text_string_to_metric_families(text):
            for sample in family.samples:
                route = sample.labels.get("route", "")
                if sample.name == "turnout_drift_score" and sample.labels.get("signal") == "input":
                    score[route] = max(score.get(route, 0.0), sample.value)
                elif sample.name == "turnout_retraining_threshold" and sample.labels.get("signal") == "max_psi":
                    limit[route] = sample.value
        for route, value in score.items():
            if route in limit and value > limit[route]:
                return (
                    f"{alert}'s rule expression holds for route {route} (score {value:.2f} > max_psi {limit[route]}), "
                    "evaluated by the demo on /metrics: Prometheus is not installed here"
                )
        return None
