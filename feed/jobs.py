"""Every job the workers run, registered once: its name, its queue and its time limit.

Enqueuers name a :class:`Job` from here, never a string, and the queue comes
with it; the workers build their function lists from :data:`JOBS`. The domain
needs only :class:`JobQueue` (what enqueueing promises), never arq itself.

``realtime`` carries events, fan-outs of new koos and follow merges;
``backfill`` carries purges, rebuilds, celebrity demotions and
recommendations, so a large backfill never delays a fresh koo.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Final, Protocol

__all__ = [
    "APPLY_EVENT",
    "BACKFILL",
    "BACKFILL_CHUNK",
    "COMPUTE_RECOMMENDATIONS",
    "DELIVER_KOO_CHUNK",
    "DEMOTE_CELEBRITY",
    "ERASE_USER",
    "FAN_OUT_KOO",
    "JOBS",
    "MERGE_AUTHOR",
    "NOTIFICATION_JOBS",
    "PURGE_AUTHOR",
    "PURGE_DELETED_KOO",
    "PURGE_KOO_NOTIFICATIONS",
    "PURGE_NOTIFICATIONS_FROM",
    "QUEUE_TIMEOUTS",
    "REALTIME",
    "REBUILD_TIMELINE",
    "REFRESH_POPULAR",
    "SWEEP_FANOUTS",
    "SYNC_FOLLOW_NOTIFICATION",
    "SYNC_REACTION_NOTIFICATION",
    "SYNC_REPLY_NOTIFICATION",
    "TRIM_TIMELINE",
    "Job",
    "JobQueue",
]

REALTIME: Final = "realtime"
BACKFILL: Final = "backfill"

# A killed worker's job is picked up again once arq's in-progress mark expires,
# which is the job's timeout plus 10 s: realtime jobs are kept short so a
# SIGKILLed fan-out chunk is redone within a minute.
QUEUE_TIMEOUTS: Final = {REALTIME: 30, BACKFILL: 600}


@dataclass(frozen=True, slots=True)
class Job:
    """One kind of job: the function name the workers register, and its queue."""

    name: str
    queue: str
    # Seconds arq keeps a finished job's result, which also refuses a new job under the
    # same id meanwhile; None: the worker's default, 0: dedupe only while queued.
    keep_result: int | None = None

    @property
    def timeout(self) -> int:
        """Seconds arq lets one run take (the queue's limit)."""
        return QUEUE_TIMEOUTS[self.queue]


APPLY_EVENT: Final = Job("apply_event", REALTIME)
FAN_OUT_KOO: Final = Job("fan_out_koo", REALTIME)
DELIVER_KOO_CHUNK: Final = Job("deliver_koo_chunk", REALTIME)
MERGE_AUTHOR: Final = Job("merge_author_into_timeline", REALTIME)
SWEEP_FANOUTS: Final = Job("sweep_fanouts", REALTIME)  # a cron job, never enqueued
PURGE_DELETED_KOO: Final = Job("purge_deleted_koo", BACKFILL)
PURGE_AUTHOR: Final = Job("purge_author_from_timeline", BACKFILL)
DEMOTE_CELEBRITY: Final = Job("demote_celebrity", BACKFILL)
REBUILD_TIMELINE: Final = Job("rebuild_timeline", BACKFILL)
TRIM_TIMELINE: Final = Job("trim_timeline", BACKFILL, keep_result=0)
COMPUTE_RECOMMENDATIONS: Final = Job("compute_recommendations", BACKFILL)
# Kept five minutes: a read that finds a list missing enqueues it at most that often.
REFRESH_POPULAR: Final = Job("refresh_popular_authors", BACKFILL, keep_result=300)
BACKFILL_CHUNK: Final = Job("backfill_chunk", BACKFILL)
# Realtime: an erasure has a deadline, so it does not wait behind rebuilds; each run works
# for part of the realtime time limit, saves its progress and enqueues the next.
ERASE_USER: Final = Job("erase_user", REALTIME)
# Notifications: each job reads the action's current state, so it is safe to repeat.
SYNC_REACTION_NOTIFICATION: Final = Job("sync_reaction_notification", REALTIME)
SYNC_FOLLOW_NOTIFICATION: Final = Job("sync_follow_notification", REALTIME)
SYNC_REPLY_NOTIFICATION: Final = Job("sync_reply_notification", REALTIME)
PURGE_KOO_NOTIFICATIONS: Final = Job("purge_koo_notifications", BACKFILL)
PURGE_NOTIFICATIONS_FROM: Final = Job("purge_notifications_from", BACKFILL)
NOTIFICATION_JOBS: Final = (
    SYNC_REACTION_NOTIFICATION, SYNC_FOLLOW_NOTIFICATION, SYNC_REPLY_NOTIFICATION,
    PURGE_KOO_NOTIFICATIONS, PURGE_NOTIFICATIONS_FROM,
)

JOBS: Final = (
    APPLY_EVENT, FAN_OUT_KOO, DELIVER_KOO_CHUNK, MERGE_AUTHOR, SWEEP_FANOUTS,
    PURGE_DELETED_KOO, PURGE_AUTHOR, DEMOTE_CELEBRITY, REBUILD_TIMELINE, TRIM_TIMELINE,
    COMPUTE_RECOMMENDATIONS, REFRESH_POPULAR, BACKFILL_CHUNK, ERASE_USER,
    *NOTIFICATION_JOBS,
)


class JobQueue(Protocol):
    """Enqueues registered jobs on their queue; a second enqueue of the same ``job_id`` is
    a no-op."""

    async def enqueue(
        self, job: Job, *args: Any, job_id: str, defer_seconds: float | None = None,
    ) -> bool:
        """Enqueue a job; False if a job with that id is already queued or done."""
        ...
