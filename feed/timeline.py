"""Every timeline operation, over DynamoDB and the hot cache: :class:`FeedManager`.

Matched pairs: ``push``/``unpush`` deliver one koo to many readers (fan-out,
deletes); ``merge``/``unmerge`` bring one author's koos into or out of one
reader's timeline (follow, unfollow, block, mute). Each job of the workers is
one call here: ``deliver_new_koo``, ``fan_out`` and ``deliver_chunk`` (via
:class:`~feed.fanout.FanOut`), ``undeliver``, ``merge_author``,
``unmerge_author``, ``demote``, ``rebuild`` and ``trim``. The read path's walk
is inherited from :class:`~feed.candidates.CandidateWalk`. DynamoDB is written
first, then the cache, so the cache never holds what storage lacks.
"""

from __future__ import annotations

import asyncio
import logging
import zlib
from collections.abc import Iterable, Sequence
from typing import Any

from config.settings import Settings
from feed import jobs as job
from feed import keys
from feed.cache import Cache
from feed.cache.fallback import without_cache
from feed.candidates import CandidateWalk
from feed.fanout import FanOut
from feed.jobs import JobQueue
from feed.models import RelationSets
from feed.store import Entry, Stores
from feed.store.koos import FanoutState
from feed.views import REACTION_WEIGHT

__all__ = ["REACTION_WEIGHT", "TRIM_SLACK", "FeedManager", "trim_every"]

log = logging.getLogger(__name__)

TRIM_SLACK = 10  # a reader's rows may pass the cap by about 1/TRIM_SLACK before a trim


