"""The read path's walk over a reader's feed: candidates in time order, before ranking.

:meth:`CandidateWalk.candidates` merges the reader's timeline (the cache
window, then DynamoDB) with the recent koos of followed celebrities, which
are pulled at read time, dropping deleted koos and authors the reader may
not see. ``populate`` rebuilds a reader's cached timeline from DynamoDB,
once (single-flight), when a read finds it missing.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Mapping, Sequence
from dataclasses import dataclass

from config.settings import Settings
from feed import keys
from feed.cache import Cache, TimelineWindow
from feed.cache.fallback import without_cache
from feed.errors import StorageUnavailable
from feed.models import Koo, RelationSets
from feed.store import Entry, Stores
from feed.views import ReaderViews

__all__ = ["Candidate", "CandidateWalk", "Slice"]

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Candidate:
    """A koo that may be shown in a reader's feed, before ranking."""

    koo: Koo
    reason: str  # "following", "self" or "celebrity"

    @property
    def position(self) -> tuple[int, str]:
        return self.koo.created_at, self.koo.koo_id


@dataclass(frozen=True, slots=True)
class Slice:
    """One page worth of eligible candidates in time order, and where to go on from."""

    candidates: list[Candidate]
    boundary: tuple[int, str] | None  # the oldest position consumed
    more: bool


