"""The config file: validation with key paths, all errors at once, `turnout check`, YAML fuzzing (CF-2)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from collectors.store.postgres import PostgresStore
from gateway.config import ConfigError, load_config, parse_config
from gateway.config_view import redacted
from tests.harness import ROOT

GOOD = """
server: {port: 9000}
auth: {client_keys_env: T_KEYS, admin_key_env: T_ADMIN}
store_env: T_STORE
upstreams:
  prod: {base_url: "http://127.0.0.1:1/v1", model: m1, api_key_env: T_UP, trained_at: 2026-09-01}
  cand: {provider: dummy}
routes:
  bot:
    variants: {prod: 90, cand: 10}
    shadows: [{upstream: cand, sample: 0.25}]
    retraining: {max_model_age: 30d, min_feedback_score: 0.8, min_ratings: 5}
"""
ENV = {"T_KEYS": "k1, k2", "T_ADMIN": "adm", "T_STORE": "postgresql://u:pw@db/x", "T_UP": "sk-up"}


def errors_of(text: str, env: dict[str, str] | None = None) -> list[str]:
    with pytest.raises(ConfigError) as info:
        parse_config(text.encode(), "t.yaml", ENV if env is None else env)
    return info.value.errors


def test_good_file_loads_with_defaults_and_secrets() -> None:
    loaded = parse_config(GOOD.encode(), "t.yaml", ENV)
    config = loaded.config
    assert config.server.port == 9000 and config.server.max_body_mb == 32
    assert config.experiment("bot") == "bot"
    assert config.routes["bot"].sticky_by == "user"
    assert config.routes["bot"].retraining and config.routes["bot"].retraining.max_model_age == 30 * 86400
    assert config.upstreams["prod"].trained_at and config.upstreams["prod"].trained_at.year == 2026
    assert loaded.secrets.client_keys == frozenset({"k1", "k2"})
    assert loaded.secrets.store_dsn == "postgresql://u:pw@db/x"
    assert len(loaded.sha256) == 64


def test_example_config_is_valid() -> None:
    load_config(ROOT / "examples" / "turnout.yaml", environ={})


def test_independent_errors_are_all_reported_with_key_paths() -> None:
    text = """
upstreams:
  a: {base_url: "http://x/v1", model: m, colour: red}
routes:
  r1: {variants: {a: 50, x: 50}}
  r2: {variants: {a: -1}, sticky_by: cookie}
  r3: {variants: {a: 1}, shadows: [{upstream: nope, sample: 1.5}]}
  r4: {variants: {a: 1}, retraining: {max_model_age: soon}}
