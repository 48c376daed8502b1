"""The plumbing every part of the cache shares: the Redis client, the guard that maps
Redis failures to StorageUnavailable, batched reads and running the Lua scripts."""

from __future__ import annotations

import asyncio
import inspect
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Generic, TypeVar, cast

from redis.asyncio import Redis
from redis.asyncio.cluster import RedisCluster
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import NoScriptError, RedisError
from redis.exceptions import TimeoutError as RedisTimeoutError

from config.settings import Settings
from feed.cache._scripts import SCRIPTS
from feed.errors import CacheUnavailable, StorageUnavailable

RedisClient = Redis | RedisCluster

CLUSTER_CONCURRENCY = 64  # script calls in flight on a Redis Cluster
OUTAGE_BACKOFF_SECONDS = 1.0  # the cache is skipped this long after a connection failure

Calls = Sequence[tuple[Sequence[str], Sequence[Any]]]  # one script's (keys, args) per call

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class _Read(Generic[T]):
    """One lookup as commands for a pipeline and a parser of their replies, so that
    several lookups can share one round trip (:meth:`Cache.snapshot`)."""

    queue: Callable[[Any], None]
    size: int
    parse: Callable[[list[Any]], T]


class CacheBase:
    """The hot cache's connection and plumbing, over a standalone Redis or a Redis Cluster."""

    def __init__(self, redis: RedisClient, settings: Settings) -> None:
        self.redis = redis
        self.settings = settings
        self.keep = settings.timeline_cache_items + 1  # entries plus the sentinel
        self.active_ttl = settings.active_days * 86_400
        self._sha: dict[str, str] = {}
        self._skip_until = 0.0  # monotonic time until which the cache is not tried

    def _atomic(self) -> Any:
        """A pipeline that is a MULTI/EXEC transaction on a standalone Redis. A Redis Cluster
        has no cross-command transactions in redis-py; every pipeline here touches one
        user's keys and stays correct without one (a reader between two commands sees a
        missing or incomplete set and falls back to storage)."""
        return self.redis.pipeline(transaction=not isinstance(self.redis, RedisCluster))

    # --- scripts ----------------------------------------------------------------------

    async def load_scripts(self) -> None:
        """Load the Lua scripts (again after a Redis restart or SCRIPT FLUSH)."""
        for name, body in SCRIPTS.items():
            self._sha[name] = await self.redis.script_load(body)

    async def _run_many(self, name: str, calls: Calls) -> list[Any]:
        """Run one script for many (keys, args): one pipeline on a standalone Redis; on a
        Redis Cluster (where redis-py pipelines no scripts) concurrent calls, each routed
        to its key's node. Scripts are reloaded after a NOSCRIPT (a restarted Redis)."""
        if not calls:
            return []
        for attempt in range(2):
            if name not in self._sha:
                await self.load_scripts()
            sha = self._sha[name]
            try:
                if isinstance(self.redis, RedisCluster):
                    return await self._run_concurrently(sha, calls)
                pipe = self.redis.pipeline(transaction=False)
                for script_keys, args in calls:
                    pipe.evalsha(sha, len(script_keys), *script_keys, *args)
                return list(await pipe.execute(raise_on_error=True))
            except NoScriptError:
                if attempt:
                    raise
                self._sha.clear()
            except RedisError as exc:
                if "NOSCRIPT" in str(exc) and not attempt:
                    self._sha.clear()
                    continue
                raise self._failed(exc) from exc
        raise AssertionError("unreachable")

    async def _run_concurrently(self, sha: str, calls: Calls) -> list[Any]:
        semaphore = asyncio.Semaphore(CLUSTER_CONCURRENCY)

        async def one(script_keys: Sequence[str], args: Sequence[Any]) -> Any:
            async with semaphore:
                reply: Any = self.redis.evalsha(sha, len(script_keys), *script_keys, *args)
                return await reply

        return list(await asyncio.gather(*(one(k, a) for k, a in calls)))

    # --- batched reads ----------------------------------------------------------------

    async def _fetch(self, *reads: _Read[Any]) -> list[Any]:
        """Run lookups in one pipeline (one round trip; per node on a Redis Cluster)."""
        pipe = self.redis.pipeline(transaction=False)
        for read in reads:
            read.queue(pipe)
        rows = await self._guard(pipe.execute())
        found: list[Any] = []
        at = 0
        for read in reads:
            found.append(read.parse(rows[at:at + read.size]))
            at += read.size
        return found

    async def _one(self, read: _Read[T]) -> T:
        (found,) = await self._fetch(read)
        return cast(T, found)

    # --- failures ---------------------------------------------------------------------

    async def _guard(self, awaitable: Any) -> Any:
        """Await a Redis call, mapping failures to StorageUnavailable.

        After a connection failure the cache is skipped for ``OUTAGE_BACKOFF_SECONDS``
        (callers fall back to DynamoDB at once) instead of every request queueing up
        behind its own reconnect attempt.
        """
        if self._skip_until > time.monotonic():
            if inspect.iscoroutine(awaitable):
                awaitable.close()
            raise CacheUnavailable("redis: not answering a moment ago; cache skipped",
                                   "CacheSkipped")
        try:
            return await awaitable
        except StorageUnavailable:
            raise
        except (RedisError, OSError) as exc:
            raise self._failed(exc) from exc

    def _failed(self, exc: Exception) -> CacheUnavailable:
        if isinstance(exc, RedisConnectionError | RedisTimeoutError | OSError):
            self._skip_until = time.monotonic() + OUTAGE_BACKOFF_SECONDS
        return CacheUnavailable(f"redis: {exc}", type(exc).__name__)
