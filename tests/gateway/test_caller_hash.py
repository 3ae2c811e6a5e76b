"""``Keys.caller_hash`` is remembered per generation: the same value as the HMAC it stands for, never one caller's
hash for another, and a bounded memory whatever the number of users."""

from __future__ import annotations

import hashlib
import hmac

from gateway.auth import ADMIN_CALLER, MAX_CACHED_CALLERS, Caller, Keys


def expected(secret: str, identity: str) -> str:
    """The stored caller hash, computed here from its definition (the feedback join depends on it never changing)."""
    key = hashlib.sha256(("turnout caller v1\0" + secret).encode()).digest()
    return hmac.new(key, identity.encode(), hashlib.sha256).hexdigest()[:32]


def test_keyed_callers_keep_their_own_hash_asked_once_or_many_times() -> None:
    keys = Keys(["k-1", "k-2"], "admin", caller_key="ck")
    for _ in range(3):
        for key in ("k-1", "k-2"):
            caller = keys.client(f"Bearer {key}".encode())
            assert keys.caller_hash(caller, "any user") == expected("ck", "key:" + key)
            assert keys.caller_hash(Caller(key, False), None) == expected("ck", "key:" + key)  # no digest given
    assert keys.caller_hash(keys.client(b"Bearer admin"), None) == ADMIN_CALLER


def test_open_gateway_hashes_the_user_else_the_token() -> None:
    keys = Keys([], "admin")
    anonymous = keys.client(None)
    for _ in range(2):
        assert keys.caller_hash(anonymous, "u-1") == expected("admin", "user:u-1")
        assert keys.caller_hash(anonymous, "u-2") == expected("admin", "user:u-2")
        assert keys.caller_hash(anonymous, None) == expected("admin", "user:")
        for token in ("t-1", "t-2"):
            caller = keys.client(f"Bearer {token}".encode())
            assert keys.caller_hash(caller, None) == expected("admin", "user:" + token)
            assert keys.caller_hash(caller, "u-1") == expected("admin", "user:u-1")


def test_the_memory_is_bounded_and_stays_right_past_its_bound() -> None:
    keys = Keys([], None, caller_key="ck")
    anonymous = keys.client(None)
    users = [f"user-{i}" for i in range(MAX_CACHED_CALLERS + 50)]
    for user in users + users[:100]:
        assert keys.caller_hash(anonymous, user) == expected("ck", "user:" + user)
        assert len(keys._callers) <= MAX_CACHED_CALLERS
