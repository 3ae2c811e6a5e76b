from __future__ import annotations

import tracemalloc
from concurrent.futures import ThreadPoolExecutor

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from collectors.redact import _PATTERNS, SECRET_MARK, Redactor, _masked, mask_secrets
from collectors.sanitize import MAX_STRING, sanitize

ALWAYS = Redactor()
ALL = Redactor({"email", "phone"}, secrets=("my-own-client-key",))


@pytest.mark.parametrize(
    ("text", "want"),
    [
        ("use sk-proj-AbCdEfGhIjKlMnOpQrStUv12 now", "use [redacted:secret] now"),
        ("Authorization: Bearer eyJhbGciOi.abc-def_123", "Authorization: Bearer [redacted:secret]"),
        ("aws AKIAIOSFODNN7EXAMPLE key", "aws [redacted:secret] key"),
        ("token ghp_" + "a" * 36, "token [redacted:secret]"),
        ("api_key=abcdef123456 rest", "api_key=[redacted:secret] rest"),
        ('{"password": "hunter2hunter2"}', '{"password": "[redacted:secret]"}'),
        ("-----BEGIN RSA PRIVATE KEY-----\nMIIE\n-----END RSA PRIVATE KEY-----", "[redacted:secret]"),
        ("nothing secret here, sk-short", "nothing secret here, sk-short"),
        ("mail bob@example.com", "mail bob@example.com"),  # only when the route asks
    ],
)
def test_secrets_are_always_masked(text: str, want: str) -> None:
    assert ALWAYS.text(text) == want


@pytest.mark.parametrize(
    ("text", "want"),
    [
        ("write to jane.doe+x@mail.example.org.", "write to [redacted:email]."),
        ("call +44 20 7946 0958 today", "call [redacted:phone] today"),
        ("call (415) 555-0100", "call [redacted:phone]"),
        ("order 12345 on 2026-11-26 costs 1,250.00", "order 12345 on 2026-11-26 costs 1,250.00"),
        ("version 1.2.3.4", "version 1.2.3.4"),
        ("my key is my-own-client-key", "my key is [redacted:secret]"),
    ],
)
def test_optional_kinds(text: str, want: str) -> None:
    assert ALL.text(text) == want


def test_only_string_values_change_and_untouched_containers_are_kept() -> None:
    body = {"messages": [{"role": "user", "content": "sk-live-abcdefghijklmnopqrstu"}], "max_tokens": 4155550100}
    out = ALL.value(body)
    assert out == {"messages": [{"role": "user", "content": "[redacted:secret]"}], "max_tokens": 4155550100}
    clean = {"messages": [{"role": "user", "content": "hi"}]}
    assert ALL.value(clean) is clean


def test_sanitize_marks_every_change() -> None:
    value = {"a": "x\x00y", "b": ["\udcff"], "c": "z" * (MAX_STRING + 5), "d": 1 << 70, "ok": "fine"}
    clean, notes = sanitize(value)
    assert clean["a"] == "x\ufffdy" and clean["b"] == ["\ufffd"] and clean["d"] == str(1 << 70)
    assert clean["c"].endswith(f"[truncated by turnout: {MAX_STRING + 5} characters]")
    assert sorted(notes) == ["a: nul", "b.0: surrogate", "c: truncated", "d: integer out of range stored as text"]
    untouched = {"x": [1, 2.5, None, True, "é"]}
    assert sanitize(untouched) == (untouched, [])
    assert sanitize(untouched)[0] is untouched


@pytest.mark.parametrize("text", ["key sk-proj-AbCdEfGhIjKlMnOpQrStUv12 end", '{"password": "hunter2hunter2"}'])
def test_a_secret_is_masked_wherever_it_falls_in_a_large_record(text: str) -> None:
    want = mask_secrets(text.encode())
    assert want != text.encode()
    for pad in (b" " * (65536 - shift) for shift in range(len(text))):
        assert mask_secrets(pad + text.encode() + pad) == pad + want + pad


