"""Eval suite files: YAML with cases inline or from JSONL, validated with errors that name their key path.

A case is an OpenAI chat request (``messages`` plus the usual parameters, or a whole ``request`` body) with an
optional ``expected`` answer and a list of assertions (``assert``). Every problem in a file is reported at
once as ``SUITE_FILE: cases.3.assert.0.threshold: Input should be less than or equal to 1``.

Usage: ``suite = load_suite(Path("evals/support.yaml"))``; ``suite.cases[0].body()``; ``suite.sha256``.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson
import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from collectors.evals.assertions import CHECKS, Assertion

# the chat request parameters a case may set besides ``messages`` (a ``request`` body may hold anything else)
REQUEST_KEYS = (
    "temperature",
    "top_p",
    "max_tokens",
    "max_completion_tokens",
    "stop",
    "seed",
    "tools",
    "tool_choice",
    "parallel_tool_calls",
    "response_format",
    "presence_penalty",
    "frequency_penalty",
    "logit_bias",
    "reasoning_effort",
    "metadata",
)


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)


class Case(_Model):
    id: str | None = None
    messages: list[dict[str, Any]] | None = Field(None, min_length=1)
    request: dict[str, Any] | None = None
    expected: Any = None
    assertions: list[Assertion] = Field(default_factory=list, alias="assert")
    temperature: float | None = None
    top_p: float | None = None
    max_tokens: int | None = None
    max_completion_tokens: int | None = None
    stop: str | list[str] | None = None
    seed: int | None = None
    tools: list[dict[str, Any]] | None = None
    tool_choice: str | dict[str, Any] | None = None
    parallel_tool_calls: bool | None = None
    response_format: dict[str, Any] | None = None
    presence_penalty: float | None = None
    frequency_penalty: float | None = None
    logit_bias: dict[str, float] | None = None
    reasoning_effort: str | None = None
    metadata: dict[str, str] | None = None

    @model_validator(mode="after")
    def _one_request(self) -> Case:
        if (self.messages is None) == (self.request is None):
            raise ValueError("a case needs either messages or a request body (not both)")
        if self.request is not None and not isinstance(self.request.get("messages"), list):
            raise ValueError("request: a chat request body needs a messages list")
        if self.request is not None and self.request.get("stream"):
            raise ValueError("request.stream: eval calls are not streamed")
        return self

    def body(self) -> dict[str, Any]:
        """The chat request sent upstream (``model`` is set by the upstream client)."""
        if self.request is not None:
            return {k: v for k, v in self.request.items() if k not in ("model", "stream", "stream_options")}
        out: dict[str, Any] = {"messages": self.messages}
        for key in REQUEST_KEYS:
            value = getattr(self, key)
            if value is not None:
                out[key] = value
        return out


class Judge(_Model):
    upstream: str


class JudgeCheck(_Model):
    gold: str  # JSONL of human-labelled examples, relative to the suite file
    min_kappa: float = Field(0.6, ge=-1.0, le=1.0)


class Threshold(_Model):
    pass_rate: float = Field(1.0, ge=0.0, le=1.0)


class SuiteFile(_Model):
    suite: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,99}$")
    description: str | None = None
    judge: Judge | None = None
    judge_check: JudgeCheck | None = None
    threshold: Threshold = Threshold()
    cases: list[Case] | None = None
    cases_file: str | None = None

    @model_validator(mode="after")
    def _cases(self) -> SuiteFile:
        if (self.cases is None) == (self.cases_file is None):
            raise ValueError("give either cases (inline) or cases_file (JSONL), not both")
        return self


@dataclass(frozen=True)
class Suite:
    """A validated suite: its name, the cases with unique ids, and the sha256 of everything it was read from."""

    name: str
    path: Path
    cases: list[Case]
    threshold: float
    judge: str | None
    judge_check: JudgeCheck | None
    sha256: str

    def uses_judge(self) -> bool:
        return any(a.type == "llm_judge" for c in self.cases for a in c.assertions)


class SuiteError(Exception):
    """A suite that cannot run; ``errors`` holds one ``key.path: message`` line per problem."""

    def __init__(self, path: Path | str, errors: list[str]) -> None:
        self.path = str(path)
        self.errors = errors
        super().__init__("\n".join(f"{path}: {e}" for e in errors))


def _loc(prefix: str, loc: tuple[Any, ...]) -> str:
    parts = [prefix] if prefix else []
    parts += [str(p) for p in loc if not str(p).startswith("function-")]
    return ".".join(parts) or "(top level)"


def _errors(exc: ValidationError, prefix: str = "") -> list[str]:
    out = []
    for err in exc.errors():
        message = "unknown key" if err["type"] == "extra_forbidden" else err["msg"].removeprefix("Value error, ")
        # a tagged union puts the tag in the path (cases.0.assert.1.contains.value): leave it out
        loc = [p for i, p in enumerate(err["loc"]) if not (p in CHECKS and i and isinstance(err["loc"][i - 1], int))]
        out.append(f"{_loc(prefix, tuple(loc))}: {message}")
    return out


def _read_yaml(path: Path) -> Any:
    try:
        text = path.read_bytes()
    except OSError as exc:
        raise SuiteError(path, [f"(file) cannot read: {exc.strerror}"]) from None
    try:
        return text, yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark else ""
        raise SuiteError(path, [f"(YAML) {where}{getattr(exc, 'problem', None) or exc}"]) from None


def _jsonl_cases(path: Path, errors: list[str]) -> tuple[bytes, list[Case]]:
    try:
        raw = path.read_bytes()
    except OSError as exc:
        errors.append(f"cases_file: cannot read {path}: {exc.strerror}")
        return b"", []
    cases = []
    for number, line in enumerate(raw.splitlines(), 1):
        if not line.strip():
            continue
        try:
            data = orjson.loads(line)
            cases.append(Case.model_validate(data))
        except orjson.JSONDecodeError as exc:
            errors.append(f"cases_file line {number}: not JSON ({exc})")
        except ValidationError as exc:
            errors += _errors(exc, f"cases_file line {number}")
    return raw, cases


def load_suite(path: Path | str) -> Suite:
    """Read and validate a suite file (and its cases file); raises ``SuiteError`` listing every problem."""
    path = Path(path)
    text, data = _read_yaml(path)
    if not isinstance(data, dict):
        raise SuiteError(path, ["(top level): expected a mapping with suite and cases"])
    try:
        spec = SuiteFile.model_validate(data)
    except ValidationError as exc:
        raise SuiteError(path, _errors(exc)) from None
    errors: list[str] = []
    digest = hashlib.sha256(text)
    cases = list(spec.cases or [])
    if spec.cases_file is not None:
        raw, cases = _jsonl_cases(path.parent / spec.cases_file, errors)
        digest.update(raw)
    if not cases and not errors:
        errors.append("cases: the suite has no cases")
    named: list[Case] = []
    seen: set[str] = set()
    for i, case in enumerate(cases):
        case_id = case.id or f"case-{i + 1}"
        if case_id in seen:
            errors.append(f"cases.{i}.id: duplicate case id {case_id!r}")
        seen.add(case_id)
        named.append(case.model_copy(update={"id": case_id}))
        for j, assertion in enumerate(case.assertions):
            needs = getattr(assertion, "needs_expected", False) and getattr(assertion, "value", None) is None
            if needs and case.expected is None:
                errors.append(f"cases.{i}.assert.{j}: {assertion.type} needs a value or the case's expected")
    uses_judge = any(a.type == "llm_judge" and a.upstream is None for c in named for a in c.assertions)  # type: ignore[union-attr]
    if (uses_judge or spec.judge_check) and spec.judge is None:
        errors.append("judge: llm_judge assertions and judge_check need judge: {upstream: NAME}")
    if spec.judge_check is not None:
        gold = path.parent / spec.judge_check.gold
        if not gold.is_file():
            errors.append(f"judge_check.gold: no such file {gold}")
        else:
            digest.update(gold.read_bytes())
    if errors:
        raise SuiteError(path, errors)
    return Suite(
        name=spec.suite,
        path=path,
        cases=named,
        threshold=spec.threshold.pass_rate,
        judge=spec.judge.upstream if spec.judge else None,
        judge_check=spec.judge_check,
        sha256=digest.hexdigest(),
    )
