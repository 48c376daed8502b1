"""The API's rate limits: token buckets in the cache Redis, shared by every API process
(the per-token request rate and the per-address failed-authentication limit)."""

from __future__ import annotations

import hashlib
import time
from typing import Any

from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import NoScriptError, RedisError
from redis.exceptions import TimeoutError as RedisTimeoutError

from feed.cache import OUTAGE_BACKOFF_SECONDS, RedisClient
from feed.errors import CacheUnavailable

__all__ = ["TokenBuckets"]

# Generic cell rate algorithm, one bucket per key. KEYS[1]; ARGV interval between requests
# in ms, burst, now ms. Returns 0 when allowed, else the milliseconds to wait.
TAKE_TOKEN = """
local interval = tonumber(ARGV[1])
local burst = tonumber(ARGV[2])
local now = tonumber(ARGV[3])
local tat = tonumber(redis.call('GET', KEYS[1]) or now)
if tat < now then tat = now end
local new_tat = tat + interval
local wait = new_tat - now - burst * interval
if wait > 0 then return math.ceil(wait) end
redis.call('SET', KEYS[1], tostring(new_tat), 'PX', math.ceil(new_tat - now) + 1000)
return 0
"""
TAKE_TOKEN_SHA = hashlib.sha1(TAKE_TOKEN.encode()).hexdigest()


class TokenBuckets:
    """Buckets of one request per ``interval_ms``, ``burst`` at once, one per key.

    One key per call, so on a Redis Cluster each call runs on its key's node. After a
    connection failure calls fail at once for a moment, so that callers (which fail open)
    do not each wait on a reconnect while the Redis is down.
    """

    def __init__(self, redis: RedisClient) -> None:
        self.redis = redis
        self._skip_until = 0.0  # monotonic time until which Redis is not tried

    async def take(self, key: str, *, interval_ms: float, burst: float,
                   now_ms: float) -> float:
        """Seconds to wait before the next request on this bucket (0: go ahead)."""
        if self._skip_until > time.monotonic():
            raise CacheUnavailable("redis: not answering a moment ago; limiter skipped",
                                   "CacheSkipped")
        try:
            wait_ms = await self._run(key, interval_ms, burst, int(now_ms))
        except (RedisError, OSError) as exc:
            if isinstance(exc, RedisConnectionError | RedisTimeoutError | OSError):
                self._skip_until = time.monotonic() + OUTAGE_BACKOFF_SECONDS
            raise CacheUnavailable(f"redis: {exc}", type(exc).__name__) from exc
        return int(wait_ms) / 1000

    async def _run(self, key: str, *args: Any) -> Any:
        """The script by its digest; loaded (on every node of a cluster) when Redis lacks it."""
        try:
            return await self._evalsha(key, *args)
        except NoScriptError:
            await self.redis.script_load(TAKE_TOKEN)
            return await self._evalsha(key, *args)

    async def _evalsha(self, key: str, *args: Any) -> Any:
        reply: Any = self.redis.evalsha(TAKE_TOKEN_SHA, 1, key, *args)
        return await reply
