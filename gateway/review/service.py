"""What the review page and its JSON API share in one serving process: the store (opened on first use, so a
gateway nobody reviews on holds no connection), the session signer of the current admin key, the login limiter,
and who is asking.

Usage (app lifespan): ``review = ReviewService(gw, dsn)``; endpoints reach it as ``request.state.review``;
``await review.close()`` at shutdown.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from collectors.store import open_store
from collectors.store.base import Store
from gateway.errors import GatewayError, error_payload
from gateway.review.session import COOKIE, LoginLimiter, Session, Signer

if TYPE_CHECKING:
    from gateway.runtime import Gateway


@dataclass(frozen=True)
class Access:
    """An admin caller: by Bearer key (``session`` None: scripts, no CSRF) or by session cookie."""

    reviewer: str | None
    session: Session | None


def json_error(status: int, message: str, code: str, type_: str = "invalid_request_error") -> Response:
    return JSONResponse(error_payload(message, type_, code), status_code=status)


class ReviewService:
    def __init__(self, gateway: Gateway, store_dsn: str) -> None:
        self.gateway = gateway
        self._dsn = store_dsn
        self._store: Store | None = None
        self._opening = asyncio.Lock()
        self._signer: tuple[str, Signer] | None = None
        self.limiter = LoginLimiter()

    async def store(self) -> Store:
        async with self._opening:
            if self._store is None:
                store = open_store(self._dsn)
                await store.open()
                self._store = store
        return self._store

    def signer(self) -> Signer | None:
        """The signer of the admin key now configured (None: no admin key, the page is closed)."""
        key = self.gateway.generation.loaded.secrets.admin_key
        if not key:
            return None
        if self._signer is None or self._signer[0] != key:
            self._signer = (key, Signer(key))
        return self._signer[1]

    def access(self, request: Request) -> Access | None:
        header = request.headers.get("authorization")
        if header:
            try:
                self.gateway.generation.keys.admin(header.encode("latin-1"))
            except (GatewayError, UnicodeEncodeError):
                return None
            return Access(None, None)
        signer = self.signer()
        session = signer.verify(request.cookies.get(COOKIE), time.time()) if signer else None
        return Access(session.reviewer, session) if session else None

    def key_ok(self, key: str) -> bool:
        try:
            self.gateway.generation.keys.admin(b"Bearer " + key.encode("utf-8"))
        except GatewayError:
            return False
        return True

    async def close(self) -> None:
        if self._store is not None:
            await self._store.close()
