"""Bearer-token authentication (constant-time), failed-authentication limiting per client
address, and per-token rate limiting for /v1."""

from __future__ import annotations

import asyncio
import hmac
import ipaddress
import logging
import math
import time

from starlette.types import ASGIApp, Receive, Scope, Send

from config.settings import Settings
from feed import keys, metrics
from feed.api._http import error
from feed.api.ratelimit import TokenBuckets
from feed.errors import StorageUnavailable

__all__ = ["AuthMiddleware", "FailureLimiter", "client_address", "request_deadline"]

log = logging.getLogger(__name__)

PROTECTED_PREFIX = "/v1/"
# The longest a request waits on a limiter's shared bucket (the failed-authentication one,
# or the per-token rate) before it goes on: the limiters fail open rather than stall on
# an unreachable cache Redis, and what they waited counts against the request's own
# FEED_API_TIMEOUT (see request_deadline).
FAILURE_LIMIT_TIMEOUT_SECONDS = 0.25
MAX_BLOCKED_ADDRESSES = 10_000  # bounds the per-process memory a flood of addresses costs

def request_deadline(scope: Scope) -> float | None:
    """The event-loop time by which a /v1 request must be answered (set when it arrived;
    None outside /v1): the limiters and the read itself share this one bound."""
    deadline = scope.get("state", {}).get("deadline")
    return float(deadline) if deadline is not None else None


def client_address(scope: Scope) -> str:
    """Who failed, for the limiter: the peer's address; an IPv6 peer by its /64, since one
    host usually holds a whole /64 and could otherwise change address per attempt."""
    client = scope.get("client")
    host = str(client[0]) if client else ""
    try:
        ip = ipaddress.ip_address(host)
    except ValueError:
        return host or "unknown"
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.ipv4_mapped is not None:
            return str(ip.ipv4_mapped)
        return str(ipaddress.IPv6Network((ip, 64), strict=False))
    return str(ip)


class FailureLimiter:
    """Failed authentications per client address: a bucket of ``per_minute`` failures,
    refilled at that rate and shared by every API process through the cache Redis.

    Once the bucket is empty the address is refused (429) until it refills, in this
    process for valid tokens too: were only wrong tokens refused, a guess that hits
    would still be told apart from the ones that miss, and guessing would go on at full
    speed. Valid requests never touch Redis; the block is per process, so other
    processes start refusing the address at its next failure there.
    """

    def __init__(self, per_minute: int) -> None:
        self.burst = per_minute
        self.interval_ms = 60_000 / per_minute
        self._blocked: dict[str, float] = {}  # address -> monotonic time the block ends

    def blocked_for(self, scope: Scope) -> float:
        """Seconds this process still refuses the request's address (0: not refused)."""
        if not self._blocked:  # the usual case: no address to work out
            return 0.0
        address = client_address(scope)
        until = self._blocked.get(address)
        if until is None:
            return 0.0
        left = until - time.monotonic()
        if left <= 0:
            del self._blocked[address]
            return 0.0
        return left

    async def failed(self, buckets: TokenBuckets, scope: Scope) -> float:
        """Count one failure of the request's address; the seconds it is now refused for
        (0: this failure was within its allowance, answer 401)."""
        address = client_address(scope)
        try:
            async with asyncio.timeout(FAILURE_LIMIT_TIMEOUT_SECONDS):
                wait = await buckets.take(
                    keys.auth_failures(address), interval_ms=self.interval_ms,
                    burst=self.burst, now_ms=time.time() * 1000,
                )
        except (StorageUnavailable, TimeoutError) as exc:
            log.warning("failed-authentication limiter unavailable; answered 401",
                        extra={"error": str(exc) or type(exc).__name__})
            return 0.0
        if wait > 0:
            self._block(address, wait)
        return wait

    def _block(self, address: str, seconds: float) -> None:
        now = time.monotonic()
        if len(self._blocked) >= MAX_BLOCKED_ADDRESSES:
            self._blocked = {a: t for a, t in self._blocked.items() if t > now}
            while len(self._blocked) >= MAX_BLOCKED_ADDRESSES:  # the oldest blocks go first
                del self._blocked[next(iter(self._blocked))]
        self._blocked[address] = now + seconds


class AuthMiddleware:
    """Refuses /v1 requests without a valid ``Authorization: Bearer`` token (401), those
    from an address past FEED_AUTH_FAILURES_PER_MINUTE failures (429 with Retry-After),
    and over-rate ones (429 with Retry-After) when FEED_RATE_LIMIT_PER_TOKEN is set."""

    def __init__(self, app: ASGIApp, settings: Settings) -> None:
        self.app = app
        self.tokens = [t.encode() for t in settings.api_tokens]
        self.rate = settings.rate_limit_per_token
        self.budget = settings.api_timeout
        per_minute = settings.auth_failures_per_minute
        self.failures = FailureLimiter(per_minute) if per_minute > 0 else None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not scope["path"].startswith(PROTECTED_PREFIX):
            await self.app(scope, receive, send)
            return
        scope.setdefault("state", {})["deadline"] = (
            asyncio.get_running_loop().time() + self.budget)
        if self.failures is not None and (wait := self.failures.blocked_for(scope)):
            await self._refuse_address(wait, scope, receive, send)
            return
        token = self._token(scope)
        if token is None:
            if self.failures is not None:
                wait = await self.failures.failed(scope["app"].state.buckets, scope)
                if wait:
                    await self._refuse_address(wait, scope, receive, send)
                    return
            metrics.AUTH_FAILURES.labels("unauthorized").inc()
            response = error(401, "unauthorized", "A valid bearer token is required.",
                             headers={"WWW-Authenticate": "Bearer"})
            await response(scope, receive, send)
            return
        if self.rate > 0:
            wait = await self._over_rate(scope["app"].state.buckets, token)
            if wait:
                response = error(
                    429, "rate_limited", "Too many requests for this token; slow down.",
                    headers={"Retry-After": str(max(1, math.ceil(wait)))},
                )
                await response(scope, receive, send)
                return
        await self.app(scope, receive, send)

    @staticmethod
    async def _refuse_address(wait: float, scope: Scope, receive: Receive, send: Send) -> None:
        metrics.AUTH_FAILURES.labels("rate_limited").inc()
        response = error(
            429, "rate_limited",
            "Too many failed authentications from this address; try again later.",
            headers={"Retry-After": str(max(1, math.ceil(wait)))},
        )
        await response(scope, receive, send)

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

    async def _over_rate(self, buckets: TokenBuckets, token: bytes) -> float:
        """Seconds to wait, or 0 if the request may go ahead (also when the cache Redis
        does not answer within a short part of the request's budget: fail open)."""
        try:
            async with asyncio.timeout(min(FAILURE_LIMIT_TIMEOUT_SECONDS, self.budget / 4)):
                return await buckets.take(
                    keys.rate_limit(keys.token_digest(token.decode())),
                    interval_ms=1000 / self.rate, burst=max(1.0, self.rate),
                    now_ms=time.time() * 1000,
                )
        except (StorageUnavailable, TimeoutError) as exc:
            log.warning("rate limiter unavailable; request allowed",
                        extra={"error": str(exc) or type(exc).__name__})
            return 0.0
