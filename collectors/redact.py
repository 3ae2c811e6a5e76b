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

import functools
import re
import threading
from collections.abc import Callable, Iterable
from typing import Any

import hyperscan

KINDS = ("email", "phone")

# Every pattern runs in linear time: a match may only start where the token it belongs to starts (a
# lookbehind), and every run of a character class is possessive (``++``, ``{n,}+``) or bounded, so a failed
# attempt never re-scans what it consumed. The PEM body may not contain "-----", so it stops at the next
# marker. Adversarial input of 1 MB takes milliseconds per pattern (tests/collectors/test_redos.py).
# a keyword's value: quotes escaped up to three levels deep (JSON in a JSON string in the stored JSON), and
# whitespace as it appears serialised ("\\t", "\\n")
_QUOTE = rb"""(?:\\{0,7}["'])?"""
_SPACE = rb"(?:\s|\\[tnr])*+"
# The value never holds JSON structure ({}[]) and never is a number (it holds a character no JSON number has): a
# masked value in the serialised line stays valid JSON ("total_tokens":12345} must not lose its brace)
_VALUE = (
    _QUOTE + _SPACE + rb"[:=]" + _SPACE + _QUOTE
    + rb"""(?=[0-9.e+-]{0,64}+[^0-9.e+\s"',;\\{}\[\]-])(?P<v>[^\s"',;\\{}\[\]]{6,}+)"""
)  # fmt: skip
_NAME_TAIL = rb"[a-z0-9_-]{0,30}+"  # aws_secret_access_key, token_value, client_secret_2: the keyword's name goes on
# searched in the original bytes; the whole match is the secret
_CASED_PATTERNS = (
    rb"sk-(?<![A-Za-z0-9_-]sk-)[A-Za-z0-9_-]{16,}+",
    rb"AKIA(?<![A-Za-z0-9_]AKIA)[0-9A-Z]{16}",
    rb"ASIA(?<![A-Za-z0-9_]ASIA)[0-9A-Z]{16}",
    rb"gh[pousr]_(?<![A-Za-z0-9_]gh._)[A-Za-z0-9]{30,}+",
    rb"github_pat_(?<![A-Za-z0-9_]github_pat_)[A-Za-z0-9_]{30,}+",
    rb"xox[abprs]-(?<![A-Za-z0-9_]xox.-)[A-Za-z0-9-]{10,}+",
    rb"AIza(?<![A-Za-z0-9_]AIza)[0-9A-Za-z_-]{35}",
    rb"glpat-(?<![A-Za-z0-9_]glpat-)[A-Za-z0-9_-]{20,}+",
    rb"eyJ(?<![A-Za-z0-9_-]eyJ)[A-Za-z0-9_-]{10,}+\.eyJ[A-Za-z0-9_-]{10,}+\.[A-Za-z0-9_-]{10,}+",
    rb"-----BEGIN[A-Z ]{0,40}PRIVATE KEY-----(?:[^\"-]++|-(?!----))*+-----END[A-Z ]{0,40}PRIVATE KEY-----",
    rb"[sr]k_(?:live|test)_[A-Za-z0-9]{16,}+",  # Stripe
    rb"hf_(?<![A-Za-z0-9_]hf_)[A-Za-z0-9]{30,}+",  # Hugging Face
    rb"npm_(?<![A-Za-z0-9_]npm_)[A-Za-z0-9]{36}",
    rb"SG\.(?<![A-Za-z0-9_]SG\.)[A-Za-z0-9_-]{22}\.[A-Za-z0-9_-]{43}",  # SendGrid
    # HTTP basic credentials: base64 holding a digit, "+", "/" or "=" (not an English word after "Basic")
    rb"Basic(?<![A-Za-z0-9_]Basic)(?:[ ]|\\t)++(?P<v>(?=[A-Za-z0-9+/]{0,200}[0-9+/=])[A-Za-z0-9+/]{8,}+={0,2})",
)
# searched in the lower-cased bytes (same length); group "v" is the secret, the rest stays. A keyword may
# follow "_" (DB_PASSWORD=, MY_APP_SECRET=) but not a letter or digit.
_UNCASED_PATTERNS = (
    rb"bearer(?<![a-z0-9_]bearer)(?:\s|\\[tnr])++(?P<v>[a-z0-9._~+/=-]{8,}+)",
    rb"api(?<![a-z0-9]api)[_-]?key" + _NAME_TAIL + _VALUE,
    rb"secret(?<![a-z0-9]secret)" + _NAME_TAIL + _VALUE,
    rb"passw(?<![a-z0-9]passw)(?:or)?d" + _NAME_TAIL + _VALUE,
    rb"token(?<![a-z0-9]token)" + _NAME_TAIL + _VALUE,
    rb"credential(?<![a-z0-9]credential)" + _NAME_TAIL + _VALUE,
    # a password in a URL's user info (postgresql://user:pw@host): the host follows the last "@"
    rb"://[^\s:/@\"'\\]{1,64}+:(?P<v>[^\s/\"'\\]{1,128}?)@(?=[^\s@/\"'\\]{1,253}+(?:[/:?\"'\\\s]|$))",
)

