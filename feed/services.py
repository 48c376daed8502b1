"""Open every client the service needs, and build the domain objects over them.

The API's lifespan, the workers' startup, the CLI and the demo all call
:func:`open_services`; nothing opens a client at import time.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any

from arq.connections import ArqRedis
from redis.asyncio import Redis
from redis.asyncio.cluster import RedisCluster
from redis.exceptions import RedisError

from config.settings import Settings
from feed.apply import EventApplier
from feed.cache import Cache, RedisClient
from feed.logs import redacted_url
from feed.publisher import EventPublisher
from feed.queue import ArqJobQueue, open_queue_redis
from feed.store import Stores, open_dynamo, open_regions
from feed.timeline import FeedManager

__all__ = ["Services", "open_cache_redis", "open_services"]

log = logging.getLogger(__name__)


@dataclass
class Services:
    settings: Settings
    stores: Stores
    cache: Cache
    queue_redis: ArqRedis
    jobs: ArqJobQueue
    manager: FeedManager
    applier: EventApplier
    publisher: EventPublisher
    # Opens another connection to the queue's Redis (each arq worker owns and closes one).
    queue_factory: Callable[[], ArqRedis] = field(default=lambda: _unset_factory())


def _unset_factory() -> ArqRedis:
    raise RuntimeError("no queue Redis factory configured")


async def open_cache_redis(settings: Settings) -> RedisClient:
    """The hot cache's Redis: a Redis Cluster if the server says it is one."""
    options: dict[str, Any] = {
        "decode_responses": True,
        "socket_timeout": settings.redis_timeout,
        "socket_connect_timeout": settings.redis_timeout,
    }
    probe: Redis = Redis.from_url(settings.cache_redis_url, **options)
    try:
        info = await probe.info("cluster")
        clustered = bool(info.get("cluster_enabled"))
    except (RedisError, OSError) as exc:
        # No answer yet: start anyway (reads fall back to DynamoDB), but say where to look.
        log.warning("the cache's Redis does not answer; going on without it for now "
                    "(check FEED_CACHE_REDIS_URL)",
                    extra={"url": redacted_url(settings.cache_redis_url), "error": str(exc)})
        clustered = False
    except Exception:  # a stand-in without INFO: standalone
        clustered = False
    if not clustered:
        return probe
    await probe.aclose()
    cluster: RedisCluster = RedisCluster.from_url(settings.cache_redis_url, **options)
    await cluster.initialize()
    return cluster


@contextlib.asynccontextmanager
async def open_services(
    settings: Settings,
    *,
    cache_redis: RedisClient | None = None,
    queue_factory: Callable[[], ArqRedis] | None = None,
) -> AsyncIterator[Services]:
    """Open DynamoDB, the cache Redis and the queue Redis; close them all on exit.

    ``cache_redis`` and ``queue_factory`` replace the clients built from the settings'
    URLs (the demo passes in-process stand-ins).
    """
    async with contextlib.AsyncExitStack() as stack:
        db = await stack.enter_async_context(open_dynamo(settings))
        await db.check_credentials()
        regions = await stack.enter_async_context(open_regions(settings))
        if cache_redis is None:
            cache_redis = await open_cache_redis(settings)
            stack.push_async_callback(cache_redis.aclose)
        if queue_factory is None:
            def queue_factory() -> ArqRedis:
                return open_queue_redis(settings)
        queue_redis = queue_factory()
        stack.push_async_callback(queue_redis.aclose)
        stores = Stores(db, regions)
        cache = Cache(cache_redis, settings)
        jobs = ArqJobQueue(queue_redis)
        manager = FeedManager(settings, stores, cache, jobs)
        stack.push_async_callback(manager.drain)
        yield Services(
            settings=settings,
            stores=stores,
            cache=cache,
            queue_redis=queue_redis,
            jobs=jobs,
            manager=manager,
            applier=EventApplier(manager, jobs),
            publisher=EventPublisher.over(jobs, settings),
            queue_factory=queue_factory,
        )
