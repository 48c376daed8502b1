"""What the read path knows about a reader and the authors it pulls: profiles, relation
sets, affinity, the celebrities and their recent koos.

Sets and hashes loaded from storage carry the ``keys.LOADED`` member, so an empty
relation set is told apart from one that is not cached.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import orjson

from feed import keys, metrics
from feed.cache._base import CacheBase, _Read
from feed.models import RelationSets

RELATIONS_TTL_SECONDS = 3600
NO_FLOOR = "-"  # a cached pull floor saying every koo of the author shows
PROFILE_TTL_SECONDS = 300


_RELATION_KEYS = (
    ("following", keys.following),
    ("blocking", keys.blocking),
    ("muting", keys.muting),
    ("blocked_by", keys.blocked_by),
)


class ReaderCache(CacheBase):
    """Profiles, relation sets, affinity, celebrities and authors' recent koos."""

    # --- profiles ---------------------------------------------------------------------

    async def profile(self, user_id: str) -> dict[str, Any] | None:
        return await self._one(self._profile_read(user_id))

    def _profile_read(self, user_id: str) -> _Read[dict[str, Any] | None]:
        def parse(replies: list[Any]) -> dict[str, Any] | None:
            (raw,) = replies
            if raw is None:
                metrics.CACHE_LOOKUPS.labels("profile", "miss").inc()
                return None
            metrics.CACHE_LOOKUPS.labels("profile", "hit").inc()
            found: dict[str, Any] = orjson.loads(raw)
            return found

        return _Read(lambda pipe: pipe.get(keys.profile(user_id)), 1, parse)

    async def store_profile(self, user_id: str, profile: Mapping[str, Any]) -> None:
        await self._guard(
            self.redis.set(keys.profile(user_id), orjson.dumps(profile), ex=PROFILE_TTL_SECONDS)
        )

    async def drop_profiles(self, *user_ids: str) -> None:
        pipe = self.redis.pipeline(transaction=False)
        for user_id in user_ids:
            pipe.delete(keys.profile(user_id))
        await self._guard(pipe.execute())

    # --- relations --------------------------------------------------------------------

    async def relation_sets(self, reader: str) -> RelationSets | None:
        """The reader's cached relation sets, or None if any is not loaded."""
        return await self._one(self._relations_read(reader))

    def _relations_read(self, reader: str) -> _Read[RelationSets | None]:
        def queue(pipe: Any) -> None:
            for _, key_of in _RELATION_KEYS:
                pipe.smembers(key_of(reader))

        def parse(rows: list[Any]) -> RelationSets | None:
            if not all(keys.LOADED in row for row in rows):
                metrics.CACHE_LOOKUPS.labels("relations", "miss").inc()
                return None
            metrics.CACHE_LOOKUPS.labels("relations", "hit").inc()
            sets = [frozenset(m for m in row if m != keys.LOADED) for row in rows]
            following, blocking, muting, blocked_by = sets
            return RelationSets(following, blocking, muting, blocked_by)

        return _Read(queue, len(_RELATION_KEYS), parse)

    async def store_relation_sets(self, reader: str, sets: RelationSets) -> None:
        pipe = self._atomic()
        for name, key_of in _RELATION_KEYS:
            key = key_of(reader)
            pipe.delete(key)
            pipe.sadd(key, keys.LOADED, *getattr(sets, name))
            pipe.expire(key, RELATIONS_TTL_SECONDS)
        await self._guard(pipe.execute())

    async def relation_changed(self, key: str, member: str, on: bool) -> None:
        """Keep a loaded relation set in step with a relation event."""
        if on:
            await self._guard(self._run_many("sadd_if_loaded", [((key,), (member,))]))
        else:
            await self._guard(self.redis.srem(key, member))

    # --- pull floors: how far back a followed celebrity's koos show ------------------

    async def pull_floors(self, reader: str, authors: Sequence[str]
                          ) -> dict[str, tuple[int, str] | None]:
        """The cached floors of these followed celebrities (absent: not cached); a floor of
        None means every koo of theirs shows."""
        if not authors:
            return {}
        found = await self._guard(self.redis.hmget(keys.pull_floors(reader), list(authors)))
        return {author: None if value == NO_FLOOR else keys.parse_sort_key(value)
                for author, value in zip(authors, found, strict=True) if value is not None}

    async def store_pull_floors(self, reader: str,
                                floors: Mapping[str, tuple[int, str] | None]) -> None:
        if not floors:
            return
        key = keys.pull_floors(reader)
        pipe = self.redis.pipeline(transaction=False)
        pipe.hset(key, mapping={author: NO_FLOOR if floor is None else keys.sort_key(*floor)
                                for author, floor in floors.items()})
        pipe.expire(key, RELATIONS_TTL_SECONDS)
        await self._guard(pipe.execute())

    async def drop_pull_floor(self, reader: str, author: str) -> None:
        """Forget a floor when the reader follows or unfollows the author again."""
        await self._guard(self.redis.hdel(keys.pull_floors(reader), author))

    # --- celebrities ------------------------------------------------------------------

    async def celebrities(self) -> frozenset[str] | None:
        return await self._one(self._celebrities_read())

    def _celebrities_read(self) -> _Read[frozenset[str] | None]:
        def parse(replies: list[Any]) -> frozenset[str] | None:
            (members,) = replies
            if keys.LOADED not in members:
                return None
            return frozenset(m for m in members if m != keys.LOADED)

        return _Read(lambda pipe: pipe.smembers(keys.celebrities()), 1, parse)

    async def store_celebrities(self, authors: Iterable[str]) -> None:
        pipe = self._atomic()
        pipe.delete(keys.celebrities())
        pipe.sadd(keys.celebrities(), keys.LOADED, *authors)
        pipe.expire(keys.celebrities(), RELATIONS_TTL_SECONDS)
        await self._guard(pipe.execute())

    async def celebrity_changed(self, author: str, on: bool) -> None:
        await self.relation_changed(keys.celebrities(), author, on)

    # --- authors' recent koos -----------------------------------------------------------

    async def author_recent(
        self, authors: Sequence[str], *, before: tuple[int, str] | None, limit: int
    ) -> dict[str, tuple[list[tuple[str, int]], bool] | None]:
        """Cached recent koos of each author older than ``before``, and whether the cached
        set is the author's whole history; None for an author not cached."""
        pipe = self.redis.pipeline(transaction=False)
        top = "(inf" if before is None else before[0]
        for author in authors:
            key = keys.author_recent(author)
            pipe.zmscore(key, [keys.TIMELINE_READY, keys.COMPLETE])
            pipe.zrevrangebyscore(key, top, "-inf", start=0, num=limit + 8, withscores=True)
        rows = await self._guard(pipe.execute())
        found: dict[str, tuple[list[tuple[str, int]], bool] | None] = {}
        for i, author in enumerate(authors):
            (ready, complete), entries = rows[2 * i], rows[2 * i + 1]
            if ready is None:
                found[author] = None
                continue
            found[author] = (
                [
                    (m, int(s)) for m, s in entries
                    if not keys.is_sentinel(m) and (before is None or (int(s), m) < before)
                ][:limit],
                complete is not None,
            )
        return found

    async def store_author_recent(
        self, author: str, entries: Sequence[tuple[str, int]], *, complete: bool
    ) -> None:
        key = keys.author_recent(author)
        mapping: dict[str, float] = dict(entries)
        mapping[keys.TIMELINE_READY] = math.inf
        if complete:
            mapping[keys.COMPLETE] = math.inf
        pipe = self._atomic()
        pipe.delete(key)
        pipe.zadd(key, mapping)
        pipe.expire(key, self.active_ttl)
        await self._guard(pipe.execute())

    async def author_recent_add(self, author: str, koo_id: str, created: int) -> None:
        keep = self.settings.celebrity_recent_items + 1
        await self._guard(
            self._run_many("push", [((keys.author_recent(author),), (created, koo_id, keep))])
        )

    async def author_recent_remove(self, author: str, koo_id: str) -> None:
        await self._guard(self.redis.zrem(keys.author_recent(author), koo_id))

    # --- affinity ---------------------------------------------------------------------

    async def affinity(self, reader: str) -> dict[str, float] | None:
        return await self._one(self._affinity_read(reader))

    def _affinity_read(self, reader: str) -> _Read[dict[str, float] | None]:
        def parse(replies: list[Any]) -> dict[str, float] | None:
            (raw,) = replies
            if keys.LOADED not in raw:
                return None
            return {k: float(v) for k, v in raw.items() if k != keys.LOADED}

        return _Read(lambda pipe: pipe.hgetall(keys.affinity(reader)), 1, parse)

    async def store_affinity(self, reader: str, weights: Mapping[str, float]) -> None:
        key = keys.affinity(reader)
        pipe = self._atomic()
        pipe.delete(key)
        pipe.hset(key, mapping={keys.LOADED: 1, **weights})
        pipe.expire(key, RELATIONS_TTL_SECONDS)
        await self._guard(pipe.execute())

    async def affinity_changed(self, reader: str, author: str, delta: float) -> None:
        # Weights are stored as floats, so the increment must be a float one.
        await self._guard(
            self._run_many("hincrfloat_if_exists", [((keys.affinity(reader),), (author, delta))])
        )