# Each pattern runs only on a record that may hold a match: most records hold none. One Hyperscan pass over the
# record finds which patterns may match: each is compiled in prefilter mode (lookarounds and possessive runs
# approximated, so it matches a superset of what the pattern matches, never less) and reports once. It needs no
# lower-cased copy (the patterns that run on lower-cased bytes are compiled caseless), and a keyword with a
# number after it (the usage's "total_tokens":18) or a literal in prose ("gh" in "high") runs no pattern at all.
# A 1.2 KB record: 15.4 -> 3.4 µs; a 7.8 KB prompt of English: 93 -> 7 µs (an Aho-Corasick pass over the literals
# every match holds, then every pattern whose literal it held, before).
# (the compiled pattern, the group that is the secret, whether it runs on the lower-cased bytes), by id
_PATTERNS = [
    (rx, "v" if "v" in rx.groupindex else 0, lowered)
    for patterns, lowered in ((_CASED_PATTERNS, False), (_UNCASED_PATTERNS, True))
    for rx in map(re.compile, patterns)
]
_PREFILTER = hyperscan.HS_FLAG_PREFILTER | hyperscan.HS_FLAG_SINGLEMATCH


class _Pass:
    """One Hyperscan database and a scratch space for each thread that scans with it (the scan releases the GIL,
    and a scratch space serves one scan at a time)."""

    def __init__(self, expressions: list[bytes], flags: list[int]) -> None:
        self.db = hyperscan.Database(mode=hyperscan.HS_MODE_BLOCK)
        self.db.compile(
            expressions=expressions, ids=list(range(len(expressions))), elements=len(expressions), flags=flags
        )
        self._local = threading.local()

    def held(self, data: bytes) -> set[int]:
        """The ids of the expressions that match somewhere in ``data``."""
        scratch = getattr(self._local, "scratch", None)
        if scratch is None:
            scratch = self._local.scratch = hyperscan.Scratch(self.db)
        found: set[int] = set()
        self.db.scan(data, match_event_handler=lambda id_, *_: found.add(id_), scratch=scratch)
        return found


@functools.cache
def _secret_patterns() -> _Pass:
    """Compiled once (~50 ms), by the first ``Redactor`` (at start, before the gateway is ready) and not at import
    (``mask_url``'s users need none). A config's known secrets get a pass of their own (a literal each, <1 ms), so
    a reload never compiles this one again."""
    return _Pass(
        [*_CASED_PATTERNS, *_UNCASED_PATTERNS],
        [_PREFILTER] * len(_CASED_PATTERNS) + [_PREFILTER | hyperscan.HS_FLAG_CASELESS] * len(_UNCASED_PATTERNS),
    )


# e-mail: found from its "@" (a literal, so the engine skips ahead), then the local part is looked for in the
# 64 characters before it, starting where its run starts
_EMAIL_DOMAIN = re.compile(r"@(?:[\w-]{1,63}+\.){1,8}[^\W\d_]{2,63}+(?![\w-])")
_EMAIL_LOCAL = re.compile(r"(?<![\w.%+-])[\w.%+-]{1,64}+\Z")
# phone: a whole run of digits and the usual separators, taken once from its first digit; masked when it
# holds 9 to 15 digits (E.164), with a "+" or "(" just before it
_PHONE = re.compile(r"\d(?<![\w.]\d)[\d\s().-]*+")

