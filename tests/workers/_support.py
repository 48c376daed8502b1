"""What the job tests share: a job context as arq hands it to a job, events applied
one by one through the ``apply_event`` job, and what a reader's timeline holds in
DynamoDB and in the cache."""

from __future__ import annotations

import asyncio
import time
import uuid
from typing import Any

from feed import keys
from feed.reader import Reader
from feed.services import Services
from workers.events import apply_event


def job_ctx(svc: Services, *, job_try: int = 1, job_id: str | None = None) -> dict[str, Any]:
    """The context a worker passes its jobs: the services, the queue's Redis, the try."""
    return {"services": svc, "redis": svc.queue_redis, "job_try": job_try,
            "job_id": job_id or f"job-{uuid.uuid4().hex[:12]}", "job_soft_timeout": 25.0}


async def apply(svc: Services, *events: dict[str, Any]) -> list[str]:
    """Apply events in order, each as one ``apply_event`` job (their follow-up jobs are
    left on the queue, not run)."""
    return [await apply_event(job_ctx(svc), e) for e in events]


async def stored(svc: Services, reader: str) -> set[str]:
    """Koo ids in the reader's timeline rows in DynamoDB."""
    rows, _ = await svc.stores.timelines.page(reader, limit=1000)
    return {e.koo_id for e in rows}


async def cached(svc: Services, reader: str) -> set[str] | None:
    """Koo ids in the reader's cached timeline; None if the reader has none."""
    members = await svc.cache.redis.zrange(keys.timeline(reader), 0, -1)
    found = {m.decode() if isinstance(m, bytes) else str(m) for m in members}
    if keys.TIMELINE_READY not in found:
        return None
    return {m for m in found if not m.startswith("!")}


async def activate(svc: Services, reader: str) -> None:
    """Make a reader active, as their first read does: their timeline gets cached."""
    await Reader(svc.manager).feed(reader, limit=5)
    deadline = time.monotonic() + 10
    while await cached(svc, reader) is None:
        assert time.monotonic() < deadline, f"{reader}'s timeline was never cached"
        await asyncio.sleep(0.05)
