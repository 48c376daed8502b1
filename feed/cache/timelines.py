"""Cached timelines of active readers: windows, fan-out pushes and merges, and the
single-flight rebuild.

A cached timeline is a sorted set (member koo_id, score created ms) holding a sentinel
member at +inf: ``keys.TIMELINE_READY`` once complete, ``keys.TIMELINE_BUILDING`` while
a rebuild runs. Fan-out pushes only into timelines that exist (active readers), with a
Lua script so the existence check and the write are one atomic step, and trims each set
to ``FEED_TIMELINE_CACHE_ITEMS`` entries.
"""

from __future__ import annotations

import math
import secrets
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from redis.asyncio.cluster import RedisCluster

from feed import keys, metrics
from feed.cache._base import CacheBase, Calls, _Read
from feed.cache.fallback import without_cache

LOCK_TTL_MS = 30_000
PUSH_BATCH = 500  # timelines per push script call on a standalone Redis (~1-2 ms of Redis time)


@dataclass(frozen=True, slots=True)
class TimelineWindow:
    """Entries read from a cached timeline: (koo_id, created ms), newest first."""

    ready: bool
    entries: list[tuple[str, int]]
    exhausted: bool  # the cached set holds nothing older than the last entry
    complete: bool = False  # the cached set holds the reader's whole stored timeline


