"""The arq adapter: jobs onto the queue's Redis, serialized as JSON.

Everything that knows arq's wire format lives here, so the domain (which sees
only :class:`feed.jobs.JobQueue`), the publisher and the services can share it
without importing one another.
"""

from __future__ import annotations

import time
from typing import Any

import orjson
from arq.connections import ArqRedis
from redis.asyncio import ConnectionPool
from redis.exceptions import RedisError

from config.settings import Settings
from feed import keys
from feed.errors import StorageUnavailable
from feed.jobs import Job

__all__ = ["ArqJobQueue", "deserialize_job", "open_queue_redis", "serialize_job"]


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

    async def healthy(self, queue: str) -> bool:
        """Whether a worker of this queue reported it is alive in the last 30 s."""
        try:
            return bool(await self.pool.exists(keys.worker_health(queue)))
        except (RedisError, OSError) as exc:
            raise StorageUnavailable(f"queue redis: {exc}", type(exc).__name__) from exc

    async def depth(self, queue: str) -> int:
        """Jobs due now in one queue (deferred jobs and the sweeper's next run not counted)."""
        now_ms = int(time.time() * 1000)
        return int(await self.pool.zcount(keys.QUEUES[queue], "-inf", now_ms))


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
