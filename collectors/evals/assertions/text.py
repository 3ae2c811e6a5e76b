"""Text assertions: ``equals``, ``contains``, ``not_contains``, ``regex``, ``not_regex``, ``similarity``.

``equals`` and ``similarity`` compare with the case's ``expected`` unless they carry a ``value``. Matching is
case-insensitive unless ``case_sensitive: true``. A list of values is matched ``all`` (default for
``contains``) or ``any``; ``not_contains`` fails when any value appears.
"""

from __future__ import annotations

import re
import string
import unicodedata
from typing import Any, ClassVar, Literal

import orjson
from pydantic import Field, field_validator
from rapidfuzz import fuzz

from collectors.evals.answer import Answer
from collectors.evals.assertions.base import Context, Result, Spec, clip, expected_text, result

_SPACE = re.compile(r"\s+")
_PUNCT = str.maketrans("", "", string.punctuation)


class Equals(Spec):
    needs_expected: ClassVar[bool] = True
    type: Literal["equals"]
    value: Any = None
    case_sensitive: bool = False
    strip: bool = True
    collapse_whitespace: bool = True
    ignore_punctuation: bool = False


def normalise(text: str, spec: Equals) -> str:
    text = unicodedata.normalize("NFKC", text)
    if spec.strip:
        text = text.strip()
    if spec.collapse_whitespace:
        text = _SPACE.sub(" ", text)
    if spec.ignore_punctuation:
        text = text.translate(_PUNCT)
    return text if spec.case_sensitive else text.casefold()


async def equals(spec: Equals, answer: Answer, ctx: Context) -> Result:
    want = spec.value if spec.value is not None else ctx.expected
    if isinstance(want, dict | list):  # structured: the answer must parse to the same JSON
        try:
            same = orjson.loads(answer.text) == want
        except orjson.JSONDecodeError:
            return result(spec, False, 0.0, "expected JSON equal to the value; the answer is not JSON")
        return result(spec, same, float(same), "JSON equal" if same else "JSON differs from the expected value")
    same = normalise(answer.text, spec) == normalise(str(want), spec)
    reason = "equal" if same else f"expected {clip(str(want))!r}, got {clip(answer.text)!r}"
    return result(spec, same, float(same), reason)


class Contains(Spec):
    type: Literal["contains", "not_contains"]
    value: str | list[str] = Field(min_length=1)
    mode: Literal["all", "any"] = "all"
    case_sensitive: bool = False

    def values(self) -> list[str]:
        return [self.value] if isinstance(self.value, str) else list(self.value)


def _found(spec: Contains, text: str) -> list[str]:
    hay = text if spec.case_sensitive else text.casefold()
    return [v for v in spec.values() if (v if spec.case_sensitive else v.casefold()) in hay]


async def contains(spec: Contains, answer: Answer, ctx: Context) -> Result:
    values, found = spec.values(), _found(spec, answer.text)
    missing = [v for v in values if v not in found]
    if spec.mode == "any":
        ok = bool(found)
        return result(spec, ok, float(ok), f"found {found[0]!r}" if ok else f"none of {values} found")
    ok = not missing
    return result(spec, ok, len(found) / len(values), "all found" if ok else f"missing {missing}")


async def not_contains(spec: Contains, answer: Answer, ctx: Context) -> Result:
    found = _found(spec, answer.text)
    ok = not found
    return result(spec, ok, float(ok), "none found" if ok else f"found {found}")


class Regex(Spec):
    type: Literal["regex", "not_regex"]
    value: str
    case_sensitive: bool = True

    @field_validator("value")
    @classmethod
    def _compiles(cls, value: str) -> str:
        try:
            re.compile(value)
        except re.error as exc:
            raise ValueError(f"invalid regular expression: {exc}") from None
        return value

    def search(self, text: str) -> re.Match[str] | None:
        return re.search(self.value, text, 0 if self.case_sensitive else re.IGNORECASE)


async def regex(spec: Regex, answer: Answer, ctx: Context) -> Result:
    match = spec.search(answer.text)
    reason = f"matched {clip(match.group(0))!r}" if match else f"no match for /{spec.value}/"
    return result(spec, match is not None, float(match is not None), reason)


async def not_regex(spec: Regex, answer: Answer, ctx: Context) -> Result:
    match = spec.search(answer.text)
    reason = f"matched {clip(match.group(0))!r}" if match else f"no match for /{spec.value}/"
    return result(spec, match is None, float(match is None), reason)


class Similarity(Spec):
    needs_expected: ClassVar[bool] = True
    type: Literal["similarity"]
    threshold: float = Field(ge=0.0, le=1.0)
    value: str | None = None
    method: Literal["ratio", "token_set_ratio", "partial_ratio"] = "ratio"


async def similarity(spec: Similarity, answer: Answer, ctx: Context) -> Result:
    scorer = getattr(fuzz, spec.method)
    want = unicodedata.normalize("NFKC", expected_text(spec, ctx)).casefold()
    got = unicodedata.normalize("NFKC", answer.text).casefold()
    ratio = scorer(got, want) / 100.0
    ok = ratio >= spec.threshold
    return result(spec, ok, ratio, f"similarity {ratio:.2f} {'>=' if ok else '<'} {spec.threshold}")
