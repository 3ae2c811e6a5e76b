"""Review page sessions: the admin key is exchanged once for a signed session cookie; forms carry a CSRF token.

The cookie is ``base64(json {"r": reviewer, "n": nonce, "e": expiry}) . hmac`` signed with a key derived from
the admin key, so every replica accepts it without shared state and changing the admin key ends every session.
The CSRF token is an HMAC of the session's nonce (a form from another site cannot know it; a cookie alone does
not carry it). Wrong keys are limited per client address (``LoginLimiter``).

Usage::

    signer = Signer(admin_key)
    cookie = signer.issue("ana", now)             # Set-Cookie value
    session = signer.verify(cookie, now)          # Session or None
    ok = signer.csrf_ok(session, form["csrf"])
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
from collections import OrderedDict, deque
from dataclasses import dataclass

import orjson

COOKIE = "turnout_review"
TTL_S = 12 * 3600.0
MAX_FAILURES = 5  # wrong keys per address ...
FAILURE_WINDOW_S = 60.0  # ... within this long, then refused until the window has passed
MAX_ADDRESSES = 10_000


@dataclass(frozen=True)
class Session:
    reviewer: str
    nonce: str


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


class Signer:
    def __init__(self, admin_key: str) -> None:
        self._key = hashlib.sha256(b"turnout review session\x00" + admin_key.encode()).digest()

    def _mac(self, purpose: bytes, data: bytes) -> str:
        return _b64(hmac.new(self._key, purpose + b"\x00" + data, hashlib.sha256).digest())

    def issue(self, reviewer: str, now: float) -> str:
        body = _b64(orjson.dumps({"r": reviewer, "n": secrets.token_urlsafe(16), "e": now + TTL_S}))
        return f"{body}.{self._mac(b'session', body.encode())}"

    def verify(self, cookie: str | None, now: float) -> Session | None:
        if not cookie or "." not in cookie:
            return None
        body, _, mac = cookie.partition(".")
        if not hmac.compare_digest(mac, self._mac(b"session", body.encode())):
            return None
        try:
            data = orjson.loads(_unb64(body))
        except ValueError:
            return None
        if not isinstance(data, dict) or float(data.get("e", 0)) < now:
            return None
        return Session(str(data["r"]), str(data["n"]))

    def csrf(self, session: Session) -> str:
        return self._mac(b"csrf", session.nonce.encode())

    def csrf_ok(self, session: Session, token: str | None) -> bool:
        return bool(token) and hmac.compare_digest(str(token), self.csrf(session))


class LoginLimiter:
    """At most ``MAX_FAILURES`` wrong keys per client address per ``FAILURE_WINDOW_S`` (bounded memory)."""

    def __init__(self) -> None:
        self._failures: OrderedDict[str, deque[float]] = OrderedDict()

    def retry_after(self, address: str, now: float) -> float:
        """Seconds until ``address`` may try again (0: now)."""
        recent = self._failures.get(address)
        if recent is None:
            return 0.0
        while recent and recent[0] <= now - FAILURE_WINDOW_S:
            recent.popleft()
        if len(recent) < MAX_FAILURES:
            return 0.0
        return recent[0] + FAILURE_WINDOW_S - now

    def failed(self, address: str, now: float) -> None:
        recent = self._failures.setdefault(address, deque())
        self._failures.move_to_end(address)
        recent.append(now)
        while len(self._failures) > MAX_ADDRESSES:
            self._failures.popitem(last=False)
