"""Redaction before storage: secrets in message text are always masked; e-mail addresses and phone
numbers when the route asks (``capture: {redact: [email, phone]}``).

Only string values are touched (never keys or numbers), so the JSON shape stays the same. Known secret
values (client, admin and upstream keys) are masked wherever they appear, whatever their shape.

Usage::

    redactor = Redactor(kinds=frozenset({"email"}), secrets=("sk-live-...",))
    clean = redactor.value(request_body)
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Any

KINDS = ("email", "phone")

_SECRET = re.compile(
    r"""
    (?P<bearer>\b[Bb]earer\s+)[A-Za-z0-9._~+/=-]{8,}
    | \bsk-(?:proj-|ant-|live-|test-)?[A-Za-z0-9_-]{16,}
    | \b(?:AKIA|ASIA)[0-9A-Z]{16}\b
    | \bgh[pousr]_[A-Za-z0-9]{30,}
    | \bgithub_pat_[A-Za-z0-9_]{30,}
    | \bxox[abprs]-[A-Za-z0-9-]{10,}
    | \bAIza[0-9A-Za-z_-]{35}
    | \bglpat-[A-Za-z0-9_-]{20,}
    | \beyJ[A-Za-z0-9_-]{10,}\.eyJ[A-Za-z0-9_-]{10,}\.[A-Za-z0-9_-]{10,}
    | -----BEGIN[A-Z ]*PRIVATE\ KEY-----[\s\S]*?-----END[A-Z ]*PRIVATE\ KEY-----
    | (?P<assign>\b(?:api[_-]?key|secret|password|passwd|access[_-]?token)\b["']?\s*[:=]\s*["']?)[^\s"',;]{6,}
    """,
    re.VERBOSE | re.IGNORECASE,
)
_EMAIL = re.compile(r"\b[A-Za-z0-9._%+-]+@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*\.[A-Za-z]{2,}\b")
# a run of digits with the usual separators; kept only when it holds 9 to 15 digits (E.164 length)
_PHONE = re.compile(r"(?<![\w.])\+?\(?\d[\d\s().-]{6,}\d(?![\w.]|-\d)")

SECRET_MARK = "[redacted:secret]"
EMAIL_MARK = "[redacted:email]"
PHONE_MARK = "[redacted:phone]"


def _secret(match: re.Match[str]) -> str:
    prefix = match.group("bearer") or match.group("assign") or ""
    return prefix + SECRET_MARK


def _phone(match: re.Match[str]) -> str:
    text = match.group(0)
    digits = sum(c.isdigit() for c in text)
    return PHONE_MARK if 9 <= digits <= 15 else text


class Redactor:
    """Masks secrets always, and the optional ``kinds`` (``email``, ``phone``) in every string value."""

    def __init__(self, kinds: Iterable[str] = (), secrets: Iterable[str] = ()) -> None:
        self.kinds = frozenset(kinds)
        self.secrets = tuple(sorted({s for s in secrets if len(s) >= 4}, key=len, reverse=True))

    def text(self, s: str) -> str:
        for secret in self.secrets:
            if secret in s:
                s = s.replace(secret, SECRET_MARK)
        s = _SECRET.sub(_secret, s)
        if "email" in self.kinds and "@" in s:
            s = _EMAIL.sub(EMAIL_MARK, s)
        if "phone" in self.kinds:
            s = _PHONE.sub(_phone, s)
        return s

    def value(self, value: Any) -> Any:
        """``value`` with every string masked; unchanged containers are returned as they are."""
        if isinstance(value, str):
            return self.text(value)
        if isinstance(value, dict):
            out = None
            for i, (key, item) in enumerate(value.items()):
                new = self.value(item)
                if out is None and new is not item:
                    out = dict(list(value.items())[:i])
                if out is not None:
                    out[key] = new
            return value if out is None else out
        if isinstance(value, list):
            items = None
            for i, item in enumerate(value):
                new = self.value(item)
                if items is None and new is not item:
                    items = value[:i]
                if items is not None:
                    items.append(new)
            return value if items is None else items
        return value
