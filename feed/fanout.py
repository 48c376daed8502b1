"""Fan-out on write: deliver a koo to every follower, in chunks, exactly once.

The coordinator pages through the author's followers on the inverse relation
index; the first chunk is delivered inline (a small author's koo is
delivered by one job), the rest are enqueued as chunk jobs with their own job
ids. Chunk ids are stable (first follower and size), and a koo records which
chunks are done, so a re-run (after a crash, or by the sweeper) skips them.
Celebrity koos are never fanned out: they are pulled at read time. The
:class:`~feed.timeline.FeedManager` owns one FanOut and is how the jobs reach it.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING

from feed import jobs as job
from feed import keys, metrics
from feed.jobs import JobQueue
from feed.store import Entry
from feed.store._codec import Item
from feed.store.koos import FanoutState

if TYPE_CHECKING:
    from feed.timeline import FeedManager

__all__ = ["FanOut"]

log = logging.getLogger(__name__)

CHUNKS_PER_PAGE = 10  # fan-out chunks read per follower query (a page stops at 1 MB anyway)


class FanOut:
    def __init__(self, manager: FeedManager, jobs: JobQueue) -> None:
        self.manager = manager
        self.stores = manager.stores
        self.settings = manager.settings
        self.jobs = jobs

    async def run(self, koo_id: str, attempt: int = 0, *, item: Item | None = None) -> str:
        """Coordinate the fan-out of one koo (``item``: its stored item, if just read).
        Returns what happened (for logs and tests)."""
        if item is None:
            item = await self.stores.koos.get(koo_id, consistent=True)
        if item is None or item.get("deleted") or "created_at" not in item:
            return "gone"
        state = item.get("fanout_state")
        if state not in (FanoutState.PENDING, FanoutState.RUNNING):
            return str(state)
        entry = Entry(koo_id, item["author_id"], int(item["created_at"]))
        size = self.settings.fanout_chunk_size
        page_size = size * CHUNKS_PER_PAGE
        followers, more = await self.stores.relations.incoming_page(
            entry.author_id, keys.REL_FOLLOW, page_size=page_size
        )
        if more is None and len(followers) <= size:
            # Every follower fits one chunk (most authors): deliver at once, no chunk state.
            readers = [entry.author_id, *followers]
            await self.manager.announce(entry, readers)
            await self.manager.push(entry, readers)
            self._observe(entry, len(followers))
            await self.stores.koos.finish_small_fanout(koo_id)
            return "done"
        if not await self.stores.koos.start_fanout(koo_id):
            return "not-started"
        done = set(item.get("fanout_done") or ())
        # The author's own timeline first: it never depends on followers.
        await self.manager.push(entry, [entry.author_id])
        expected: set[str] = set()
        # The first chunk not done yet is delivered here, while the rest are paged and
        # enqueued: chunk jobs start at once instead of after the inline chunk.
        inline: asyncio.Task[bool] | None = None
        try:
            while followers:
                for start in range(0, len(followers), size):
                    part = followers[start:start + size]
                    chunk = keys.chunk_id(part[0], len(part))
                    expected.add(chunk)
                    if chunk in done:
                        continue
                    # Cached timelines first: followers see the koo as the pages go by.
                    await self.manager.announce(entry, part)
                    if inline is None:
                        inline = asyncio.create_task(self.deliver(entry, chunk, part))
                    else:
                        await self.jobs.enqueue(
                            job.DELIVER_KOO_CHUNK, koo_id, chunk, part, entry.author_id,
                            entry.created_at,
                            job_id=keys.fanout_chunk_job(koo_id, f"{chunk}:{attempt}"),
                        )
                if more is None:
                    break
                followers, more = await self.stores.relations.incoming_page(
                    entry.author_id, keys.REL_FOLLOW, page_size=page_size, start=more
                )
            if inline is not None:
                await inline
        finally:
            if inline is not None and not inline.done():
                inline.cancel()  # paging or enqueueing failed: the sweeper re-runs it all
        finished = await self.stores.koos.set_expected(koo_id, expected)
        return "done" if finished else "running"

    async def deliver(self, entry: Entry, chunk: str, followers: Sequence[str]) -> bool:
        """Deliver one chunk; True if that completed the fan-out."""
        await self.manager.push(entry, followers)
        self._observe(entry, len(followers))
        return await self.stores.koos.chunk_done(entry.koo_id, chunk)

    @staticmethod
    def _observe(entry: Entry, delivered: int) -> None:
        metrics.FANOUT_ENTRIES.labels("dynamodb").inc(delivered)
        metrics.FANOUT_LAG.observe(max(0.0, time.time() - entry.created_at / 1000))

    async def deliver_chunk(
        self, koo_id: str, chunk: str, followers: Sequence[str], *,
        author: str | None = None, created: int | None = None,
    ) -> str:
        """The chunk job. With the koo's author and time in the job, nothing is read
        before the delivery, so followers see the koo sooner; a koo deleted meanwhile is
        hidden at read time like any deleted koo, and its rows expire."""
        if author is None or created is None:
            item = await self.stores.koos.get(koo_id, consistent=True)
            if item is None or item.get("deleted") or "created_at" not in item:
                return "gone"
            author, created = item["author_id"], int(item["created_at"])
        finished = await self.deliver(Entry(koo_id, author, created), chunk, followers)
        return "done" if finished else "delivered"

    async def sweep(self, now: int | None = None) -> int:
        """Re-enqueue fan-outs not finished by their deadline; returns how many."""
        now = int(time.time()) if now is None else now
        overdue = await self.stores.koos.overdue_fanouts(now)
        count = 0
        for item in overdue:
            attempt = int(item.get("fanout_deadline", now))
            if await self.jobs.enqueue(
                job.FAN_OUT_KOO, item["koo_id"], attempt,
                job_id=keys.fanout_job(item["koo_id"], attempt),
            ):
                count += 1
                log.warning("re-enqueued an overdue fan-out", extra={"koo_id": item["koo_id"]})
        return count
