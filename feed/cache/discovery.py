"""What recommendations draw on: trending koos and popular authors per language, the
stored recommendations of each reader, and the short locks that keep their refreshes
single-flight."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import orjson

from feed import keys
from feed.cache._base import CacheBase, _Read

POPULAR_KEEP = 1000  # popular creators kept per language
# A language's list outlives a few missed refreshes, then goes (no creator left in it).
POPULAR_TTL_SECONDS = 24 * 3600
# The trending list's sentinel member, "<this><ms>": when the list was computed. Scored
# below every koo (scores are >= 0), so it is the set's lowest member.


class DiscoveryCache(CacheBase):
    """Trending koos, popular authors, stored recommendations and short locks."""

    # --- trending ---------------------------------------------------------------------

    async def trending(self, lang: str, limit: int
                       ) -> tuple[list[tuple[str, float]], int] | None:
        """The best ``limit`` cached trending koos of a language and when (ms) the list was
        computed; None if none is cached."""
        key = keys.trending(lang)
        pipe = self.redis.pipeline(transaction=False)
        pipe.zrevrange(key, 0, limit, withscores=True)
        pipe.zrange(key, 0, 0)  # the lowest member: the keys.TRENDING_AT sentinel
        rows, lowest = await self._guard(pipe.execute())
        if not rows:
            return None
        computed = 0  # a list without the sentinel counts as old
        if lowest and lowest[0].startswith(keys.TRENDING_AT):
            computed = int(lowest[0][len(keys.TRENDING_AT):])
        return [(m, float(s)) for m, s in rows if not keys.is_sentinel(m)][:limit], computed

    async def store_trending(
        self, lang: str, scored: Sequence[tuple[str, float]], *, ttl: int, computed_ms: int,
    ) -> None:
        key = keys.trending(lang)
        pipe = self._atomic()
        pipe.delete(key)
        mapping: dict[str, float] = dict(scored)
        mapping[keys.trending_computed_at(computed_ms)] = -1.0  # below every score: scores are >= 0
        pipe.zadd(key, mapping)
        pipe.expire(key, ttl)
        await self._guard(pipe.execute())

    async def trending_remove(self, lang: str, koo_id: str) -> None:
        await self._guard(self.redis.zrem(keys.trending(lang), koo_id))

    async def try_lock(self, key: str, seconds: float) -> bool:
        """A short lock (SET NX PX) that expires by itself; True if taken."""
        return bool(await self._guard(
            self.redis.set(key, "1", nx=True, px=max(1, int(seconds * 1000)))
        ))

    # --- popular authors --------------------------------------------------------------

    async def popular_authors(self, lang: str, limit: int) -> list[tuple[str, int]] | None:
        """The ``limit`` most-followed creators of a language; None when the language's
        list is not cached (never computed, or the cache was lost)."""
        rows = await self._guard(
            self.redis.zrevrange(keys.popular_authors(lang), 0, limit, withscores=True)
        )
        if not rows:
            return None
        return [(m, int(s)) for m, s in rows if not keys.is_sentinel(m)][:limit]

    async def store_popular(self, lang: str, authors: Sequence[tuple[str, int]]) -> None:
        """Replace a language's popular creators with the refresh job's list. The
        ``keys.LOADED`` member tells an empty list from a missing one."""
        key = keys.popular_authors(lang)
        members: dict[str, float] = {keys.LOADED: -1.0}
        members.update((user, float(followers)) for user, followers in authors[:POPULAR_KEEP])
        pipe = self.redis.pipeline(transaction=True)
        pipe.delete(key)
        pipe.zadd(key, members)
        pipe.expire(key, POPULAR_TTL_SECONDS)
        await self._guard(pipe.execute())

    async def set_popularity(self, lang: str, user_id: str, followers: int) -> None:
        key = keys.popular_authors(lang)
        pipe = self.redis.pipeline(transaction=False)
        pipe.zadd(key, {user_id: followers})
        pipe.zremrangebyrank(key, 0, -(POPULAR_KEEP + 1))
        await self._guard(pipe.execute())

    # --- recommendations --------------------------------------------------------------

    async def recommendations(self, user_id: str, kind: str) -> list[dict[str, Any]] | None:
        """A reader's stored recommendations of one kind, if cached ([] is a cached "none")."""
        return await self._one(self._recommendations_read(user_id, kind))

    def _recommendations_read(self, user_id: str, kind: str
                              ) -> _Read[list[dict[str, Any]] | None]:
        def parse(replies: list[Any]) -> list[dict[str, Any]] | None:
            (raw,) = replies
            if raw is None:
                return None
            found: list[dict[str, Any]] = orjson.loads(raw)
            return found

        return _Read(lambda pipe: pipe.get(keys.recommendations(user_id, kind)), 1, parse)

    async def store_recommendations(
        self, user_id: str, kind: str, items: Sequence[Mapping[str, Any]], *, ttl: int
    ) -> None:
        await self._guard(self.redis.set(
            keys.recommendations(user_id, kind), orjson.dumps(list(items)), ex=max(1, ttl)
        ))

    async def drop_recommendations(self, user_id: str, kind: str) -> None:
        await self._guard(self.redis.delete(keys.recommendations(user_id, kind)))