SECRET_MARK = "[redacted:secret]"
EMAIL_MARK = "[redacted:email]"
PHONE_MARK = "[redacted:phone]"
_MARK = SECRET_MARK.encode()


def _masked(data: bytes, held: set[int]) -> bytes:
    """``data`` with the matches of the ``held`` patterns masked."""
    spans = []
    lower: bytes | None = None
    for index in held:
        rx, group, lowered = _PATTERNS[index]
        subject = data
        if lowered:
            lower = subject = data.lower() if lower is None else lower
        spans += [m.span(group) for m in rx.finditer(subject)]
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


def mask_secrets(data: bytes) -> bytes:
    return _masked(data, _secret_patterns().held(data))


def _emails(s: str) -> str:
    out, last = [], 0
    for m in _EMAIL_DOMAIN.finditer(s):
        local = _EMAIL_LOCAL.search(s, max(last, m.start() - 64), m.start())
        if local is not None:
            out += [s[last : local.start()], EMAIL_MARK]
            last = m.end()
    return "".join([*out, s[last:]]) if out else s


def _phones(s: str) -> str:
    out, last = [], 0
    for m in _PHONE.finditer(s):
        text = m.group(0)
        end = len(text)
        while not text[end - 1].isdigit():
            end -= 1
        after = text[end : end + 1] or s[m.end() : m.end() + 1]
        if after.isalnum() or after == "_" or end > 40:  # part of a word or code, or no single number
            continue
        if not 9 <= sum(c.isdigit() for c in text[:end]) <= 15:
            continue
        start = m.start()
        while start > last and start > m.start() - 2 and s[start - 1] in "+(":
            start -= 1
        out += [s[last:start], PHONE_MARK]
        last = m.start() + end
    return "".join([*out, s[last:]]) if out else s


class Redactor:
    """Masks secrets always, and the optional ``kinds`` (``email``, ``phone``) in every string value."""

    def __init__(self, kinds: Iterable[str] = (), secrets: Iterable[str] = ()) -> None:
        self._patterns = _secret_patterns()
        self.kinds = frozenset(kinds)
        self.secrets = tuple(sorted({s for s in secrets if len(s) >= 4}, key=len, reverse=True))
        self.secrets_b = tuple(s.encode() for s in self.secrets if '"' not in s and "\\" not in s)
        # the known secrets: one pass finds whether the record holds any (each a literal, every byte escaped), and
        # only then is each replaced, longest first
        literals = [b"".join(b"\\x%02x" % byte for byte in secret) for secret in self.secrets_b]
        self._known = _Pass(literals, [hyperscan.HS_FLAG_SINGLEMATCH] * len(literals)) if literals else None

    def line(self, data: bytes) -> bytes:
        """Secrets masked in serialised JSON (or any UTF-8 text)."""
        if self._known is not None and self._known.held(data):
            for secret in self.secrets_b:  # longest first
                if secret in data:
                    data = data.replace(secret, _MARK)
        return _masked(data, self._patterns.held(data))

    def _optional(self, s: str) -> str:
        if "email" in self.kinds and "@" in s:
            s = _emails(s)
        if "phone" in self.kinds:
            s = _phones(s)
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


_SENSITIVE_PARAM = re.compile(r"pass|pwd|secret|token|key|sig|credential|auth", re.IGNORECASE)


def mask_url(url: str) -> str:
    """``url`` with its user info's password and any sensitive query parameter masked (``***``): for DSNs and
    base URLs shown in ``/admin/config`` and logs. The password may itself hold ``@``: the host is after the
    last one. Text that is not a URL is returned as it is."""
    scheme, sep, rest = url.partition("://")
    if not sep:
        return url
    authority, slash, path = rest.partition("/") if "/" in rest.split("?", 1)[0] else (rest, "", "")
    if "@" in authority:
        user, _, host = authority.rpartition("@")
        authority = f"{user.split(':', 1)[0]}:***@{host}" if ":" in user else f"***@{host}"
    rest = authority + slash + path
    base, q, query = rest.partition("?")
    if q:
        fields = [f.partition("=") for f in query.split("&")]
        query = "&".join(k + eq + ("***" if eq and _SENSITIVE_PARAM.search(k) else v) for k, eq, v in fields)
    return scheme + sep + base + q + query
