"""The config file: frozen pydantic models, loading, and errors that name their key path.

Usage: ``config = load_config(Path("turnout.yaml"))`` raises ``ConfigError`` listing every problem as
``routes.support-bot.variants: unknown upstream 'x'``. Secrets are named by environment variable only;
``resolve_secrets`` reads them and is the only place their values enter the process.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Literal

import yaml
from cronsim import CronSim, CronSimError
from pydantic import Field, ValidationError, field_validator, model_validator

from gateway.body_limits import BodyLimitsKb
from gateway.config_refs import env_errors, reference_errors, schema_errors
from gateway.config_types import DURATION_PATTERN, Date, Duration, EnvName, Share, duration_seconds
from gateway.config_types import Model as _Model
from gateway.rollout_config import Analysis, Rollout, rollout_errors


class Server(_Model):
    host: str = "0.0.0.0"  # listen address
    port: int = Field(8080, ge=1, le=65535)  # listen port
    max_body_mb: float = Field(32, gt=0)  # bigger request bodies get 413 (the OpenAI endpoints)
    body_limits_kb: BodyLimitsKb = BodyLimitsKb()  # the other endpoints' limits (feedback, /admin/*, the rest)
    state_dir: str = "./turnout-state"  # journal, metrics files: must be writable and survive a crash
    capture_spool_mb: float = Field(1024, gt=0)  # journal bytes waiting for the store before drops
    max_in_flight: int = Field(4096, ge=1)  # proxied requests at once; beyond: fast 503 with Retry-After
    drain_s: float = Field(25, ge=0)  # on SIGTERM, in-flight requests get this long before streams are cut
    heartbeat_s: float = Field(15, ge=0)  # SSE comment while a stream waits for its first token; 0: never
    stream_idle_s: float = Field(120, gt=0)  # a stream silent this long is broken off
    body_timeout_s: float = Field(30, gt=0)  # the whole request body must arrive within this (else 408)
    max_n: int = Field(8, ge=1)  # the most choices ("n") one request may ask for (else 400)
    head_timeout_s: float = Field(10, gt=0)  # the request line and headers must arrive within this (else closed)
    max_connections: int = Field(8192, ge=1)  # open connections and requests at once; beyond: 503
    max_large_bodies: int = Field(8, ge=1)  # request bodies over 1 MB read and parsed at once; beyond: fast 503
    http_client: Literal["httptools", "aiohttp", "pyqwest"] = "httptools"  # upstream calls' client; read at start


class NamedClient(_Model):
    """One application calling the gateway: its key, the routes it may use (all when unset), its rate limit."""

    key_env: EnvName  # env var holding this client's key
    routes: list[str] | None = None  # routes it may use (others: 404)
    rpm: int | None = Field(None, ge=1, le=1_000_000)  # requests per minute, per replica


class Auth(_Model):
    client_keys_env: EnvName | None = None  # env var: comma-separated client keys; unset: no client auth
    admin_key_env: EnvName | None = None  # env var: the admin key (/admin/*); unset: admin routes closed
    clients: dict[str, NamedClient] = {}  # named clients (applications)
    caller_key_env: EnvName | None = None  # keys the stored caller hashes; default: the admin key


class UpstreamPrice(_Model):
    input_per_1m: float = Field(ge=0)  # USD per million prompt (input) tokens
    output_per_1m: float = Field(ge=0)  # USD per million completion (output) tokens


class Upstream(_Model):
    provider: Literal["openai", "litellm", "dummy"] = "openai"  # openai: pass-through, litellm, dummy: demo answers
    base_url: str | None = None  # OpenAI-compatible base URL (.../v1)
    model: str = "dummy"  # model name sent upstream
    api_key_env: EnvName | None = None  # env var holding the upstream's key
    timeout_s: float = Field(60, gt=0)  # whole-call timeout of one attempt
    connect_timeout_s: float = Field(5, gt=0)  # connect timeout (retried like a refused connection)
    retries: int = Field(2, ge=0, le=10)  # more attempts on connect errors, 429 and 5xx, before the first byte
    trained_at: Date | None = None  # training date: TurnoutModelStale
    price: UpstreamPrice | None = None  # else litellm's price list, where it knows the model
    dataset: str | None = None  # NAME@vN it was trained on (lineage)
    answers: dict[str, str] = {}  # dummy only: the right answer to these prompts (others are echoed)
    wrong_share: Share = 0.0  # dummy only: this share of prompts (the same ones on every upstream) answered wrong
    deprecated_at: Date | None = None  # the provider's announced retirement: TurnoutModelDeprecated 30 days ahead

    @model_validator(mode="after")
    def _needs_base_url(self) -> Upstream:
        if self.provider != "dummy" and (self.answers or self.wrong_share):
            raise ValueError("answers and wrong_share are for provider dummy only")
        if self.provider == "openai" and not self.base_url:
            raise ValueError("base_url is required for provider openai")
        if self.base_url and not re.match(r"^https?://", self.base_url):
            raise ValueError(f"base_url must start with http:// or https://, got {self.base_url!r}")
        return self


class Shadow(_Model):
    upstream: str  # the candidate upstream
    sample: Share  # share of requests mirrored


class ShadowLimits(_Model):
    """How much shadow work may run: in flight per shadow upstream (per worker), per call, per body, at shutdown."""

    max_in_flight: int = Field(64, ge=1)  # shadow calls open per shadow upstream (per worker); beyond: dropped
    timeout_s: float = Field(30, gt=0)  # each shadow call's timeout
    max_body_mb: float = Field(4, gt=0)  # bigger bodies are not mirrored
    drain_s: float = Field(5, ge=0)  # how long shutdown waits for running shadows


class CaptureConfig(_Model):
    sample: Share = 1.0  # share of interactions stored
    redact: list[Literal["email", "phone"]] = []  # secrets are always masked


class Retraining(_Model):
    max_model_age: Duration | None = None  # TurnoutModelStale past this
    min_feedback_score: Share | None = None  # TurnoutFeedbackDegraded below
    min_eval_score: Share | None = None  # TurnoutEvalScoreLow below
    min_ratings: int = Field(20, ge=0)  # ratings in 6h before feedback counts


class Drift(_Model):
    """Input and output drift checks of a route (``reference: window:30d`` or ``dataset``)."""

    reference: str = "window:30d"  # window:<duration> or dataset
    every: Annotated[Duration, Field(gt=0)] = 3600.0  # how often the check runs
    max_psi: float = Field(0.2, gt=0)  # TurnoutInputDrift/OutputDrift above

    @field_validator("reference")
    @classmethod
    def _reference(cls, value: str) -> str:
        if value != "dataset" and not (value.startswith("window:") and DURATION_PATTERN.match(value[7:])):
            raise ValueError(f"expected window:<duration> (e.g. window:30d) or dataset, got {value!r}")
        return value

    def window_s(self) -> float | None:
        """The reference window's span, None for ``reference: dataset``."""
        return None if self.reference == "dataset" else duration_seconds(self.reference[7:])


