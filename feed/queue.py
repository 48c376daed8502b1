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
from arq.constants import in_progress_key_prefix
from redis.asyncio import ConnectionPool
from redis.asyncio.connection import parse_url
from redis.asyncio.sentinel import Sentinel, SentinelConnectionPool
from redis.exceptions import RedisError, ResponseError

from config.settings import Settings
from feed import keys, metrics
from feed.errors import QueueNotReplicated, StorageUnavailable
from feed.jobs import Job
from feed.logs import redacted_url

__all__ = [
    "ArqJobQueue",
    "QueueRedis",
    "check_replicated",
    "deserialize_job",
    "open_queue_redis",
    "queue_address",
    "queue_failure",
    "release_cut_off_jobs",
    "serialize_job",
    "uses_sentinel",
]


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
        # The run id of the queue's server as last seen by confirm_replicated.
        self.primary: str | None = None

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

    async def primary_id(self) -> str:
        """The run id of the server the queue's connections reach (asked once; later, what
        the last :meth:`confirm_replicated` saw)."""
        if self.primary is None:
            try:
                self.primary = str((await self.pool.info("server"))["run_id"])
            except (RedisError, OSError) as exc:
                raise StorageUnavailable(f"queue redis: {exc}", type(exc).__name__) from exc
        return self.primary

    async def confirm_replicated(self, replicas: int, wait_seconds: float, primary: str
                                 ) -> None:
        """Raise :class:`QueueNotReplicated` unless ``replicas`` replicas hold every write
        made on the queue's server before this call, within ``wait_seconds``.

        WAIT counts only the writes of its own connection, and the batch's enqueues ran on
        other connections of the pool: a probe written just before WAIT, on WAIT's
        connection, comes after all of them in the (ordered) replication stream, so a
        replica that acknowledged it holds them too. ``primary`` is the server's run id
        from before the batch: if the server changed meanwhile (a failover), the batch
        may sit on the old one and is not acknowledged.
        """
        try:
            async with self.pool.pipeline(transaction=False) as pipe:
                pipe.set(keys.QUEUE_REPLICATION_PROBE, b"1")
                pipe.execute_command("WAIT", replicas, max(1, round(wait_seconds * 1000)))
                pipe.info("server")
                _, acknowledged, info = await pipe.execute()
        except (RedisError, OSError) as exc:
            raise StorageUnavailable(f"queue redis: {exc}", type(exc).__name__) from exc
        seen = str(info["run_id"])
        self.primary = seen
        try:
            check_replicated(int(acknowledged), replicas, changed=seen != primary)
        except QueueNotReplicated:
            metrics.QUEUE_UNREPLICATED.inc()
            raise

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


def check_replicated(acknowledged: int, required: int, *, changed: bool = False) -> None:
    """WAIT's outcome: fine if ``acknowledged`` reaches ``required`` on an unchanged
    primary, else :class:`QueueNotReplicated` (answered 503 ``unavailable``)."""
    if changed:
        raise QueueNotReplicated(
            "the queue's primary changed while the batch was enqueued (a failover); "
            "not acknowledged, publish it again", acknowledged, required)
    if acknowledged < required:
        raise QueueNotReplicated(
            f"the batch reached {acknowledged} of the {required} replicas "
            "FEED_QUEUE_MIN_REPLICAS asks for; not acknowledged, publish it again",
            acknowledged, required)


async def release_cut_off_jobs(redis: ArqRedis) -> int:
    """After a failover (or a restart) of the queue's server, let every job that was
    running when it went away run again now rather than when arq's in-progress mark
    expires (40 s): their workers lost their connection (or their process) with it.

    The server's run id is recorded on it; the first worker that finds another one
    there (the record came over from the old primary, or none at all) releases every
    in-progress mark, before any worker starts jobs on the new server; later ones find
    their own run id and release nothing, so jobs started on the new server are left
    alone. Jobs are idempotent: one that was still running somewhere only runs twice.
    Returns how many marks were released.
    """
    try:
        run_id = str((await redis.info("server"))["run_id"])
    except ResponseError:  # a stand-in without INFO (the demo's): it never fails over
        return 0
    previous = await redis.set(keys.QUEUE_PRIMARY, run_id, get=True)
    if previous is not None and _text(previous) == run_id:
        return 0
    marks = [_text(key) async for key in redis.scan_iter(
        match=in_progress_key_prefix + "*", count=1000)]
    released = 0
    for start in range(0, len(marks), 500):
        released += int(await redis.delete(*marks[start:start + 500]))
    return released


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


