"""The Helm chart, proven offline: `helm lint --strict`, `helm template` of every scenario under ci/,
each rendered object validated against the Kubernetes OpenAPI schemas (kubernetes-validate, strict),
Prometheus Operator objects against their structure and promtool, and the values schema's rejections.

Needs the helm binary at .ci/bin/helm (`bash .ci/tools.sh`); a missing binary fails, it does not skip.
"""

from __future__ import annotations

import functools
import json
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import jsonschema
import kubernetes_validate
import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
CHART = REPO / "helm" / "turnout"
HELM = REPO / ".ci" / "bin" / "helm"
RELEASE = "turnout"
NAMESPACE = "ml"
# the chart's kubeVersion floor and the newest schemas kubernetes-validate ships
KUBE_VERSIONS = ("1.27.0", kubernetes_validate.utils.latest_version())
SCENARIOS = {
    "defaults": CHART / "ci" / "default-values.yaml",
    "production": CHART / "ci" / "production-values.yaml",
    "sqlite-pvc": CHART / "ci" / "sqlite-pvc-values.yaml",
}
OPERATOR_KINDS = {"ServiceMonitor", "PrometheusRule"}
SECRETISH = re.compile(r"(?i)(key|token|password|secret|dsn)")
Doc = dict[str, Any]


def helm(*args: str) -> subprocess.CompletedProcess[str]:
    assert HELM.is_file() and os.access(HELM, os.X_OK), f"{HELM} missing: run `bash .ci/tools.sh`"
    return subprocess.run([str(HELM), *args], capture_output=True, text=True, timeout=60, check=False)


def template(*values: Path) -> subprocess.CompletedProcess[str]:
    flags = [arg for path in values for arg in ("-f", str(path))]
    return helm("template", RELEASE, str(CHART), "--namespace", NAMESPACE, *flags)


@functools.cache
def rendered(scenario: str) -> tuple[Doc, ...]:
    result = template(SCENARIOS[scenario])
    assert result.returncode == 0, result.stderr
    return tuple(doc for doc in yaml.safe_load_all(result.stdout) if doc)


def one(docs: tuple[Doc, ...], kind: str, name: str | None = None) -> Doc:
    found = [d for d in docs if d["kind"] == kind and (name is None or d["metadata"]["name"] == name)]
    assert len(found) == 1, f"expected one {kind} {name or ''}, got {len(found)}"
    return found[0]


def turnout_yaml(docs: tuple[Doc, ...]) -> Doc:
    return yaml.safe_load(one(docs, "ConfigMap", f"{RELEASE}-config")["data"]["turnout.yaml"])


def container(docs: tuple[Doc, ...]) -> Doc:
    (c,) = one(docs, "Deployment")["spec"]["template"]["spec"]["containers"]
    return c


def mount_of(docs: tuple[Doc, ...], path: str) -> tuple[Doc, Doc]:
    """The volumeMount whose mountPath contains `path`, and its volume."""
    pod = one(docs, "Deployment")["spec"]["template"]["spec"]
    mounts = [m for m in container(docs)["volumeMounts"] if Path(path).is_relative_to(m["mountPath"])]
    mount = max(mounts, key=lambda m: len(m["mountPath"]))
    (volume,) = [v for v in pod["volumes"] if v["name"] == mount["name"]]
    return mount, volume


# --- lint and Kubernetes schemas -------------------------------------------------------------------------


@pytest.mark.parametrize("scenario", SCENARIOS)
def test_lint_strict(scenario: str) -> None:
    result = helm("lint", "--strict", str(CHART), "-f", str(SCENARIOS[scenario]))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "1 chart(s) linted, 0 chart(s) failed" in result.stdout


@pytest.mark.parametrize("version", KUBE_VERSIONS)
@pytest.mark.parametrize("scenario", SCENARIOS)
def test_manifests_match_kubernetes_schemas(scenario: str, version: str) -> None:
    checked = 0
    for doc in rendered(scenario):
        if doc["kind"] in OPERATOR_KINDS:
            continue
        try:
            kubernetes_validate.validate(doc, version, strict=True)
        except kubernetes_validate.ValidationError as exc:
            path = ".".join(str(p) for p in exc.path)
            pytest.fail(f"{doc['kind']}/{doc['metadata']['name']} at {path}: {exc.message}")
        checked += 1
    assert checked >= 4