class TimelineCache(CacheBase):
    """Readers' cached timelines."""

    async def push(self, readers: Iterable[str], koo_id: str, created: int) -> int:
        """Add one koo to every active reader's cached timeline; returns how many.

        On a standalone Redis one script call covers up to PUSH_BATCH readers (a fan-out
        chunk costs a few calls instead of one per follower); a Redis Cluster gets one
        call per reader, each routed to its slot's node.
        """
        timelines = [keys.timeline(r) for r in readers]
        args = (created, koo_id, self.keep)
        calls: Calls
        if isinstance(self.redis, RedisCluster):
            calls = [((key,), args) for key in timelines]
        else:
            calls = [(timelines[i:i + PUSH_BATCH], args)
                     for i in range(0, len(timelines), PUSH_BATCH)]
        results = await self._guard(self._run_many("push", calls))
        return sum(int(r) for r in results)

    async def merge(self, reader: str, entries: Sequence[tuple[str, int]]) -> bool:
        """Add many koos to one reader's cached timeline, if it is cached."""
        if not entries:
            return False
        args: list[Any] = [self.keep]
        for koo_id, created in entries:
            args += [created, koo_id]
        (result,) = await self._guard(self._run_many("merge", [((keys.timeline(reader),), args)]))
        return bool(result)

    async def window(
        self, reader: str, *, limit: int, before: tuple[int, str] | None = None
    ) -> TimelineWindow:
        """Up to ``limit`` cached entries older than ``before`` (created, koo_id), newest first."""
        return await self._one(self._window_read(reader, limit=limit, before=before))

    def _window_read(
        self, reader: str, *, limit: int, before: tuple[int, str] | None
    ) -> _Read[TimelineWindow]:
        key = keys.timeline(reader)

        def queue(pipe: Any) -> None:
            pipe.zmscore(key, [keys.TIMELINE_READY, keys.COMPLETE])
            if before is None:
                pipe.zrevrangebyscore(key, "(inf", "-inf", start=0, num=limit + 1,
                                      withscores=True)
            else:
                # Ties on the score are ordered by member; fetch a little more, cut below.
                pipe.zrevrangebyscore(key, before[0], "-inf", start=0, num=limit + 64,
                                      withscores=True)
            pipe.expire(key, self.active_ttl)

        def parse(replies: list[Any]) -> TimelineWindow:
            (ready_score, complete), rows, _ = replies
            if ready_score is None:
                metrics.CACHE_LOOKUPS.labels("timeline", "miss").inc()
                return TimelineWindow(False, [], False)
            metrics.CACHE_LOOKUPS.labels("timeline", "hit").inc()
            entries: list[tuple[str, int]] = []
            for member, score in rows:
                created = int(score)
                if keys.is_sentinel(member):
                    continue
                if before is not None and (created, member) >= before:
                    continue
                entries.append((member, created))
            exhausted = len(entries) <= limit
            if before is not None and len(rows) >= limit + 64:
                exhausted = False
            return TimelineWindow(True, entries[:limit], exhausted, complete is not None)

        return _Read(queue, 3, parse)

    async def timeline_state(self, reader: str) -> dict[str, Any]:
        """What the cache holds of a reader's timeline, for an operator: whether it is
        ready (complete rebuild), being rebuilt, holds the whole stored timeline, and how
        many entries."""
        key = keys.timeline(reader)
        pipe = self.redis.pipeline(transaction=False)
        pipe.zmscore(key, [keys.TIMELINE_READY, keys.TIMELINE_BUILDING, keys.COMPLETE])
        pipe.zcard(key)
        (ready, building, complete), size = await self._guard(pipe.execute())
        marks = sum(m is not None for m in (ready, building, complete))
        return {"cached": ready is not None, "rebuilding": building is not None,
                "holds_everything": complete is not None, "entries": int(size) - marks}

    async def is_cached(self, reader: str) -> bool:
        return await self._guard(self.redis.zscore(keys.timeline(reader), keys.TIMELINE_READY)) \
            is not None

    async def acquire_rebuild(self, reader: str) -> str | None:
        """Take the single-flight lock for rebuilding a reader's timeline; a token or None."""
        token = secrets.token_hex(8)
        got = await self._guard(
            self.redis.set(keys.timeline_lock(reader), token, nx=True, px=LOCK_TTL_MS)
        )
        if not got:
            return None
        key = keys.timeline(reader)
        if await self._guard(self.redis.zscore(key, keys.TIMELINE_READY)) is not None:
            # Rebuilt by whoever held the lock just before: a reader who saw the miss
            # earlier must not rebuild it a second time.
            await self.release_rebuild(reader, token)
            return None
        # From now on fan-out pushes into this set too, so nothing delivered during the
        # rebuild's read of DynamoDB is missed.
        pipe = self.redis.pipeline(transaction=False)
        pipe.zadd(key, {keys.TIMELINE_BUILDING: math.inf})
        pipe.expire(key, self.active_ttl)
        await self._guard(pipe.execute())
        return token

    async def complete_rebuild(
        self, reader: str, token: str, entries: Sequence[tuple[str, int]], *,
        complete: bool = False,
    ) -> None:
        """Store the rebuilt entries and mark the timeline ready; release the lock.

        ``complete``: the entries are the reader's whole stored timeline, so reads need
        not look in DynamoDB below the cached set (until a trim drops the mark).
        """
        key = keys.timeline(reader)
        mapping: dict[str, float] = dict(entries)
        mapping[keys.TIMELINE_READY] = math.inf
        if complete:
            mapping[keys.COMPLETE] = math.inf
        pipe = self._atomic()
        pipe.zadd(key, mapping)
        pipe.zrem(key, keys.TIMELINE_BUILDING)
        pipe.zremrangebyrank(key, 0, -(self.keep + 1))
        pipe.expire(key, self.active_ttl)
        *_, trimmed, _ = await self._guard(pipe.execute())
        if complete and trimmed:
            # Pushes during the rebuild overflowed the set: it lost its oldest entries.
            await self._guard(self.redis.zrem(key, keys.COMPLETE))
        await self.release_rebuild(reader, token)

    async def release_rebuild(self, reader: str, token: str) -> None:
        with without_cache("release_rebuild"):
            await self._guard(self._run_many("unlock", [((keys.timeline_lock(reader),), (token,))]))

    async def drop_timeline(self, reader: str) -> None:
        await self._guard(self.redis.delete(keys.timeline(reader)))