# one match (or near miss) of every pattern, and the characters around them
PATTERN_PARTS = [
    "sk-proj-AbCdEfGhIjKlMnOpQrStUv12", "AKIAIOSFODNN7EXAMPLE", "ASIAIOSFODNN7EXAMPLE", "ghp_" + "a1" * 18,
    "github_pat_" + "A1" * 16, "xoxb-1234567890-abc", "AIza" + "B" * 35, "glpat-" + "x" * 20,
    "eyJhbGciOiJIUzI1.eyJzdWIiOiIxMjM0.SflKxwRJSMeKKF2QT4f", "-----BEGIN RSA PRIVATE KEY-----", "MIIEab",
    "-----END RSA PRIVATE KEY-----", "-----BEGIN EC PRIVATE KEY-----MIIE\\nab-----END EC PRIVATE KEY-----",
    "sk_live_" + "a" * 16, "hf_" + "a" * 30, "npm_" + "a" * 36,
    "SG." + "a" * 22 + "." + "b" * 43, "Basic dXNlcjpwYXNz1=", "Bearer ", "api_key", "API-KEY", "Secret", "Password",
    "passwd", "token", "TOKENS", "credentials", "postgresql://user:pw@host/db", "://", ":", "=", '"', '\\"', " ",
    "\\n", "\\t", "\t", 'client_secret": "', "Credentials: ", "api_key=", 'password\\":\\"', "TOKEN=", "12345",
    "abcdef123456", "x", "@", "/", "sk-", "gh", "high", "_", "-",
]  # fmt: skip


@settings(max_examples=500, deadline=None)
@given(st.lists(st.sampled_from(PATTERN_PARTS), max_size=12))
def test_the_prefilter_pass_never_skips_a_pattern_that_matches(parts: list[str]) -> None:
    """Only the patterns the Hyperscan pass reports run; the oracle runs every pattern on every record."""
    data = "".join(parts).encode()
    assert mask_secrets(data) == _masked(data, set(range(len(_PATTERNS))))


def test_text_full_of_literals_is_masked_in_bounded_memory() -> None:
    """The pass reports each pattern once, not each occurrence (2 MB of "sk-" is ~700,000 of them)."""
    data = b"sk-" * (700_000)
    tracemalloc.start()
    try:
        masked = mask_secrets(data)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert masked == SECRET_MARK.encode()
    assert peak < 4 * len(data), peak


KNOWN = ("c4nary-Client-Key-0001", "Token", "hunter2hunter2", "UPSTREAM-key-zz")
FRAGMENTS = st.sampled_from(
    [*KNOWN, *(k.lower() for k in KNOWN), *(k.upper() for k in KNOWN), "token: ", "sk-", "Bearer ", " ", '"', "x"]
)


@settings(max_examples=300, deadline=None)
@given(st.lists(FRAGMENTS, max_size=12))
def test_known_secrets_are_masked_exactly_as_one_replace_each(parts: list[str]) -> None:
    """The known secrets are found in the same pass as the pattern literals; the oracle replaces each (longest
    first) wherever it occurs, then masks the patterns."""
    data = "".join(parts).encode()
    want = data
    for secret in sorted(KNOWN, key=len, reverse=True):
        want = want.replace(secret.encode(), SECRET_MARK.encode())
    assert Redactor(secrets=KNOWN).line(data) == mask_secrets(want)


def test_a_known_secret_is_masked_wherever_it_falls_in_a_large_record() -> None:
    redactor = Redactor(secrets=("c4nary-Client-Key-0001",))
    for shift in range(30):
        pad = b" " * (65536 - shift)
        assert redactor.line(pad + b"key c4nary-Client-Key-0001 end") == pad + b"key [redacted:secret] end", shift


def test_threads_redact_at_once() -> None:
    """The capture path redacts small records on the event loop and large ones in a worker thread at the same
    time; each thread scans with a scratch space of its own (the scan releases the GIL)."""
    redactor = Redactor(secrets=("c4nary-Client-Key-0001",))
    record = b'{"content": "key c4nary-Client-Key-0001, Bearer abcdefgh12345678 ' + b"x" * 200_000 + b'"}'
    want = redactor.line(record)
    assert want.count(SECRET_MARK.encode()) == 2
    with ThreadPoolExecutor(max_workers=4) as pool:
        results = list(pool.map(lambda _: redactor.line(record), range(200)))
    assert results == [want] * 200
