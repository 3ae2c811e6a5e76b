"""Structured assertions: ``is_json``, ``json_schema`` (``$ref`` to local files allowed), ``tool_call``.

``json_schema`` takes ``schema`` inline or ``schema_file`` (relative to the suite); a ``$ref`` to another file
resolves relative to the suite's folder, never over the network. ``tool_call`` checks the first tool call
(or the one named): its ``name``, its ``arguments`` as JSON, a subset ``arguments`` match and/or a ``schema``.
"""

from __future__ import annotations

import functools
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import orjson
from pydantic import Field, model_validator

from collectors.evals.answer import Answer
from collectors.evals.assertions.base import Context, Result, Spec, clip, result

if TYPE_CHECKING:
    from jsonschema import Draft202012Validator
    from referencing import Resource

# jsonschema and referencing are imported where a schema is checked or compiled: a serving process loads the
# assertions (for its eval schedule) without paying ~50 ms of start-up for them


class IsJson(Spec):
    type: Literal["is_json"]


def _parse(text: str) -> tuple[Any, str | None]:
    try:
        return orjson.loads(text), None
    except orjson.JSONDecodeError as exc:
        return None, f"not JSON ({str(exc).split(':')[0]}): {clip(text, 60)!r}"


async def is_json(spec: IsJson, answer: Answer, ctx: Context) -> Result:
    _, problem = _parse(answer.text)
    return result(spec, problem is None, float(problem is None), problem or "valid JSON")


class JsonSchema(Spec):
    type: Literal["json_schema"]
    schema_: dict[str, Any] | None = Field(None, alias="schema")
    schema_file: str | None = None

    @model_validator(mode="after")
    def _one(self) -> JsonSchema:
        if (self.schema_ is None) == (self.schema_file is None):
            raise ValueError("give either schema (inline) or schema_file")
        if self.schema_ is not None:
            from jsonschema import Draft202012Validator
            from jsonschema.exceptions import SchemaError

            try:
                Draft202012Validator.check_schema(self.schema_)
            except SchemaError as exc:
                raise ValueError(f"schema: invalid JSON schema: {exc.message}") from None
        return self


@functools.lru_cache(maxsize=64)
def _validator(schema_json: str, base: str) -> Draft202012Validator:
    """A validator whose ``$ref``s to other files resolve under ``base`` (the suite's folder) only."""
    from jsonschema import Draft202012Validator
    from referencing import Registry, Resource
    from referencing.exceptions import NoSuchResource
    from referencing.jsonschema import DRAFT202012

    root = Path(base).resolve()

    def retrieve(uri: str) -> Resource[Any]:
        target = (root / uri.removeprefix("file://")).resolve()
        if root not in target.parents and target != root:
            raise NoSuchResource(ref=uri)  # type: ignore[call-arg]  # an attrs class: mypy misses its __init__
        try:
            return Resource.from_contents(orjson.loads(target.read_bytes()), default_specification=DRAFT202012)
        except (OSError, orjson.JSONDecodeError):
            raise NoSuchResource(ref=uri) from None  # type: ignore[call-arg]

    return Draft202012Validator(orjson.loads(schema_json), registry=Registry(retrieve=retrieve))  # type: ignore[call-arg]


def schema_check(schema: dict[str, Any], instance: Any, suite_dir: Path) -> str | None:
    """The first validation error as a readable line, or None when ``instance`` is valid."""
    validator = _validator(orjson.dumps(schema, option=orjson.OPT_SORT_KEYS).decode(), str(suite_dir))
    try:
        error = next(iter(sorted(validator.iter_errors(instance), key=lambda e: list(e.path))), None)
    except Exception as exc:  # an unresolvable $ref surfaces only while validating
        return f"schema could not be applied: {type(exc).__name__}: {clip(str(exc), 120)}"
    if error is None:
        return None
    where = "/".join(str(p) for p in error.absolute_path) or "(root)"
    return f"{where}: {clip(error.message, 120)}"


def _schema_of(spec: JsonSchema, ctx: Context) -> dict[str, Any]:
    if spec.schema_ is not None:
        return spec.schema_
    return orjson.loads((ctx.suite_dir / str(spec.schema_file)).read_bytes())  # type: ignore[no-any-return]


async def json_schema(spec: JsonSchema, answer: Answer, ctx: Context) -> Result:
    data, problem = _parse(answer.text)
    if problem is not None:
        return result(spec, False, 0.0, problem)
    try:
        schema = _schema_of(spec, ctx)
    except (OSError, orjson.JSONDecodeError) as exc:
        return result(spec, False, 0.0, f"schema_file unreadable: {exc}", error=True)
    failure = schema_check(schema, data, ctx.suite_dir)
    return result(spec, failure is None, float(failure is None), failure or "matches the schema")


class ToolCallSpec(Spec):
    type: Literal["tool_call"]
    name: str | None = None
    arguments: dict[str, Any] | None = None  # these keys must be present with these values
    schema_: dict[str, Any] | None = Field(None, alias="schema")


async def tool_call(spec: ToolCallSpec, answer: Answer, ctx: Context) -> Result:
    if not answer.tool_calls:
        return result(spec, False, 0.0, "no tool call in the answer")
    calls = [c for c in answer.tool_calls if spec.name is None or c.name == spec.name]
    if not calls:
        names = [c.name for c in answer.tool_calls]
        return result(spec, False, 0.0, f"expected a call to {spec.name!r}, got {names}")
    call = calls[0]
    args, problem = _parse(call.arguments)
    if problem is not None:
        return result(spec, False, 0.0, f"{call.name}: arguments are {problem}")
    if spec.arguments is not None:
        wrong = [k for k, v in spec.arguments.items() if not isinstance(args, dict) or args.get(k) != v]
        if wrong:
            got = {k: args.get(k) for k in wrong} if isinstance(args, dict) else args
            return result(spec, False, 0.0, f"{call.name}: arguments {wrong} differ (got {clip(str(got))})")
    if spec.schema_ is not None and (failure := schema_check(spec.schema_, args, ctx.suite_dir)):
        return result(spec, False, 0.0, f"{call.name}: {failure}")
    return result(spec, True, 1.0, f"called {call.name} with matching arguments")
