"""What the domain needs from the job queue, without depending on arq itself."""

from __future__ import annotations

from typing import Any, Protocol

__all__ = ["BACKFILL", "REALTIME", "JobQueue"]

REALTIME = "realtime"
BACKFILL = "backfill"


class JobQueue(Protocol):
    """Enqueues jobs by function name; a second enqueue of the same ``job_id`` is a no-op."""

    async def enqueue(
        self, function: str, *args: Any, job_id: str, queue: str = REALTIME,
        defer_seconds: float | None = None,
    ) -> bool:
        """Enqueue a job; False if a job with that id is already queued or done."""
        ...
