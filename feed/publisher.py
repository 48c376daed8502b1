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
    def __init__(self, jobs: JobQueue) -> None:
        self.jobs = jobs

    async def publish(self, events: Sequence[object]) -> int:
        """Validate 1-500 events, then enqueue them all. Returns how many were accepted."""
        valid = validate_batch(events)
        await self._enqueue(valid)
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
        yield EventPublisher(ArqJobQueue(redis))
    finally:
        await redis.aclose()