class RouteConfig(_Model):
    variants: dict[str, Annotated[float, Field(ge=0)]]  # {upstream: weight}; one entry: plain routing
    experiment: str | None = None  # names the split (default: route)
    sticky_by: str = "user"  # user, api_key, header:<name> or none
    shadows: list[Shadow] = []  # candidates mirrored a share of requests
    fallbacks: list[str] = []  # upstreams tried in order when the variant fails before the first byte
    timeout_s: float | None = Field(None, gt=0)  # deadline of all attempts; default: the largest upstream timeout_s
    capture: CaptureConfig = CaptureConfig()
    store_retention: Duration | None = None  # this route's own retention
    retraining: Retraining | None = None  # thresholds of the retraining alerts
    drift: Drift | None = None  # input and output drift checks
    analysis: Analysis | None = None  # how an A/B split is judged
    rollout: Rollout | None = None  # a guarded rollout of a candidate

    @model_validator(mode="after")
    def _check(self) -> RouteConfig:
        if not self.variants:
            raise ValueError("variants: at least one upstream is required")
        if sum(self.variants.values()) <= 0:
            raise ValueError("variants: weights must not all be 0")
        if not (self.sticky_by in ("user", "api_key", "none") or re.match(r"^header:[A-Za-z0-9-]+$", self.sticky_by)):
            raise ValueError(f"sticky_by: expected user, api_key, header:<name> or none, got {self.sticky_by!r}")
        return self


class ReviewFlag(_Model):
    """What queues an interaction for a person besides the random sample (any one matching is enough)."""

    label: Literal["good", "bad"] | None = None  # feedback label that queues
    max_score: Share | None = None  # feedback score at most this queues
    max_shadow_agreement: Share | None = None  # shadow agreement below this queues


class Review(_Model):
    sample: Share = 0.0  # share of captured primary chat interactions queued at random
    flag: ReviewFlag = ReviewFlag()  # what queues besides the random sample
    max_backlog: int = Field(1000, ge=1)  # TurnoutReviewBacklog: a route's queue above this for a day


class DatasetInclude(_Model):
    reviewed: Literal["approved"] | None = "approved"  # null: feedback filters alone (rejected items never)
    label: Literal["good", "bad"] | None = None  # only this feedback label
    min_score: Share | None = None  # only feedback scores at least this
    since: Duration | None = None  # only newer than this


