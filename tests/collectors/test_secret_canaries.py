"""Secret canaries per format (security finding 7), through the capture path (``encode``: the stored JSON line):
none may reach the journal, the store or an export in clear, whether in a message, behind JSON escapes, or in
JSON nested inside a JSON string. The rules follow gitleaks' for these providers and keyword assignments.

Before: a tab or newline after ``Bearer``, ``DB_PASSWORD=`` / ``MY_APP_SECRET=`` / ``OPENAI_APIKEY=`` (after
``_``), ``aws_secret_access_key``, ``sk_live_``, ``hf_``, ``Basic``, ``token:``, a password in a database URL,
an ``api_key`` in JSON nested in a JSON string, and non-ASCII e-mail addresses all reached exports in clear."""

from __future__ import annotations

import json

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from collectors.capture import encode, interaction_payload
from collectors.redact import Redactor
from tests.collectors.records import interaction

CANARIES = {
    "bearer-tab": ("Authorization: Bearer\t{s}", "c4nary0TokenValue1"),
    "bearer-newline": ("Authorization: Bearer\n{s}", "c4nary0TokenValue2"),
    "db-password-env": ("DB_PASSWORD={s}", "c4nary-hunter22"),
    "app-secret-env": ("export MY_APP_SECRET={s}", "c4nary-s3cr3t-v4lue"),
    "apikey-env": ("OPENAI_APIKEY={s}", "c4naryAPIkey99"),
    "aws-secret": ("aws_secret_access_key = {s}", "wJalrXUtnFEMIK7MDENGbPxRfiCYc4nary"),
    "stripe": ("pay with {s} now", "sk_live_51c4naryAbCdEfGhIjKlMn"),
    "hugging-face": ("HF token {s}", "hf_c4naryAbCdEfGhIjKlMnOpQrStUvWxYz01"),
    "basic-auth": ("Authorization: Basic {s}", "dXNlcjpjNG5hcnlwYXNzd29yZA=="),
    "token-colon": ("token: {s}", "c4nary-tok-123456"),
    "database-url": ("postgresql://app:{s}@db.internal:5432/prod", "p@ss-c4nary-9"),
    "nested-json": (json.dumps(json.dumps({"api_key": "{s}"})), "c4nary-nested-key-77"),
    "json-in-string": (json.dumps({"config": {"password": "{s}"}}), "c4nary-in-json-88"),
    "github": ("push with {s}", "ghp_c4naryAbCdEfGhIjKlMnOpQrStUvWxYz0123"),
    "openai": ("key {s}", "sk-proj-c4naryAbCdEfGhIjKlMnOp"),
}


@pytest.mark.parametrize("name", CANARIES)
def test_each_secret_format_is_masked_in_the_stored_line(name: str) -> None:
    template, secret = CANARIES[name]
    text = template.replace("{s}", secret)
    it = interaction("r1", text=text, answer=f"you said: {text}")
    line = encode(interaction_payload(it), Redactor())
    core = secret.split("@")[-1] if name == "database-url" else secret
    assert core.encode() not in line and secret.encode() not in line, line
    assert orjson.loads(line)["request"]["messages"][0]["content"].count("[redacted:secret]") >= 1


@pytest.mark.parametrize("address", ["jörg.müller@exämple.de", "наталья@пример.рф", "li.wei@例子.中国"])
def test_non_ascii_email_addresses_are_masked_when_the_route_asks(address: str) -> None:
    it = interaction("r1", text=f"write to {address} today")
    line = encode(interaction_payload(it), Redactor(kinds={"email"}))
    assert address.encode() not in line
    assert "write to [redacted:email] today" in orjson.loads(line)["request"]["messages"][0]["content"]


def test_ordinary_text_is_left_alone() -> None:
    text = "Basic information about tokens: the password field is required, see https://example.com/a:b@c"
    it = interaction("r1", text=text)
    assert orjson.loads(encode(interaction_payload(it), Redactor()))["request"]["messages"][0]["content"] == text


KEYS = st.sampled_from(["total_tokens", "max_tokens", "token", "api_key", "password", "secret", "x", "content"])
JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False) | st.text(),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(KEYS | st.text(max_size=8), inner, max_size=4),
    max_leaves=20,
)


@settings(max_examples=500, deadline=None)
@given(JSON)
def test_a_masked_line_is_always_valid_json(value: object) -> None:
    """A usage of 12,345 tokens ("total_tokens":12345}) once lost its closing brace to the keyword rule: the
    journal line no longer parsed and the capture loader dropped the interaction."""
    payload = {**interaction_payload(interaction("r1")), "request": {"anything": value}}
    line = encode(payload, Redactor(kinds={"email", "phone"}))
    assert set(payload) <= set(orjson.loads(line))  # (a NUL in a string adds "sanitized")


def test_token_counts_and_other_numbers_are_not_secrets() -> None:
    usage = {"prompt_tokens": 123456, "completion_tokens": 654321, "total_tokens": 777777}
    payload = {**interaction_payload(interaction("r1")), "usage": usage, "request": {"max_tokens": 1.5e300}}
    stored = orjson.loads(encode(payload, Redactor()))
    assert stored["usage"] == usage and stored["request"]["max_tokens"] == 1.5e300
