"""Bearer-token authentication (constant-time) and per-token rate limiting for /v1."""

from __future__ import annotations

import hmac
import logging
import math
import time

from starlette.types import ASGIApp, Receive, Scope, Send

from config.settings import Settings
from feed import keys
from feed.api._http import error
from feed.cache import Cache
from feed.errors import StorageUnavailable

__all__ = ["AuthMiddleware"]

log = logging.getLogger(__name__)

PROTECTED_PREFIX = "/v1/"


class AuthMiddleware:
    """Refuses /v1 requests without a valid ``Authorization: Bearer`` token (401), and
    over-rate ones (429 with Retry-After) when FEED_RATE_LIMIT_PER_TOKEN is set."""

    def __init__(self, app: ASGIApp, settings: Settings) -> None:
        self.app = app
        self.tokens = [t.encode() for t in settings.api_tokens]
        self.rate = settings.rate_limit_per_token

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not scope["path"].startswith(PROTECTED_PREFIX):
            await self.app(scope, receive, send)
            return
        token = self._token(scope)
        if token is None:
            response = error(401, "unauthorized", "A valid bearer token is required.",
                             headers={"WWW-Authenticate": "Bearer"})
            await response(scope, receive, send)
            return
        if self.rate > 0:
            wait = await self._over_rate(scope["app"].state.services.cache, token)
            if wait:
                response = error(
                    429, "rate_limited", "Too many requests for this token; slow down.",
                    headers={"Retry-After": str(max(1, math.ceil(wait)))},
                )
                await response(scope, receive, send)
                return
        await self.app(scope, receive, send)

    def _token(self, scope: Scope) -> bytes | None:
        header = b""
        for name, value in scope["headers"]:
            if name == b"authorization":
                header = value
                break
        scheme, _, presented = header.partition(b" ")
        if scheme.lower() != b"bearer" or not presented:
            return None
        presented = presented.strip()
        matched = None
        for token in self.tokens:  # compare against every token: timing reveals nothing
            if hmac.compare_digest(presented, token):
                matched = token
        return matched

    async def _over_rate(self, cache: Cache, token: bytes) -> float:
        """Seconds to wait, or 0 if the request may go ahead."""
        try:
            return await cache.take_token(
                keys.rate_limit(keys.token_digest(token.decode())), rate=self.rate,
                now_ms=time.time() * 1000,
            )
        except StorageUnavailable as exc:
            log.warning("rate limiter unavailable; request allowed", extra={"error": str(exc)})
            return 0.0