class Dataset(_Model):
    route: str  # the route whose interactions it takes
    include: DatasetInclude = DatasetInclude()  # which interactions
    every: str | None = None  # scheduled builds: a duration (7d) or a five-field cron line

    @model_validator(mode="after")
    def _check(self) -> Dataset:
        inc = self.include
        if inc.reviewed is None and inc.label is None and inc.min_score is None:
            raise ValueError("include: needs reviewed, label or min_score (else every interaction would be in it)")
        if self.every is not None and " " not in self.every.strip():
            duration_seconds(self.every)
        elif self.every is not None:
            try:
                CronSim(self.every, dt.datetime.now(dt.UTC))
            except CronSimError as exc:
                raise ValueError(f"every: expected a duration such as 7d or a five-field cron line: {exc}") from None
        return self


DatasetName = Annotated[str, Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")]


class EvalSchedule(_Model):
    """``evals:`` entries: a suite run on a schedule against every serving variant and shadow of a route."""

    suite: str  # path relative to the config file
    route: str  # its serving variants and shadows are evaluated
    every: Duration | None = None  # a duration (6h)
    cron: str | None = None  # or a five-field cron line
    concurrency: int = Field(16, ge=1, le=256)  # cases in flight per upstream

    @model_validator(mode="after")
    def _when(self) -> EvalSchedule:
        if (self.every is None) == (self.cron is None):
            raise ValueError("give either every (e.g. 6h) or cron (e.g. '0 */6 * * *')")
        if self.every is not None and self.every <= 0:
            raise ValueError("every must be longer than 0s")
        if self.cron is not None:
            try:
                CronSim(self.cron, dt.datetime.now(dt.UTC))
            except CronSimError as exc:
                raise ValueError(f"invalid cron line {self.cron!r}: {exc}") from None
        return self


class Config(_Model):
    server: Server = Server()
    auth: Auth = Auth()
    store: str = "sqlite:///turnout.db"  # sqlite:///path.db (sqlite:////abs/path.db) or postgresql://...
    store_env: EnvName | None = None  # env var holding the store DSN instead of store
    store_retention: Duration | None = None  # delete interactions (feedback, review items) older than this
    shadow: ShadowLimits = ShadowLimits()
    upstreams: dict[str, Upstream]  # model endpoints by name
    routes: dict[str, RouteConfig]  # by the model name clients send
    review: Review | None = None  # the review queue (/admin/review)
    datasets_dir: str = "./datasets"  # relative to the config file's directory (like eval suites), or absolute
    datasets: dict[DatasetName, Dataset] = {}  # versioned training datasets by name
    evals: list[EvalSchedule] = []  # eval suites run on a schedule

    @field_validator("store")
    @classmethod
    def _store_scheme(cls, value: str) -> str:
        if not value.startswith(("sqlite:///", "postgresql://", "postgres://")):
            raise ValueError("expected sqlite:///path.db (sqlite:////absolute/path.db) or postgresql://...")
        return value

    def experiment(self, route: str) -> str:
        return self.routes[route].experiment or route


@dataclass(frozen=True)
class Secrets:
    """Secret values read from the environment; never logged, stored or rendered."""

    client_keys: frozenset[str]
    admin_key: str | None
    upstream_keys: Mapping[str, str | None]
    store_dsn: str
    named_keys: Mapping[str, str | None] = field(default_factory=dict)  # auth.clients: name -> key
    caller_key: str | None = None

    def values(self) -> list[str]:
        found = [*self.client_keys, self.admin_key, self.caller_key, *self.upstream_keys.values()]
        found += self.named_keys.values()
        return [v for v in found if v]


@dataclass(frozen=True)
class Loaded:
    """One config generation: the validated file, its secrets and the sha256 of its bytes."""

    config: Config
    secrets: Secrets
    sha256: str
    path: Path


class _Loader(getattr(yaml, "CSafeLoader", yaml.SafeLoader)):  # type: ignore[misc]
    """Safe loading with YAML 1.2 booleans: an upstream named ``on``, ``off``, ``yes`` or ``no`` stays a name."""


_BOOL = "tag:yaml.org,2002:bool"
_Loader.yaml_implicit_resolvers = {
    first: [(tag, rx) for tag, rx in resolvers if tag != _BOOL]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}
_Loader.add_implicit_resolver(_BOOL, re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$"), list("tTfF"))


class ConfigError(Exception):
    """A config file that cannot serve; ``errors`` holds one ``key.path: message`` line per problem."""

    def __init__(self, path: Path | str, errors: list[str]) -> None:
        self.path = str(path)
        self.errors = errors
        super().__init__(f"{path}: " + "; ".join(errors))


def _dataset_errors(config: Config) -> list[str]:
    errors = []
    for name, dataset in config.datasets.items():
        if dataset.route not in config.routes:
            errors.append(f"datasets.{name}.route: unknown route {dataset.route!r}")
    for name, up in config.upstreams.items():
        if up.dataset is not None and not re.match(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}@v\d+$", up.dataset):
            errors.append(f"upstreams.{name}.dataset: expected NAME@vN (e.g. support@v0003), got {up.dataset!r}")
    return errors


def _drift_errors(config: Config) -> list[str]:
    errors = []
    for name, route in config.routes.items():
        if route.drift is not None and route.drift.reference == "dataset":
            missing = [
                v for v, w in route.variants.items() if w > 0 and not getattr(config.upstreams.get(v), "dataset", None)
            ]
            if missing:
                errors.append(
                    f"routes.{name}.drift.reference: dataset needs the dataset version of every serving variant "
                    f"(upstreams.{missing[0]}.dataset is not set)"
                )
        errors += rollout_errors(name, route.variants, route.analysis, route.rollout)
    for i, entry in enumerate(config.evals):
        if entry.route not in config.routes:
            errors.append(f"evals.{i}.route: unknown route {entry.route!r}")
    return errors


def resolve_secrets(config: Config, environ: Mapping[str, str]) -> tuple[Secrets, list[str]]:
    """Read every ``*_env`` variable; returns the secrets and an error line per missing variable."""
    errors: list[str] = []

    def read(key_path: str, name: str | None) -> str | None:
        if name is None:
            return None
        value = environ.get(name)
        if not value:
            errors.append(f"{key_path}: environment variable {name} is not set")
        return value

    client_raw = read("auth.client_keys_env", config.auth.client_keys_env)
    admin = read("auth.admin_key_env", config.auth.admin_key_env)
    upstream_keys = {
        name: read(f"upstreams.{name}.api_key_env", up.api_key_env) for name, up in config.upstreams.items()
    }
    dsn = read("store_env", config.store_env) if config.store_env else config.store
    caller_key = read("auth.caller_key_env", config.auth.caller_key_env)
    client_keys = frozenset(k.strip() for k in (client_raw or "").split(",") if k.strip())
    named = {name: read(f"auth.clients.{name}.key_env", c.key_env) for name, c in config.auth.clients.items()}
    return Secrets(client_keys, admin, upstream_keys, dsn or config.store, named, caller_key), errors


def parse_config(
    text: bytes,
    path: Path | str,
    environ: Mapping[str, str] | None = None,
    *,
    store_only: bool = False,
    check_env: bool = True,
) -> Loaded:
    """Validate a whole file; raise ``ConfigError`` with every independent problem at once. ``store_only``
    (offline commands such as ``turnout export``) requires no environment variable but the store's;
    ``check_env=False`` (``turnout check --no-env``, for CI without the secrets) requires none."""
    try:
        data = yaml.load(text, Loader=_Loader)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark else ""
        raise ConfigError(path, [f"(YAML) {where}{getattr(exc, 'problem', None) or exc}"]) from None
    except RecursionError:
        raise ConfigError(path, ["(YAML) nesting too deep"]) from None
    if not isinstance(data, dict):
        kind = "empty" if data is None else f"a {type(data).__name__}"
        raise ConfigError(path, [f"(top level): expected a mapping with upstreams and routes, the file is {kind}"])
    env = os.environ if environ is None else environ
    errors: list[str] = []
    config: Config | None = None
    try:
        config = Config.model_validate(data)
    except ValidationError as exc:
        errors += schema_errors(exc)
    errors += reference_errors(data) + (_drift_errors(config) + _dataset_errors(config) if config is not None else [])
    if check_env:
        unset = env_errors(data, env)
        errors += [e for e in unset if e.startswith("store_env:")] if store_only else unset
    if errors or config is None:
        raise ConfigError(path, errors)
    secrets, _ = resolve_secrets(config, env)  # its missing variables are in env_errors (unless check_env is off)
    if check_env and not secrets.client_keys and env.get(keys_env := config.auth.client_keys_env or ""):
        # "," or " " must not load as "no client keys": that would leave the gateway open to any token
        raise ConfigError(path, [f"auth.client_keys_env: environment variable {keys_env} holds no key"])
    return Loaded(config, secrets, hashlib.sha256(text).hexdigest(), Path(path))


def load_config(
    path: Path | str, environ: Mapping[str, str] | None = None, *, store_only: bool = False, check_env: bool = True
) -> Loaded:
    try:
        text = Path(path).read_bytes()
    except OSError as exc:
        raise ConfigError(path, [f"(file) cannot read: {exc.strerror}"]) from None
    return parse_config(text, path, environ, store_only=store_only, check_env=check_env)
