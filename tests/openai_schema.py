"""OpenAI's published response schemas (vendored in ``tests/data/openai_schemas.json``) as jsonschema checks.

Usage: ``assert_valid("CreateChatCompletionResponse", body)`` raises ``jsonschema.ValidationError`` naming the
first place ``body`` departs from OpenAI's shape.
"""

from __future__ import annotations

import functools
import json
from pathlib import Path
from typing import Any

from jsonschema import Draft202012Validator

DOCUMENT = Path(__file__).parent / "data" / "openai_schemas.json"


@functools.cache
def _validator(name: str) -> Draft202012Validator:
    components = json.loads(DOCUMENT.read_text())["components"]
    return Draft202012Validator({"$ref": f"#/components/schemas/{name}", "components": components})


def assert_valid(name: str, instance: Any) -> None:
    _validator(name).validate(instance)
