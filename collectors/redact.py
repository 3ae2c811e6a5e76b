"""Redaction before storage: secrets in message text are always masked; e-mail addresses and phone
numbers when the route asks (``capture: {redact: [email, phone]}``).

``line`` masks secrets in serialised JSON in one pass over the bytes (what the capture path runs for every
interaction); ``value`` walks string values only (never keys or numbers) and also applies the optional
kinds. Known secret values (client, admin and upstream keys) are masked wherever they appear.

Every secret pattern starts with a literal (so the regex engine skips ahead with a fast substring search)
and none of its character classes admits '"' or '\\', so a mask never cuts through a JSON string's quotes
or escapes.

Usage::

    redactor = Redactor(kinds=frozenset({"email"}), secrets=("sk-live-...",))
    clean = redactor.value(request_body)
    line = redactor.line(orjson.dumps(body))
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable
from typing import Any

KINDS = ("email", "phone")

_VALUE = rb"""\\?["']?\s*[:=]\s*\\?["']?(?P<v>[^\s"',;\\]{6,})"""
# searched in the original bytes; the whole match is the secret
_CASED = [
    re.compile(p)
    for p in (
        rb"sk-[A-Za-z0-9_-]{16,}",
        rb"AKIA[0-9A-Z]{16}",
        rb"ASIA[0-9A-Z]{16}",
        rb"gh[pousr]_[A-Za-z0-9]{30,}",
        rb"github_pat_[A-Za-z0-9_]{30,}",
        rb"xox[abprs]-[A-Za-z0-9-]{10,}",
        rb"AIza[0-9A-Za-z_-]{35}",
        rb"glpat-[A-Za-z0-9_-]{20,}",
        rb"eyJ[A-Za-z0-9_-]{10,}\.eyJ[A-Za-z0-9_-]{10,}\.[A-Za-z0-9_-]{10,}",
        rb"-----BEGIN[A-Z ]*PRIVATE KEY-----[^\"]*?-----END[A-Z ]*PRIVATE KEY-----",
    )
]
# searched in the lower-cased bytes (same length); group "v" is the secret, the rest stays
_UNCASED = [
    re.compile(p)
    for p in (
        rb"bearer\s+(?P<v>[a-z0-9._~+/=-]{8,})",
        rb"api[_-]?key" + _VALUE,
        rb"secret" + _VALUE,
        rb"passw(?:or)?d" + _VALUE,
        rb"access[_-]?token" + _VALUE,
    )
]
_EMAIL = re.compile(r"\b[A-Za-z0-9._%+-]+@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*\.[A-Za-z]{2,}\b")
# a run of digits with the usual separators; kept only when it holds 9 to 15 digits (E.164 length)
_PHONE = re.compile(r"(?<![\w.])\+?\(?\d[\d\s().-]{6,}\d(?![\w.]|-\d)")

SECRET_MARK = "[redacted:secret]"
EMAIL_MARK = "[redacted:email]"
PHONE_MARK = "[redacted:phone]"
_MARK = SECRET_MARK.encode()


def _word_byte(b: int) -> bool:
    return b == 0x5F or 0x30 <= b <= 0x39 or 0x41 <= b <= 0x5A or 0x61 <= b <= 0x7A


def _spans(data: bytes) -> list[tuple[int, int]]:
    spans = []
    for rx in _CASED:
        for m in rx.finditer(data):
            if m.start() == 0 or not _word_byte(data[m.start() - 1]):
                spans.append(m.span())
    lower = data.lower()
    for rx in _UNCASED:
        for m in rx.finditer(lower):
            if m.start() == 0 or not _word_byte(lower[m.start() - 1]):
                spans.append(m.span("v"))
    return spans


def mask_secrets(data: bytes) -> bytes:
    spans = _spans(data)
    if not spans:
        return data
    out, last = [], 0
    for start, end in sorted(spans):
        if start < last:  # overlaps a span already masked
            last = max(last, end)
            continue
        out += [data[last:start], _MARK]
        last = end
    out.append(data[last:])
    return b"".join(out)


def _phone(match: re.Match[str]) -> str:
    text = match.group(0)
    digits = sum(c.isdigit() for c in text)
    return PHONE_MARK if 9 <= digits <= 15 else text


class Redactor:
    """Masks secrets always, and the optional ``kinds`` (``email``, ``phone``) in every string value."""

    def __init__(self, kinds: Iterable[str] = (), secrets: Iterable[str] = ()) -> None:
        self.kinds = frozenset(kinds)
        self.secrets = tuple(sorted({s for s in secrets if len(s) >= 4}, key=len, reverse=True))
        self.secrets_b = tuple(s.encode() for s in self.secrets if '"' not in s and "\\" not in s)

    def line(self, data: bytes) -> bytes:
        """Secrets masked in serialised JSON (or any UTF-8 text)."""
        for secret in self.secrets_b:
            if secret in data:
                data = data.replace(secret, _MARK)
        return mask_secrets(data)

    def _optional(self, s: str) -> str:
        if "email" in self.kinds and "@" in s:
            s = _EMAIL.sub(EMAIL_MARK, s)
        if "phone" in self.kinds and any(c in s for c in "0123456789"):
            s = _PHONE.sub(_phone, s)
        return s

    def text(self, s: str) -> str:
        raw = s.encode("utf-8", "surrogatepass")
        masked = self.line(raw)
        return self._optional(s if masked is raw else masked.decode("utf-8", "surrogatepass"))

    def value(self, value: Any) -> Any:
        """``value`` with every string masked; unchanged containers are returned as they are."""
        return _walk(value, self.text)

    def optional(self, value: Any) -> Any:
        """``value`` with only the optional kinds masked (``line`` takes care of secrets afterwards)."""
        return _walk(value, self._optional) if self.kinds else value


def _walk(value: Any, fn: Callable[[str], str]) -> Any:
    if isinstance(value, str):
        return fn(value)
    if isinstance(value, dict):
        out = None
        for i, (key, item) in enumerate(value.items()):
            new = _walk(item, fn)
            if out is None and new is not item:
                out = dict(list(value.items())[:i])
            if out is not None:
                out[key] = new
        return value if out is None else out
    if isinstance(value, list):
        items = None
        for i, item in enumerate(value):
            new = _walk(item, fn)
            if items is None and new is not item:
                items = value[:i]
            if items is not None:
                items.append(new)
        return value if items is None else items
    return value