def test_scenarios_render_the_expected_objects() -> None:
    kinds = {name: sorted(d["kind"] for d in rendered(name)) for name in SCENARIOS}
    assert kinds["defaults"] == ["ConfigMap", "Deployment", "Service", "ServiceAccount"]
    assert kinds["production"] == sorted(
        [
            "ConfigMap",
            "ConfigMap",
            "Deployment",
            "HorizontalPodAutoscaler",
            "PodDisruptionBudget",
            "PrometheusRule",
            "Service",
            "ServiceAccount",
            "ServiceMonitor",
        ]
    )
    assert kinds["sqlite-pvc"] == sorted(
        [
            "ConfigMap",
            "Deployment",
            "PersistentVolumeClaim",
            "PodDisruptionBudget",
            "Service",
            "ServiceAccount",
        ]
    )
    for name in SCENARIOS:
        assert all(d["metadata"]["labels"]["app.kubernetes.io/instance"] == RELEASE for d in rendered(name))


# --- the pod ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("scenario", SCENARIOS)
def test_pod_is_locked_down(scenario: str) -> None:
    docs = rendered(scenario)
    pod = one(docs, "Deployment")["spec"]["template"]["spec"]
    c = container(docs)
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["runAsUser"] != 0
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    assert pod["automountServiceAccountToken"] is False
    assert c["securityContext"]["readOnlyRootFilesystem"] is True
    assert c["securityContext"]["allowPrivilegeEscalation"] is False
    assert c["securityContext"]["capabilities"]["drop"] == ["ALL"]
    assert c["resources"]["requests"] and c["resources"]["limits"]["memory"]
    # no secret value anywhere in what the chart renders
    assert not [d for d in docs if d["kind"] == "Secret"]
    for env in c.get("env", []):
        assert not (SECRETISH.search(env["name"]) and "value" in env), env


@pytest.mark.parametrize("scenario", SCENARIOS)
def test_pod_serves_the_mounted_config(scenario: str) -> None:
    docs = rendered(scenario)
    c = container(docs)
    args = c["args"]
    assert args[:3] == ["serve", "-c", "/etc/turnout/turnout.yaml"]
    port = args[args.index("--port") + 1]
    assert c["ports"] == [{"name": "http", "containerPort": int(port), "protocol": "TCP"}]
    # a whole-ConfigMap directory mount: kubelet never updates a subPath mount, and the gateway reloads
    # when the `..data` symlink in that directory is swapped
    mount, volume = mount_of(docs, "/etc/turnout/turnout.yaml")
    assert "subPath" not in mount and mount["readOnly"] is True
    assert volume["configMap"]["name"] == f"{RELEASE}-config"
    config = turnout_yaml(docs)
    assert config["server"]["port"] == int(port)
    # state_dir sits on a writable volume under the read-only root filesystem
    mount, volume = mount_of(docs, config["server"]["state_dir"])
    assert not mount.get("readOnly") and ({"emptyDir", "persistentVolumeClaim"} & volume.keys())
    mount, volume = mount_of(docs, "/tmp")
    assert mount["mountPath"] == "/tmp" and "emptyDir" in volume
    # no config checksum on the pod template: an edit must reload live, not roll the pods
    annotations = one(docs, "Deployment")["spec"]["template"]["metadata"].get("annotations", {})
    assert not [k for k in annotations if "checksum" in k]