class CandidateWalk(ReaderViews):
    """Walks a reader's feed for the read path (and, from :class:`ReaderViews`, reads
    about readers and koos)."""

    def __init__(self, settings: Settings, stores: Stores, cache: Cache) -> None:
        super().__init__(settings, stores, cache)
        self._background: dict[str, asyncio.Task[None]] = {}  # reader -> its rebuild

    # --- populate: rebuild one reader's cached timeline --------------------------------

    async def populate(self, reader: str) -> bool:
        """Rebuild the reader's cached timeline unless another process is doing it."""
        token = await self.cache.acquire_rebuild(reader)
        if token is None:
            return False
        try:
            entries, more = await self.stores.timelines.page(
                reader, limit=self.settings.timeline_cache_items
            )
            await self.cache.complete_rebuild(
                reader, token, [(e.koo_id, e.created_at) for e in entries], complete=not more,
            )
        except BaseException:
            await self.cache.release_rebuild(reader, token)
            raise
        return True

    def populate_soon(self, reader: str) -> None:
        """Start a background rebuild, unless one for this reader is running here
        (``populate`` is single-flight across processes too)."""
        if reader in self._background:
            return
        task = asyncio.get_running_loop().create_task(self._populate_quietly(reader))
        self._background[reader] = task
        task.add_done_callback(lambda _: self._background.pop(reader, None))

    async def _populate_quietly(self, reader: str) -> None:
        # Nobody awaits this task: a failure is logged here or it would go unseen. The
        # cache stays unready, so the reader's next read starts another rebuild.
        try:
            await self.populate(reader)
        except StorageUnavailable as exc:
            log.warning("timeline rebuild failed", extra={"user_id": reader, "error": str(exc)})
        except Exception:
            log.exception("timeline rebuild failed", extra={"user_id": reader})

    async def drain(self) -> None:
        """Wait for background rebuilds (on shutdown)."""
        if self._background:
            await asyncio.gather(*self._background.values(), return_exceptions=True)

    # --- candidates: the read path ------------------------------------------------------

    @staticmethod
    def batch_for(want: int) -> int:
        """Entries read per step of :meth:`candidates` (a snapshot's window size)."""
        return max(want * 2, 16)

    async def candidates(
        self, reader: str, relations: RelationSets, *, want: int,
        before: tuple[int, str] | None = None, celebrities: frozenset[str] | None = None,
        window: TimelineWindow | None = None, page: tuple[list[Entry], bool] | None = None,
    ) -> Slice:
        """The next ``want`` eligible koos of the reader's feed, newest first.

        Walks the timeline (cache window, then DynamoDB) and the recent koos of
        followed celebrities together in time order, dropping deleted koos and the
        koos of authors the reader does not see (:meth:`RelationSets.sees`).
        ``celebrities``, ``window`` and ``page`` (the same :meth:`batch_for` entries
        from ``before`` in DynamoDB, for when the cache holds no window) are used when
        the caller has read them already.
        """
        if celebrities is None:
            celebrities = await self.celebrities()
        pulled_from = sorted(a for a in relations.following & celebrities
                             if relations.sees(reader, a))
        # How far back each followed celebrity's koos show, read beside the first step.
        floors = asyncio.ensure_future(
            self.pull_floors(reader, pulled_from, followed_at=relations.followed_at))
        try:
            return await self._walk(reader, relations, want, before, pulled_from, floors,
                                    window, page)
        finally:
            if not floors.done():
                floors.cancel()

    async def _walk(
        self, reader: str, relations: RelationSets, want: int, before: tuple[int, str] | None,
        pulled_from: list[str], floors: Awaitable[dict[str, tuple[int, str] | None]],
        window: TimelineWindow | None, page: tuple[list[Entry], bool] | None,
    ) -> Slice:
        out: list[Candidate] = []
        seen: set[str] = set()
        cursor = before
        batch = self.batch_for(want)
        while True:
            timeline, timeline_more = await self._timeline_slice(reader, cursor, batch,
                                                                 window=window, page=page)
            window, page = None, None
            pulled, pulled_horizon = await self._celebrity_slice(
                pulled_from, cursor, batch, floors
            )
            horizon = pulled_horizon
            if timeline_more and timeline:
                last = (timeline[-1][1], timeline[-1][0])
                horizon = last if horizon is None else max(horizon, last)
            merged: dict[str, tuple[int, str, str]] = {}
            for koo_id, created, source in (*timeline, *pulled):
                if koo_id not in seen and (horizon is None or (created, koo_id) >= horizon):
                    merged.setdefault(koo_id, (created, koo_id, source))
            ordered = sorted(merged.values(), reverse=True)
            if not ordered:
                return Slice(out, cursor, False)
            # Bodies a few more than still wanted at a time, newest first: most entries
            # are eligible, so one round trip usually does.
            start = 0
            while start < len(ordered):
                need = want - len(out)
                chunk = ordered[start:start + need + need // 2 + 4]
                start += len(chunk)
                bodies = await self.koos([koo_id for _, koo_id, _ in chunk])
                for created, koo_id, source in chunk:
                    seen.add(koo_id)
                    cursor = (created, koo_id)
                    koo = bodies.get(koo_id)
                    if koo is None or koo.deleted or not relations.sees(reader, koo.author_id):
                        continue
                    if koo.author_id == reader:
                        reason = "self"
                    else:
                        reason = "celebrity" if source == "celebrity" else "following"
                    out.append(Candidate(koo, reason))
                    if len(out) == want:
                        more = (timeline_more or horizon is not None
                                or cursor != ordered[-1][:2])
                        return Slice(out, cursor, more)
            if horizon is None and not timeline_more:
                return Slice(out, cursor, False)

    async def _timeline_slice(
        self, reader: str, before: tuple[int, str] | None, limit: int,
        window: TimelineWindow | None = None, page: tuple[list[Entry], bool] | None = None,
    ) -> tuple[list[tuple[str, int, str]], bool]:
        """(koo_id, created, "timeline") newest first; and whether more may follow.
        ``page``: these ``limit`` entries from ``before``, already read from DynamoDB."""
        found: list[tuple[str, int, str]] = []
        if window is None and page is None:
            with without_cache("window"):
                window = await self.cache.window(reader, limit=limit, before=before)
        if window is not None and window.ready:
            page = None  # read for want of a window: not what follows this one
            found = [(k, c, "timeline") for k, c in window.entries]
            if not window.exhausted:
                return found, True
            if window.complete:
                return found, False  # nothing older in DynamoDB
            if found:
                before = (found[-1][1], found[-1][0])
        elif window is not None:
            self.populate_soon(reader)
        # The cache holds the newest entries only: older ones come from DynamoDB.
        rest = limit - len(found)
        if rest <= 0:
            return found, True
        entries, more = page if page is not None else await self.stores.timelines.page(
            reader, limit=rest, before=keys.sort_key(*before) if before else None
        )
        found += [(e.koo_id, e.created_at, "timeline") for e in entries]
        return found, more

    async def _celebrity_slice(
        self, authors: Sequence[str], before: tuple[int, str] | None, limit: int,
        floors: Awaitable[dict[str, tuple[int, str] | None]],
    ) -> tuple[list[tuple[str, int, str]], tuple[int, str] | None]:
        """Recent koos of followed celebrities older than ``before``; and the horizon: the
        newest position below which some author may have more koos than fetched."""
        if not authors:
            return [], None
        cached: dict[str, tuple[list[tuple[str, int]], bool] | None] = dict.fromkeys(authors)
        with without_cache("author_recent"):
            cached = await self.cache.author_recent(authors, before=before, limit=limit)
        rows: dict[str, list[tuple[str, int]]] = {}
        from_storage: list[tuple[str, tuple[int, str] | None]] = []
        fresh: list[str] = []
        for author in authors:
            hit = cached.get(author)
            if hit is None:
                if before is None:
                    fresh.append(author)  # read their recent koos once, and cache them
                else:
                    from_storage.append((author, before))
                continue
            entries, complete = hit
            rows[author] = entries
            if len(entries) < limit and not complete:
                # The cached set was trimmed: older koos are only in DynamoDB.
                tail = (entries[-1][1], entries[-1][0]) if entries else before
                from_storage.append((author, tail))
        keep = self.settings.celebrity_recent_items
        recents = await asyncio.gather(*(self._recent_of(a) for a in fresh))
        for author, recent in zip(fresh, recents, strict=True):
            rows[author] = recent[:limit]
            if len(recent) < limit and len(recent) >= keep:
                # More than the cache keeps, fewer than this read wants: read on.
                from_storage.append((author, (recent[-1][1], recent[-1][0])))
        loaded = await asyncio.gather(*(
            self.stores.koos.by_author(a, limit=limit - len(rows.get(a, [])), before=b)
            for a, b in from_storage
        ))
        for (author, _), entries in zip(from_storage, loaded, strict=True):
            rows[author] = rows.get(author, []) + entries
        floor_of = await floors
        for author, entries in rows.items():
            floor = floor_of.get(author)
            if floor is not None:
                # Older than the floor: before the follow, past the koos it brings back.
                rows[author] = [(k, c) for k, c in entries if (c, k) >= floor]
        found: list[tuple[str, int, str]] = []
        horizon: tuple[int, str] | None = None
        for entries in rows.values():
            found += [(k, c, "celebrity") for k, c in entries]
            if len(entries) >= limit:
                last = (entries[-1][1], entries[-1][0])
                horizon = last if horizon is None else max(horizon, last)
        return found, horizon

    async def pull_floors(self, reader: str, authors: Sequence[str], *,
                          followed_at: Mapping[str, int] | None = None,
                          ) -> dict[str, tuple[int, str] | None]:
        """For each followed celebrity, the oldest position of theirs the reader sees:
        every koo since the follow, and FEED_BACKFILL_ON_FOLLOW of those before it (as a
        follow brings into a timeline); None when no more than that came before.
        ``followed_at``: the follows' times, when read with the relations (a cold read
        then computes the floors beside its other reads, not after one more)."""
        if not authors:
            return {}
        found: dict[str, tuple[int, str] | None] = {}
        with without_cache("pull_floors"):
            found = await self.cache.pull_floors(reader, authors)
        missing = [a for a in authors if a not in found]
        if not missing:
            return found
        known = followed_at or {}
        unknown = [a for a in missing if a not in known]
        read = dict(zip(unknown, await self.stores.relations.versions(
            [(reader, keys.REL_FOLLOW, a) for a in unknown]), strict=True)) if unknown else {}
        versions = [known[a] if a in known else read[a] for a in missing]
        computed = dict(zip(missing, await asyncio.gather(*(
            self._pull_floor(a, followed_at) for a, followed_at in zip(missing, versions,
                                                                       strict=True)
        )), strict=True))
        with without_cache("store_pull_floors"):
            await self.cache.store_pull_floors(reader, computed)
        return found | computed

    async def _pull_floor(self, author: str, followed_at: int | None
                          ) -> tuple[int, str] | None:
        if followed_at is None:
            return None  # not followed (any more): the relation check hides them anyway
        allowed = self.settings.backfill_on_follow
        if allowed <= 0:
            return (followed_at, "")
        older = await self.stores.koos.by_author(author, limit=allowed, before=(followed_at, ""))
        if len(older) < allowed:
            return None
        koo_id, created = older[-1]
        return (created, koo_id)

    async def _recent_of(self, author: str) -> list[tuple[str, int]]:
        """A pulled author's recent koos from DynamoDB (FEED_CELEBRITY_RECENT_ITEMS of
        them), cached for the next reads; concurrent readers share one query."""

        async def load() -> list[tuple[str, int]]:
            recent = await self.stores.koos.by_author(author, limit=keep)
            with without_cache("store_author_recent"):
                await self.cache.store_author_recent(author, recent,
                                                     complete=len(recent) < keep)
            return recent

        keep = self.settings.celebrity_recent_items
        return await self._once(f"recent:{author}", load)