def uses_sentinel(settings: Settings) -> bool:
    """Whether the queue's Redis is found through Sentinel (which wins over the URL)."""
    return bool(settings.redis_sentinels and settings.redis_sentinel_master)


def queue_address(settings: Settings) -> tuple[str, str]:
    """The variable that points at the queue's Redis and where it points (no password),
    for messages."""
    if uses_sentinel(settings):
        listed = ",".join(f"{host}:{port}" for host, port in settings.redis_sentinels)
        return ("FEED_REDIS_SENTINELS",
                f"primary {settings.redis_sentinel_master!r} of the Sentinels at {listed}")
    return "FEED_REDIS_URL", redacted_url(settings.redis_url)


def queue_failure(settings: Settings, exc: BaseException) -> str:
    """The line of a command that could not use the queue's Redis: where it is, and what
    to check."""
    variable, address = queue_address(settings)
    if isinstance(exc, QueueNotReplicated):
        return (f"the queue's Redis at {address} did not replicate the events in time "
                f"(check its replicas and FEED_QUEUE_MIN_REPLICAS): {exc}")
    return (f"the queue's Redis at {address} is unavailable (check {variable}): "
            f"{str(exc) or type(exc).__name__}")


class QueueRedis(ArqRedis):
    """arq's client over the queue's own connection pool, which closing it closes (and
    the Sentinel clients that find the primary, if any)."""

    sentinels: Sentinel | None = None

    async def aclose(self, close_connection_pool: bool | None = None) -> None:
        try:
            await super().aclose(True if close_connection_pool is None
                                 else close_connection_pool)
        finally:
            if self.sentinels is not None:
                for client in self.sentinels.sentinels:
                    await client.aclose()


def connection_options(settings: Settings) -> dict[str, Any]:
    """Timeouts of the queue's connections: a reply may wait for WAIT's own bound."""
    return {
        "socket_timeout": max(settings.redis_timeout, 5.0,
                              settings.queue_replica_timeout + settings.redis_timeout),
        "socket_connect_timeout": settings.redis_timeout,
        "health_check_interval": 30,
    }


def open_queue_redis(settings: Settings) -> ArqRedis:
    """The queue's Redis (standalone: arq has no cluster mode), with timeouts.

    With FEED_REDIS_SENTINELS and FEED_REDIS_SENTINEL_MASTER, the primary is asked of the
    Sentinels on every new connection, so the client follows a failover: connections to
    the old primary fail, new ones reach the promoted replica. The database number,
    user and password still come from FEED_REDIS_URL.
    """
    options = connection_options(settings)
    sentinel: Sentinel | None = None
    pool: ConnectionPool
    if uses_sentinel(settings):
        url = parse_url(settings.redis_url)
        auth = {k: url[k] for k in ("db", "username", "password") if url.get(k) is not None}
        sentinel = Sentinel(  # type: ignore[no-untyped-call]
            list(settings.redis_sentinels),
            sentinel_kwargs={"socket_timeout": settings.redis_timeout,
                             "socket_connect_timeout": settings.redis_timeout},
        )
        pool = SentinelConnectionPool(  # type: ignore[no-untyped-call]
            settings.redis_sentinel_master, sentinel, ssl=settings.redis_url.startswith(
                "rediss://"), **auth, **options)
    else:
        pool = ConnectionPool.from_url(settings.redis_url, **options)
    redis = QueueRedis(
        pool, job_serializer=serialize_job, job_deserializer=deserialize_job,
        default_queue_name=keys.QUEUE_REALTIME,
    )
    redis.sentinels = sentinel
    return redis
