"""Client and admin keys, compared in constant time.

Keys are kept only as SHA-256 digests, so a lookup compares digests (time independent of how much of a
key matched) and the raw values live in ``Secrets`` alone.

A named client (``auth.clients``) is a key with a name: ``Caller.client`` says which.

Feedback joins an interaction only when it comes from the same caller, so each stored interaction and feedback
carries ``Keys.caller_hash``: an HMAC (keyed by ``auth.caller_key_env``, else the admin key) of the client key,
or with no client auth of the user (``x-turnout-user``, the body's ``user``, else the bearer token); the admin
key is ``*`` and joins anything.

Usage: ``keys = Keys(["k1"], admin="a1", named={"billing-app": "k2"})``; ``caller = keys.client(auth_header)``
raises ``Unauthorized``; ``keys.caller_hash(caller, user)``.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from gateway.errors import Unauthorized


@dataclass(frozen=True, slots=True)
class Caller:
    key: str | None  # the bearer token presented (for sticky_by: api_key); never logged or stored
    admin: bool
    client: str | None = None  # the name of a named client (auth.clients), stored with its interactions
    digest: bytes | None = None  # SHA-256 of ``key``, when ``Keys.client`` computed it


def _digest(token: str | bytes) -> bytes:
    return hashlib.sha256(token.encode() if isinstance(token, str) else token).digest()


def bearer(header: bytes | None) -> bytes | None:
    if not header:
        return None
    scheme, _, token = header.partition(b" ")
    token = token.strip()
    if scheme.lower() != b"bearer" or not token:
        return None
    return token


ADMIN_CALLER = "*"
MAX_CACHED_CALLERS = 4096  # caller hashes kept per generation (an HMAC is ~3 µs a request); past it, start over


class Keys:
    def __init__(
        self,
        client: Iterable[str],
        admin: str | None,
        *,
        named: Mapping[str, str | None] = {},
        caller_key: str | None = None,
    ) -> None:
        self.client_digests = frozenset(_digest(k) for k in client)
        self.named = {_digest(key): name for name, key in named.items() if key}  # auth.clients
        self.admin_digest = _digest(admin) if admin else None
        self.open = not self.client_digests and not self.named
        self._caller_key = _digest("turnout caller v1\0" + (caller_key or admin or ""))
        self._callers: dict[str | bytes, str] = {}  # identity -> caller_hash: the same few callers ask again and again
        self._anonymous = Caller(None, False)

    def caller_hash(self, caller: Caller, user: str | None) -> str:
        """Who is calling, as stored with interactions and feedback (never the key itself)."""
        if caller.admin:
            return ADMIN_CALLER
        if self.open:
            identity = "user:" + (user or caller.key or "")
        else:
            identity = "key:" + (caller.key or "")
        # remembered by the user, or by the key's digest (a raw key is kept nowhere but in ``Secrets``)
        slot: str | bytes = identity if (self.open and user) or not caller.key else caller.digest or _digest(caller.key)
        found = self._callers.get(slot)
        if found is None:
            if len(self._callers) >= MAX_CACHED_CALLERS:
                self._callers.clear()
            found = hmac.new(self._caller_key, identity.encode(), hashlib.sha256).hexdigest()[:32]
            self._callers[slot] = found
        return found

    def _is_admin(self, digest: bytes) -> bool:
        return self.admin_digest is not None and hmac.compare_digest(digest, self.admin_digest)

    def client(self, header: bytes | None) -> Caller:
        """Who is calling an API route; open when no client keys are configured."""
        token = bearer(header)
        if token is not None:
            digest = _digest(token)
            if self._is_admin(digest):
                return Caller(token.decode("latin-1"), True, digest=digest)
            if (name := self.named.get(digest)) is not None:
                return Caller(token.decode("latin-1"), False, name, digest)
            if self.open or digest in self.client_digests:
                return Caller(token.decode("latin-1"), False, digest=digest)
            raise Unauthorized("invalid API key")
        if self.open:
            return self._anonymous
        raise Unauthorized("missing or malformed API key: send 'Authorization: Bearer <key>'")

    def admin(self, header: bytes | None) -> Caller:
        token = bearer(header)
        if token is None or not self._is_admin(_digest(token)):
            raise Unauthorized("admin routes need the admin key (auth.admin_key_env)")
        return Caller(token.decode("latin-1"), True)