def trim_every(cap: int) -> int:
    """Deliveries per cap check, on average, for a reader whose cap is ``cap``."""
    return max(1, cap // TRIM_SLACK)


class FeedManager(CandidateWalk):
    """Owns the timelines: storage, cache, fan-out and rebuilds (and, from
    :class:`CandidateWalk`, the read path's walk and reads about readers and koos)."""

    def __init__(self, settings: Settings, stores: Stores, cache: Cache,
                 jobs: JobQueue) -> None:
        super().__init__(settings, stores, cache)
        self.jobs = jobs
        self.fanout = FanOut(self, jobs)

    # --- push / unpush: one koo, many readers ------------------------------------------

    async def announce(self, entry: Entry, readers: Sequence[str]) -> int:
        """Show a koo in active readers' cached timelines before it is stored: fan-out
        calls this first, so followers see the koo within milliseconds while the rows
        take up to seconds. Best effort (``push`` writes the cache again, after storage);
        returns how many cached timelines took it."""
        with without_cache("announce"):
            # Live streams get the koo here too, in the same script call (feed/stream).
            return await self.cache.push_live(readers, entry.koo_id, entry.created_at,
                                              entry.author_id)
        return 0

    async def push(self, entry: Entry, readers: Sequence[str]) -> int:
        """Deliver a koo to readers: DynamoDB rows, then active readers' cached timelines.

        The order keeps nothing lost: a cached timeline rebuilt from storage while the
        rows were being written gets the koo from this push (rebuilds accept pushes).
        """
        await self.stores.timelines.add(readers, entry)
        cached = await self.cache.push_live(readers, entry.koo_id, entry.created_at,
                                            entry.author_id)
        await self._check_caps(r for r in readers if self._trim_due(r, entry.koo_id))
        return cached

    async def unpush(self, entry: Entry, readers: Sequence[str]) -> None:
        """Take a koo back out of readers' stored timelines.

        Cached timelines keep the entry (reads drop deleted koos; trimming ages it out):
        taking it out would leave a cached window that no longer covers the newest rows
        of storage without a gap, and a later, older insert would then skip rows.
        """
        await self.stores.timelines.remove(readers, entry)
        with without_cache("live_note"):
            await self.cache.live_note(readers, "remove", entry.koo_id)

    # --- merge / unmerge: one author, one reader ---------------------------------------

    async def merge(
        self, reader: str, author: str, *, limit: int | None = None,
        recent: Sequence[tuple[str, int]] | None = None,
    ) -> int:
        """Bring up to ``limit`` (default FEED_BACKFILL_ON_FOLLOW) recent koos of an author
        (``recent``, if already read) into a reader's timeline."""
        limit = self.settings.backfill_on_follow if limit is None else limit
        if limit <= 0:
            return 0
        if recent is None:
            recent = await self.stores.koos.by_author(author, limit=limit)
        entries = [Entry(koo_id, author, created) for koo_id, created in recent]
        await self.stores.timelines.add_entries(reader, entries)
        await self.cache.merge(reader, recent)
        return len(entries)

    async def unmerge(self, reader: str, author: str) -> int:
        """Take every koo of an author out of a reader's timeline."""
        rows = await self.stores.timelines.scan_reader(
            reader, max_items=self.settings.timeline_max_items * 2
        )
        mine = [e for e in rows if e.author_id == author]
        await self.stores.timelines.remove_keys(reader, [e.sort_key for e in mine])
        if mine:
            # Removing entries from a full cached window would leave it with a gap below
            # (see unpush); the reader's next read rebuilds it from storage instead.
            await self.cache.drop_timeline(reader)
        return len(mine)

    # --- the per-reader cap (FEED_TIMELINE_MAX_ITEMS) -----------------------------------

    def _trim_due(self, reader: str, koo_id: str) -> bool:
        """Whether this delivery should have the reader's cap checked: about one in
        :func:`trim_every`, chosen by a hash of the pair, so no read or counter is needed
        per delivery, and a reader's rows pass the cap by about a tenth at most (in
        expectation) before a trim takes them back to it."""
        every = trim_every(self.settings.timeline_max_items)
        return zlib.crc32(f"{reader}/{koo_id}".encode()) % every == 0

    async def _check_caps(self, readers: Iterable[str]) -> None:
        """Enqueue a trim of each reader's rows; one queued per reader at a time."""
        await asyncio.gather(*(
            self.jobs.enqueue(job.TRIM_TIMELINE, reader, job_id=keys.trim_job(reader))
            for reader in set(readers)
        ))

    async def trim(self, reader: str) -> int:
        """Delete a reader's rows beyond FEED_TIMELINE_MAX_ITEMS (the per-reader cap)."""
        extra = await self.stores.timelines.older_than_rank(
            reader, self.settings.timeline_max_items
        )
        await self.stores.timelines.remove_keys(reader, extra)
        return len(extra)

    async def rebuild(self, reader: str) -> int:
        """Rebuild a reader's stored timeline from the graph: the recent koos of everyone
        they follow and see (celebrities are pulled at read time), and their own; then
        apply the per-reader cap and refresh the cache. Returns the rows written."""
        relations = await self.read_relations(reader)
        celebrities = set(await self.stores.users.celebrities())
        authors = [*sorted(a for a in relations.following - celebrities
                           if relations.sees(reader, a)), reader]
        written = 0
        for author in authors:
            written += await self.merge(reader, author)
        await self.trim(reader)
        with without_cache("is_cached"):
            if await self.cache.is_cached(reader):
                await self.cache.drop_timeline(reader)
                await self.populate(reader)
        return written

    # --- one koo to its readers: the jobs of new and deleted koos ----------------------

    async def deliver_new_koo(self, koo_id: str, *, item: dict[str, Any] | None = None) -> str:
        """A new koo enters feeds: the author's recent set, then the fan-out to followers
        (or, for a pulled author, the author's own timeline only). ``item``: the koo as
        just stored, if known."""
        if item is None:
            item = await self.stores.koos.get(koo_id, consistent=True)
        if item is None or item.get("deleted") or "created_at" not in item:
            return "gone"
        entry = Entry(item["koo_id"], item["author_id"], int(item["created_at"]))
        await self.cache.author_recent_add(entry.author_id, entry.koo_id, entry.created_at)
        state = item.get("fanout_state")
        if state == FanoutState.PULL:
            await self.push(entry, [entry.author_id])
            with without_cache("live_koo"):
                await self.stream_pulled(entry)
            return "pulled"
        if state in (FanoutState.PENDING, FanoutState.RUNNING):
            return await self.fanout.run(entry.koo_id, item=item)
        return str(state)

    async def fan_out(self, koo_id: str, attempt: int = 0) -> str:
        """Resume (or run) the fan-out of one koo: the sweeper's job."""
        return await self.fanout.run(koo_id, attempt)

    async def deliver_chunk(
        self, koo_id: str, chunk: str, followers: Sequence[str], *,
        author: str | None = None, created: int | None = None,
    ) -> str:
        """One chunk of a large fan-out."""
        return await self.fanout.deliver_chunk(koo_id, chunk, followers, author=author,
                                               created=created)

    async def sweep_fanouts(self) -> int:
        """Re-enqueue fan-outs past their deadline; returns how many."""
        return await self.fanout.sweep()

    async def undeliver(self, koo_id: str) -> int:
        """Purge a deleted koo from its author's and followers' stored timelines."""
        item = await self.stores.koos.get(koo_id, consistent=True)
        if item is None or "created_at" not in item:
            return 0
        entry = Entry(koo_id, item["author_id"], int(item["created_at"]))
        await self.unpush(entry, [entry.author_id])
        count = 1
        async for followers in self.stores.relations.incoming_pages(
            entry.author_id, keys.REL_FOLLOW, page_size=self.settings.fanout_chunk_size
        ):
            await self.unpush(entry, followers)
            count += len(followers)
        return count

    # --- one author and one reader: the jobs of relation changes -----------------------

    async def visible(self, reader: str, author: str) -> bool:
        """Whether the reader should currently see the author's koos, from DynamoDB."""
        if reader == author:
            return True
        follows, blocks, mutes, blocked_by = await self.stores.relations.active_among([
            (reader, keys.REL_FOLLOW, author),
            (reader, keys.REL_BLOCK, author),
            (reader, keys.REL_MUTE, author),
            (author, keys.REL_BLOCK, reader),
        ])
        relations = RelationSets.with_author(author, follows=follows, blocks=blocks,
                                             mutes=mutes, blocked_by=blocked_by)
        return relations.sees(reader, author)

    async def merge_author(self, reader: str, author: str) -> int:
        """After a follow, unblock or unmute: the author's recent koos join the reader's
        timeline, if the reader still sees them and the author is not pulled."""
        recent = await self.stores.koos.by_author(author, limit=self.settings.backfill_on_follow)
        if not recent:
            return 0
        if not await self.visible(reader, author):
            return 0
        if (await self.stores.users.reach(author))[1]:
            return 0  # a celebrity: pulled at read time
        merged = await self.merge(reader, author, recent=recent)
        if any(self._trim_due(reader, koo_id) for koo_id, _ in recent):
            await self._check_caps([reader])
        return merged

    async def unmerge_author(self, reader: str, author: str) -> int:
        """After an unfollow, block or mute: the author's koos leave the reader's stored
        timeline, if the reader still does not see them."""
        if await self.visible(reader, author):
            return 0
        removed = await self.unmerge(reader, author)
        with without_cache("live_removes"):
            if await self.cache.is_live(reader):
                # The reader streams: tell the stream which koos left the feed (pulled
                # authors' included, which have no timeline rows).
                recent = await self.stores.koos.by_author(
                    author, limit=self.settings.backfill_on_follow)
                await self.cache.live_removes(reader, [k for k, _ in recent])
        return removed

    async def stream_pulled(self, entry: Entry) -> int:
        """A pulled (celebrity) author's new koo, for the live streams of the followers
        who stream (it is never fanned out); returns how many streams took it."""
        fans = await self.cache.live_fans(entry.author_id)
        if not fans:
            return 0
        flags = await self.cache.live_koo(fans, entry.koo_id, entry.created_at,
                                          entry.author_id)
        await self.cache.drop_live_fans(
            entry.author_id, [r for r, f in zip(fans, flags, strict=True) if f < 0])
        return sum(f == 1 for f in flags)

    async def demote(self, author: str) -> int:
        """An author fell below the celebrity threshold. Followers who followed while the
        author was pulled never got timeline rows: merge the author's recent koos into
        theirs; then fan out the koos that were pulled, and only then stop pulling (until
        every one is delivered, reads still pull them). Returns the koos fanned out plus
        the timelines merged."""
        followers, _ = await self.stores.users.reach(author)
        if followers >= self.settings.celebrity_followers:
            return 0
        since = await self.stores.users.celebrity_since(author)
        recent = await self.stores.koos.by_author(author, limit=self.settings.backfill_on_follow)
        merged = 0
        if since is not None and recent:
            async for page in self.stores.relations.incoming_pages(author, keys.REL_FOLLOW):
                versions = await self.stores.relations.versions(
                    [(f, keys.REL_FOLLOW, author) for f in page]
                )
                for follower, ver in zip(page, versions, strict=True):
                    if ver is not None and ver >= since and await self.visible(follower, author):
                        await self.merge(follower, author, recent=recent)
                        merged += 1
                        if any(self._trim_due(follower, k) for k, _ in recent):
                            await self._check_caps([follower])
        pulled = await self.stores.koos.by_author(
            author, limit=self.settings.celebrity_recent_items
        )
        fanned = 0
        for koo_id, _ in pulled:
            if await self.stores.koos.unpull(koo_id):
                await self.fanout.run(koo_id)
                fanned += 1
        await self.stores.users.set_celebrity(author, False)
        await self.cache.celebrity_changed(author, False)
        return merged + fanned