"""
    errors = errors_of(text)
    joined = "\n".join(errors)
    assert "upstreams.a.colour: unknown key" in joined
    assert "routes.r2.variants.a:" in joined
    assert "routes.r3.shadows.0.sample:" in joined
    assert "routes.r4.retraining.max_model_age: invalid duration 'soon'" in joined
    assert len(errors) >= 4


def test_cross_reference_and_env_errors_are_reported_together() -> None:
    text = GOOD.replace("{prod: 90, cand: 10}", "{prod: 90, x: 10}")
    errors = errors_of(text, env={"T_KEYS": "k"})
    assert "routes.bot.variants: unknown upstream 'x'" in errors
    assert "auth.admin_key_env: environment variable T_ADMIN is not set" in errors
    assert "upstreams.prod.api_key_env: environment variable T_UP is not set" in errors
    assert "store_env: environment variable T_STORE is not set" in errors


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("", "the file is empty"),
        ("just a string", "the file is a str"),
        ("[1, 2]", "the file is a list"),
        ("upstreams: {a: [", "(YAML) line"),
        ("routes: {r: {variants: {a: 0}}}\nupstreams: {a: {provider: dummy}}", "weights must not all be 0"),
        ("routes: {}\nupstreams: {a: {model: m}}", "base_url is required"),
        ("routes: {}\nupstreams: {a: {base_url: 'ftp://x', model: m}}", "base_url must start with http"),
        ("routes: {}", "upstreams: Field required"),
        ("!!python/object/apply:os.system ['true']", "(YAML)"),
    ],
)
def test_invalid_files_are_rejected_with_a_clear_message(text: str, expected: str) -> None:
    assert expected in "\n".join(errors_of(text))


def test_redacted_config_names_env_vars_and_hides_inline_passwords() -> None:
    text = GOOD.replace("store_env: T_STORE", "store: postgresql://turnout:hunter2@db:5432/t")
    data = redacted(parse_config(text.encode(), "t.yaml", ENV).config)
    flat = str(data)
    assert (
        "hunter2" not in flat
        and "sk-up" not in flat
        and "adm" not in flat.replace("admin_key_env", "").replace("'admin': ", "")
    )
    assert data["upstreams"]["prod"]["api_key_env"] == "T_UP"
    assert data["store"] == "postgresql://turnout:***@db:5432/t"


def run_cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "gateway", *args],
        capture_output=True,
        text=True,
        timeout=60,
        env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin", **(env or {})},
    )


def test_check_command_accepts_a_good_file(tmp_path: Path) -> None:
    path = tmp_path / "good.yaml"
    path.write_text(GOOD)
    result = run_cli("check", str(path), env=ENV)
    assert result.returncode == 0, result.stderr
    assert "ok (2 upstreams, 1 routes)" in result.stdout


def test_check_command_prints_every_error_with_path_and_fails(tmp_path: Path) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text(GOOD.replace("{prod: 90, cand: 10}", "{prod: 90, x: 10}"))
    result = run_cli("check", str(path), env={**ENV, "T_UP": ""})
    assert result.returncode != 0
    lines = result.stderr.strip().splitlines()
    assert f"{path}: routes.bot.variants: unknown upstream 'x'" in lines
    assert f"{path}: upstreams.prod.api_key_env: environment variable T_UP is not set" in lines
    assert result.stdout == ""


def test_check_lists_schema_reference_and_env_errors_at_once_and_no_env_skips_the_env(tmp_path: Path) -> None:
    path = tmp_path / "bad.yaml"
    bad = GOOD.replace("{prod: 90, cand: 10}", "{prod: 90, x: 10}\n    sticky_by: cookie")
    path.write_text(bad.replace("{upstream: cand,", "{upstream: nope,"))
    lines = run_cli("check", str(path), env={**ENV, "T_UP": ""}).stderr.strip().splitlines()
    assert f"{path}: routes.bot: sticky_by: expected user, api_key, header:<name> or none, got 'cookie'" in lines
    assert f"{path}: routes.bot.variants: unknown upstream 'x'" in lines
    assert f"{path}: routes.bot.shadows.0.upstream: unknown upstream 'nope'" in lines
    assert f"{path}: upstreams.prod.api_key_env: environment variable T_UP is not set" in lines
    assert len(lines) == 4
    offline = run_cli("check", "--no-env", str(path)).stderr.strip().splitlines()
    assert len(offline) == 3 and not any("environment variable" in line for line in offline)
    path.write_text(GOOD)
    assert run_cli("check", str(path)).returncode != 0
    result = run_cli("check", "--no-env", str(path))
    assert result.returncode == 0 and "ok (2 upstreams, 1 routes)" in result.stdout


def test_check_missing_file_and_help(tmp_path: Path) -> None:
    result = run_cli("check", str(tmp_path / "nope.yaml"))
    assert result.returncode != 0 and "cannot read" in result.stderr
    for command in ("serve", "check"):
        shown = run_cli(command, "--help")
        assert shown.returncode == 0 and "usage: turnout" in shown.stdout


def test_serve_refuses_an_invalid_file(tmp_path: Path) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text("routes: {r: {variants: {x: 1}}}\nupstreams: {}")
    result = run_cli("serve", "-c", str(path), "--port", "1")
    assert result.returncode != 0
    assert "routes.r.variants: unknown upstream 'x'" in result.stderr


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.binary(max_size=300) | st.text(max_size=300).map(str.encode))
def test_yaml_fuzzing_never_crashes(data: bytes) -> None:
    try:
        parse_config(data, "fuzz.yaml", {})
    except ConfigError as exc:
        assert exc.errors


@settings(max_examples=200, deadline=None)
@given(st.integers(0, len(GOOD)), st.text(max_size=20))
def test_mutated_good_file_either_loads_or_explains(cut: int, noise: str) -> None:
    text = GOOD[:cut] + noise + GOOD[cut:]
    try:
        parse_config(text.encode(), "fuzz.yaml", ENV)
    except ConfigError as exc:
        assert all(":" in line for line in exc.errors)


def test_yaml_11_booleans_stay_names() -> None:
    text = "upstreams: {on: {provider: dummy}, no: {provider: dummy}}\nroutes: {yes: {variants: {on: 1, no: 1}}}"
    config = parse_config(text.encode(), "t.yaml", {}).config
    assert set(config.upstreams) == {"on", "no"} and set(config.routes) == {"yes"}
    assert parse_config(b"upstreams: {}\nroutes: {}\nserver: {port: 1}", "t.yaml", {}).config.server.port == 1


@pytest.mark.parametrize("value", [",", " ", " , ,", "\t"])
def test_client_keys_that_parse_to_no_key_are_an_error_not_an_open_gateway(value: str) -> None:
    # security finding 6: "," or " " used to load as "no client keys", and any token was accepted
    env = {"T_KEYS": value, "T_ADMIN": "a", "T_UP": "u", "T_STORE": "sqlite:///x.db"}
    assert "auth.client_keys_env: environment variable T_KEYS holds no key" in errors_of(GOOD, env=env)


def test_admin_config_and_store_logs_mask_every_url_credential() -> None:
    # security finding 11: a password holding "@", user info in a base URL and credentials in query parameters
    # all came through /admin/config and the store's log name in clear
    dsn = "postgresql://turnout:p@ss-canary@db:5432/x?sslmode=require&password=qp-canary"
    text = GOOD.replace("http://127.0.0.1:1/v1", "https://bob:ui-canary@api.example.com/v1?api-key=ak-canary")
    text = text.replace("store_env: T_STORE", f"store: '{dsn}'")
    shown = json.dumps(redacted(parse_config(text.encode(), "t.yaml", ENV).config))
    logged = PostgresStore(dsn).name
    for canary in ("p@ss-canary", "ss-canary", "qp-canary", "ui-canary", "ak-canary"):
        assert canary not in shown and canary not in logged
    assert "postgresql://turnout:***@db:5432/x?sslmode=require&password=***" in shown
    assert "https://bob:***@api.example.com/v1?api-key=***" in shown
    assert logged == "postgres:turnout:***@db:5432/x?sslmode=require&password=***"
