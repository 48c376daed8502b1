"""Erasing a user from the hot cache: their own keys, their koos' bodies, and their id in
other readers' sets, hashes and lists.

A user's own keys all carry the ``{user_id}`` hash tag, so one SCAN pattern finds them
(keys added later are found too). Other readers' relation sets, affinity and pull floors
are cleaned for the readers the erasure met in storage; the lists that mention users
and koos of anyone (popular authors, cached recommendations) are found by SCAN, which is
proportional to the cache's size: an erasure is rare, a stale mention is not allowed.
"""

from __future__ import annotations

from collections.abc import Iterable

from feed import keys
from feed.cache._base import CacheBase

__all__ = ["ErasureCache"]

_RELATION_KEYS = (keys.following, keys.blocking, keys.muting, keys.blocked_by)
SCAN_COUNT = 1000


class ErasureCache(CacheBase):
    """What an erasure takes out of the cache."""

    async def drop_user_keys(self, user_id: str) -> int:
        """Delete every key of the user's own (timeline, sets, profile, ...)."""
        found = [k async for k in self.redis.scan_iter(match=keys.user_keys_pattern(user_id),
                                                       count=SCAN_COUNT)]
        if found:
            pipe = self.redis.pipeline(transaction=False)
            for key in found:
                pipe.delete(key)
            await self._guard(pipe.execute())
        return len(found)

    async def forget_user(self, user_id: str, readers: Iterable[str]) -> None:
        """Take the user's id out of other readers' relation sets, affinity, pull floors
        and live-stream fan sets, and drop their cached profiles (counters) and timelines
        (rebuilt from storage, which no longer holds the user's koos)."""
        pipe = self.redis.pipeline(transaction=False)
        for count, reader in enumerate(readers, 1):
            for key_of in _RELATION_KEYS:
                pipe.srem(key_of(reader), user_id)
            pipe.hdel(keys.affinity(reader), user_id)
            pipe.hdel(keys.pull_floors(reader), user_id)
            pipe.srem(keys.live_fans(reader), user_id)  # a followed celebrity's streamers
            pipe.delete(keys.profile(reader), keys.timeline(reader))
            if count % 500 == 0:
                await self._guard(pipe.execute())
                pipe = self.redis.pipeline(transaction=False)
        pipe.srem(keys.celebrities(), user_id)
        await self._guard(pipe.execute())

    async def erase_koos(self, koo_ids: Iterable[str]) -> None:
        """Delete cached koo bodies outright (a deleted mark would keep the body)."""
        pipe = self.redis.pipeline(transaction=False)
        for koo_id in koo_ids:
            pipe.delete(keys.koo(koo_id))
        await self._guard(pipe.execute())

    async def forget_in_lists(self, user_id: str, koo_ids: set[str]) -> int:
        """Take the user out of every popular-authors list, and drop every cached
        recommendation list naming them or one of their koos (recomputed on the next
        read); returns the lists changed."""
        changed = 0
        async for key in self.redis.scan_iter(match=keys.popular_authors_pattern(),
                                              count=SCAN_COUNT):
            changed += int(await self._guard(self.redis.zrem(key, user_id)))
        async for key in self.redis.scan_iter(match=keys.recommendations_pattern(),
                                              count=SCAN_COUNT):
            raw = await self._guard(self.redis.get(key))
            if raw is None:
                continue
            text = raw.decode() if isinstance(raw, bytes) else str(raw)
            if user_id in text or any(k in text for k in koo_ids):
                await self._guard(self.redis.delete(key))
                changed += 1
        return changed
