"""Open every client the service needs, and build the domain objects over them.

The API's lifespan, the workers' startup, the CLI and the demo all call
:func:`open_services`; nothing opens a client at import time.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any

import orjson
from arq.connections import ArqRedis
from redis.asyncio import ConnectionPool, Redis
from redis.asyncio.cluster import RedisCluster
from redis.exceptions import RedisError

from config.settings import Settings
from feed import keys
from feed.apply import EventApplier
from feed.cache import Cache, RedisClient
from feed.errors import StorageUnavailable
from feed.jobs import Job
from feed.publisher import EventPublisher
from feed.store import Stores, open_dynamo, open_regions
from feed.timeline import FeedManager

__all__ = [
    "ArqJobQueue",
    "Services",
    "deserialize_job",
    "open_cache_redis",
    "open_queue_redis",
    "open_services",
    "serialize_job",
]

log = logging.getLogger(__name__)


def serialize_job(data: dict[str, Any]) -> bytes:
    """Jobs and results are JSON (orjson), never pickle; exceptions become their repr.

    A result (arq keeps it for a while, with the job's arguments) keeps ids only: a
    signup's handle and language must not outlive the job in the queue's Redis.
    """
    if "s" in data and "r" in data:  # arq's result record
        data = {**data, "a": _ids_only(data.get("a", ())), "k": _ids_only(data.get("k", {}))}
    return orjson.dumps(data, default=repr)


def _ids_only(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _ids_only(v) for k, v in value.items()
                if k == "type" or k.endswith(("_id", "_ids"))}
    if isinstance(value, list | tuple):
        return [_ids_only(v) for v in value]
    return value


def deserialize_job(raw: bytes) -> Any:
    return orjson.loads(raw)


class ArqJobQueue:
    """:class:`feed.jobs.JobQueue` over arq."""

    def __init__(self, pool: ArqRedis) -> None:
        self.pool = pool

    async def enqueue(
        self, job: Job, *args: Any, job_id: str, defer_seconds: float | None = None,
    ) -> bool:
        try:
            queued = await self.pool.enqueue_job(
                job.name, *args, _job_id=job_id, _queue_name=keys.QUEUES[job.queue],
                _defer_by=defer_seconds,
            )
        except (RedisError, OSError) as exc:  # the queue did not answer: 503, not 500
            raise StorageUnavailable(f"queue redis: {exc}", type(exc).__name__) from exc
        return queued is not None

    async def depth(self, queue: str) -> int:
        """Jobs due now in one queue (deferred jobs and the sweeper's next run not counted)."""
        now_ms = int(time.time() * 1000)
        return int(await self.pool.zcount(keys.QUEUES[queue], "-inf", now_ms))


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


def open_queue_redis(settings: Settings) -> ArqRedis:
    """The queue's Redis (standalone: arq has no cluster mode), with timeouts."""
    pool = ConnectionPool.from_url(
        settings.redis_url,
        socket_timeout=max(settings.redis_timeout, 5.0),
        socket_connect_timeout=settings.redis_timeout,
        health_check_interval=30,
    )
    return ArqRedis(
        pool, job_serializer=serialize_job, job_deserializer=deserialize_job,
        default_queue_name=keys.QUEUE_REALTIME,
    )


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
    except Exception:  # a stand-in without INFO, or no answer yet: assume standalone
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
        manager = FeedManager(settings, stores, cache)
        stack.push_async_callback(manager.drain)
        jobs = ArqJobQueue(queue_redis)
        yield Services(
            settings=settings,
            stores=stores,
            cache=cache,
            queue_redis=queue_redis,
            jobs=jobs,
            manager=manager,
            applier=EventApplier(manager, jobs),
            publisher=EventPublisher(jobs),
            queue_factory=queue_factory,
        )