@pytest.mark.parametrize("scenario", SCENARIOS)
def test_pod_probes_and_graceful_shutdown(scenario: str) -> None:
    docs = rendered(scenario)
    pod = one(docs, "Deployment")["spec"]["template"]["spec"]
    c = container(docs)
    assert c["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "http"}
    assert c["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "http"}
    assert c["startupProbe"]["httpGet"] == {"path": "/healthz", "port": "http"}
    command = c["lifecycle"]["preStop"]["exec"]["command"]
    assert command[0] == "sleep" and int(command[1]) > 0
    longest_request = max([up.get("timeout_s", 60) for up in turnout_yaml(docs)["upstreams"].values()], default=60)
    assert pod["terminationGracePeriodSeconds"] > int(command[1]) + longest_request


def test_defaults_serve_a_demo_route_from_sqlite_without_keys() -> None:
    docs = rendered("defaults")
    deployment = one(docs, "Deployment")
    assert deployment["spec"]["replicas"] == 1
    assert "envFrom" not in container(docs)
    config = turnout_yaml(docs)
    assert config["upstreams"] == {"demo": {"provider": "dummy", "model": "demo"}}
    assert config["routes"] == {"demo": {"variants": {"demo": 100}}}
    assert config["store"].startswith("sqlite:////")
    _, volume = mount_of(docs, config["store"].removeprefix("sqlite:///"))
    assert "emptyDir" in volume
    affinity = deployment["spec"]["template"]["spec"]["affinity"]["podAntiAffinity"]
    assert affinity["preferredDuringSchedulingIgnoredDuringExecution"]


def test_production_shares_postgresql_and_scales() -> None:
    docs = rendered("production")
    deployment = one(docs, "Deployment")
    pod_labels = deployment["spec"]["template"]["metadata"]["labels"]
    assert "replicas" not in deployment["spec"], "the HorizontalPodAutoscaler owns the replica count"
    assert deployment["spec"]["strategy"]["rollingUpdate"]["maxUnavailable"] == 0
    hpa = one(docs, "HorizontalPodAutoscaler")
    assert hpa["spec"]["minReplicas"] == 3 and hpa["spec"]["maxReplicas"] >= 3
    assert hpa["spec"]["scaleTargetRef"] == {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "name": deployment["metadata"]["name"],
    }
    pdb = one(docs, "PodDisruptionBudget")
    assert pdb["spec"]["selector"]["matchLabels"].items() <= pod_labels.items()
    assert container(docs)["envFrom"] == [{"secretRef": {"name": "turnout-secrets"}}]
    config = turnout_yaml(docs)
    assert config["store_env"] == "TURNOUT_STORE" and "store" not in config
    assert config["auth"] == {"client_keys_env": "TURNOUT_API_KEYS", "admin_key_env": "TURNOUT_ADMIN_KEY"}
    assert set(config["routes"]) == {"support-bot"}, "user routes replace the demo route"
    pod = deployment["spec"]["template"]["spec"]
    assert pod["affinity"]["podAntiAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"]
    (spread,) = pod["topologySpreadConstraints"]
    assert spread["labelSelector"]["matchLabels"].items() <= pod_labels.items()
    service = one(docs, "Service")
    assert service["spec"]["selector"].items() <= pod_labels.items()
    assert service["spec"]["ports"][0]["targetPort"] == "http"


def test_sqlite_on_a_persistent_volume_claim() -> None:
    docs = rendered("sqlite-pvc")
    deployment = one(docs, "Deployment")
    assert deployment["spec"]["replicas"] == 1
    assert deployment["spec"]["strategy"] == {"type": "Recreate"}, "one writer on the volume at a time"
    pvc = one(docs, "PersistentVolumeClaim")
    assert pvc["spec"]["resources"]["requests"]["storage"] == "20Gi"
    assert pvc["spec"]["storageClassName"] == "standard"
    assert pvc["metadata"]["annotations"]["helm.sh/resource-policy"] == "keep"
    config = turnout_yaml(docs)
    for path in (config["store"].removeprefix("sqlite:///"), config["server"]["state_dir"]):
        _, volume = mount_of(docs, path)
        assert volume["persistentVolumeClaim"]["claimName"] == pvc["metadata"]["name"]


# --- Prometheus Operator objects and the dashboard ---------------------------------------------------------

OPERATOR_SCHEMAS = yaml.safe_load((Path(__file__).parent / "operator_crds.yaml").read_text())


def _seconds(duration: str) -> float:
    units = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800, "y": 31536000}
    return sum(float(n) * units[u] for n, u in re.findall(r"(\d+)(ms|[smhdwy])", duration))


def test_service_monitor_scrapes_the_service() -> None:
    docs = rendered("production")
    monitor = one(docs, "ServiceMonitor")
    jsonschema.validate(monitor, OPERATOR_SCHEMAS["ServiceMonitor"])
    service = one(docs, "Service")
    assert monitor["spec"]["selector"]["matchLabels"].items() <= service["metadata"]["labels"].items()
    assert monitor["spec"]["namespaceSelector"]["matchNames"] == [NAMESPACE]
    (endpoint,) = monitor["spec"]["endpoints"]
    assert endpoint["port"] in [p["name"] for p in service["spec"]["ports"]]
    assert endpoint["path"] == "/metrics"
    assert _seconds(endpoint["scrapeTimeout"]) <= _seconds(endpoint["interval"])
    assert monitor["metadata"]["labels"]["release"] == "kube-prometheus-stack"


def test_prometheus_rule_is_alerts_yaml_and_passes_promtool(tmp_path: Path) -> None:
    rule = one(rendered("production"), "PrometheusRule")
    jsonschema.validate(rule, OPERATOR_SCHEMAS["PrometheusRule"])
    source = yaml.safe_load((CHART / "files" / "alerts.yaml").read_text())
    assert rule["spec"]["groups"] == source["groups"], "one source for the rules"
    alerts = {r["alert"] for g in rule["spec"]["groups"] for r in g["rules"] if "alert" in r}
    assert {"TurnoutHighErrorRate", "TurnoutConfigReloadFailing", "TurnoutModelStale"} <= alerts
    rules_file = tmp_path / "rules.yaml"
    rules_file.write_text(yaml.safe_dump({"groups": rule["spec"]["groups"]}))
    result = subprocess.run(
        ["promtool", "check", "rules", str(rules_file)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"SUCCESS: {sum(len(g['rules']) for g in source['groups'])} rules found" in result.stdout


def test_dashboard_configmap_carries_the_grafana_json_through_the_symlink() -> None:
    link = CHART / "dashboards" / "turnout.json"
    assert link.is_symlink(), "one source: grafana/turnout.json, linked into the chart"
    assert link.resolve() == (REPO / "grafana" / "turnout.json").resolve()
    docs = rendered("production")
    dashboards = one(docs, "ConfigMap", f"{RELEASE}-dashboards")
    assert dashboards["metadata"]["labels"]["grafana_dashboard"] == "1"
    assert dashboards["metadata"]["namespace"] == "monitoring"
    shipped = dashboards["data"]["turnout.json"]
    assert json.loads(shipped) == json.loads((REPO / "grafana" / "turnout.json").read_text())
    assert json.loads(shipped)["uid"]


# --- values the chart must refuse --------------------------------------------------------------------------

SCHEMA = "values don't meet the specifications of the schema"
INVALID: list[tuple[str, Doc, str]] = [
    ("sqlite-with-3-replicas", {"replicaCount": 3}, "at '/store/type': value must be 'postgresql'"),
    ("negative-replicas", {"replicaCount": -1}, "at '/replicaCount': minimum: got -1, want 0"),
    (
        "sqlite-with-autoscaling",
        {"autoscaling": {"enabled": True}},
        "at '/store/type': value must be 'postgresql'",
    ),
    (
        "volume-shared-by-replicas",
        {
            "replicaCount": 2,
            "store": {"type": "postgresql"},
            "existingSecret": "s",
            "persistence": {"enabled": True},
        },
        "at '/persistence/enabled': value must be false",
    ),
    (
        "postgresql-without-secret",
        {"store": {"type": "postgresql"}},
        "at '/existingSecret': minLength: got 0, want 1",
    ),
    (
        "upstream-key-inline",
        {"config": {"upstreams": {"x": {"api_key": "sk-live"}}}},
        "'api_key' does not match pattern '_env$'",
    ),
    (
        "client-keys-inline",
        {"config": {"auth": {"client_keys": "k1,k2"}}},
        "'client_keys' does not match pattern '_env$'",
    ),
    (
        "env-secret-inline",
        {"extraEnv": [{"name": "OPENAI_API_KEY", "value": "sk-live"}]},
        "at '/extraEnv/0': missing property 'valueFrom'",
    ),
    ("misspelt-key", {"replicas": 3}, "additional properties 'replicas' not allowed"),
    (
        "port-set-by-chart",
        {"config": {"server": {"port": 9000}}},
        "at '/config/server': additional properties 'port' not allowed",
    ),
    ("privileged-port", {"containerPort": 80}, "at '/containerPort': minimum: got 80"),
    ("root-pod", {"podSecurityContext": {"runAsNonRoot": False}}, "at '/podSecurityContext/runAsNonRoot'"),
    (
        "unknown-store",
        {"store": {"type": "mysql"}},
        "at '/store/type': value must be one of 'sqlite', 'postgresql'",
    ),
    (
        "store-dsn-in-config",
        {"config": {"store": "postgresql://turnout:hunter2@db/turnout"}},
        "config.store is set by the chart: use store.type",
    ),
    (
        "grace-shorter-than-prestop",
        {"terminationGracePeriodSeconds": 5, "preStopSleepSeconds": 10},
        "terminationGracePeriodSeconds must be longer than preStopSleepSeconds",
    ),
]


@pytest.mark.parametrize(("values", "message"), [c[1:] for c in INVALID], ids=[c[0] for c in INVALID])
def test_invalid_values_are_rejected(tmp_path: Path, values: Doc, message: str) -> None:
    path = tmp_path / "values.yaml"
    path.write_text(yaml.safe_dump(values))
    result = template(path)
    assert result.returncode != 0, result.stdout
    assert message in result.stderr
    assert "hunter2" not in result.stderr and "sk-live" not in result.stderr
    if message.startswith("at '"):
        assert SCHEMA in result.stderr


# --- the rendered config file is one the gateway accepts ---------------------------------------------------


def env_names(config: Doc) -> set[str]:
    """Every environment variable the config names (`*_env` keys, at any depth)."""
    found: set[str] = set()
    for key, value in config.items():
        if isinstance(value, dict):
            found |= env_names(value)
        elif key.endswith("_env") and isinstance(value, str):
            found.add(value)
    return found


def turnout_check(config: Doc, tmp_path: Path) -> subprocess.CompletedProcess[str]:
    path = tmp_path / "turnout.yaml"
    path.write_text(yaml.safe_dump(config))
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    # what the pod gets from existingSecret; the DSN is a valid one so store checks pass
    env.update({name: "postgresql://turnout:x@127.0.0.1:5432/turnout" for name in env_names(config)})
    return subprocess.run(
        [sys.executable, "-m", "gateway", "check", str(path)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        env=env,
    )


@pytest.mark.parametrize("scenario", SCENARIOS)
def test_rendered_config_passes_turnout_check(scenario: str, tmp_path: Path) -> None:
    config = turnout_yaml(rendered(scenario))
    result = turnout_check(config, tmp_path)
    assert result.returncode == 0, result.stderr
    assert "ok (" in result.stdout


def test_turnout_check_catches_what_the_values_schema_cannot(tmp_path: Path) -> None:
    values = tmp_path / "values.yaml"
    values.write_text(yaml.safe_dump({"config": {"routes": {"bot": {"variants": {"missing": 100}}}}}))
    result = template(values)
    assert result.returncode == 0, result.stderr
    docs = tuple(doc for doc in yaml.safe_load_all(result.stdout) if doc)
    check = turnout_check(turnout_yaml(docs), tmp_path)
    assert check.returncode != 0
    assert "routes.bot.variants: unknown upstream 'missing'" in check.stderr


def notes(scenario: str) -> str:
    """NOTES.txt as `helm install` prints it; a client-side dry run needs no cluster."""
    result = helm(
        "install", RELEASE, str(CHART), "--namespace", NAMESPACE, "--dry-run=client", "-f", str(SCENARIOS[scenario])
    )
    assert result.returncode == 0, result.stderr
    return result.stdout.partition("\nNOTES:\n")[2]


def test_notes_name_the_routes_and_warn_about_unsafe_defaults() -> None:
    defaults, production = notes("defaults"), notes("production")
    assert "Routes (the `model` clients ask for): demo\n" in defaults
    assert "Routes (the `model` clients ask for): support-bot\n" in production
    assert f"port-forward svc/{RELEASE} 8080:80" in defaults
    for warning in ("SQLite on an emptyDir", "client_keys_env is not set"):
        assert warning in defaults and warning not in production
    assert "SQLite on an emptyDir" not in notes("sqlite-pvc")


def test_runbook_urls_take_the_configured_base(tmp_path: Path) -> None:
    extra = tmp_path / "runbook-values.yaml"
    extra.write_text("prometheusRule:\n  runbookBaseUrl: https://github.com/acme/turnout/blob/v1/\n")
    result = template(SCENARIOS["production"], extra)
    assert result.returncode == 0, result.stderr
    rule = one(tuple(d for d in yaml.safe_load_all(result.stdout) if d), "PrometheusRule")
    alerts = [r for g in rule["spec"]["groups"] for r in g["rules"] if "alert" in r]
    assert len(alerts) >= 10
    for r in alerts:
        expected = f"https://github.com/acme/turnout/blob/v1/docs/runbook.md#{r['alert'].lower()}"
        assert r["annotations"]["runbook_url"] == expected
