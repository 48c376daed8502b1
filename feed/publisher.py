"""Publish events onto the workers' queue, with the same validation as ``POST /v1/events``.

Example, from any Python service that can reach the queue's Redis::

    import asyncio

    from config.settings import Settings
    from feed.publisher import connect_publisher

    async def main() -> None:
        async with connect_publisher(Settings.from_env()) as publisher:
            accepted = await publisher.publish([
                {"type": "user_followed", "event_id": "e-1", "occurred_at": 1764150000000,
                 "follower_id": "asha", "followee_id": "ravi"},
            ])
            print(accepted)

    asyncio.run(main())

``publish`` validates the whole batch first and enqueues nothing if any
event is invalid (raising :class:`feed.errors.ValidationFailed` with one
error per bad index). Each event becomes one arq job whose id is derived
from its ``event_id`` and its content's digest, serialized as JSON: publishing
the same event again is harmless, and a different event under a used id still
reaches a worker, which dead-letters it.

With ``FEED_QUEUE_MIN_REPLICAS`` above 0, ``publish`` returns only once the whole
batch has reached that many replicas of the queue's Redis (waiting at most
``FEED_QUEUE_REPLICA_TIMEOUT``), and raises :class:`feed.errors.QueueNotReplicated`
otherwise: the batch may still run, but it could be lost with the primary, so publish
it again.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Sequence
from typing import Any

from config.settings import Settings
from feed import keys
from feed.events import event_digest, validate_batch
from feed.jobs import APPLY_EVENT, JobQueue
from feed.queue import ArqJobQueue, open_queue_redis

__all__ = ["EventPublisher", "connect_publisher"]

_CONCURRENCY = 64


class EventPublisher:
    def __init__(self, jobs: JobQueue, *, min_replicas: int = 0,
                 replica_timeout: float = 1.0) -> None:
        self.jobs = jobs
        self.min_replicas = min_replicas
        self.replica_timeout = replica_timeout

    @classmethod
    def over(cls, jobs: ArqJobQueue, settings: Settings) -> EventPublisher:
        """A publisher onto ``jobs`` that waits for the replicas ``settings`` ask for."""
        return cls(jobs, min_replicas=settings.queue_min_replicas,
                   replica_timeout=settings.queue_replica_timeout)

    async def publish(self, events: Sequence[object]) -> int:
        """Validate 1-500 events, then enqueue them all (and, if asked, wait until they
        are on enough replicas). Returns how many were accepted."""
        valid = validate_batch(events)
        if self.min_replicas <= 0:
            await self._enqueue(valid)
            return len(valid)
        if not isinstance(self.jobs, ArqJobQueue):
            raise TypeError("FEED_QUEUE_MIN_REPLICAS needs the queue's Redis")
        primary = await self.jobs.primary_id()
        await self._enqueue(valid)
        await self.jobs.confirm_replicated(self.min_replicas, self.replica_timeout, primary)
        return len(valid)

    async def _enqueue(self, events: list[dict[str, Any]]) -> None:
        semaphore = asyncio.Semaphore(_CONCURRENCY)

        async def one(event: dict[str, Any]) -> None:
            async with semaphore:
                job_id = keys.event_job(event["event_id"], event_digest(event))
                await self.jobs.enqueue(APPLY_EVENT, event, job_id=job_id)

        await asyncio.gather(*(one(e) for e in events))


@contextlib.asynccontextmanager
async def connect_publisher(settings: Settings) -> AsyncIterator[EventPublisher]:
    """A publisher with its own connection to the queue's Redis (closed on exit)."""
    redis = open_queue_redis(settings)
    try:
        yield EventPublisher.over(ArqJobQueue(redis), settings)
    finally:
        await redis.aclose()
