"""The Redis hot cache: timelines of active readers, koo bodies, what the read path
knows about readers, and what recommendations draw on.

Everything here can be rebuilt from DynamoDB. :class:`Cache` is one object over a
standalone Redis or a Redis Cluster, composed of one part per concern.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from feed.cache._base import OUTAGE_BACKOFF_SECONDS, RedisClient
from feed.cache.discovery import DiscoveryCache
from feed.cache.erasure import ErasureCache
from feed.cache.koos import KooCache
from feed.cache.live import LiveCache
from feed.cache.readers import ReaderCache
from feed.cache.timelines import TimelineCache, TimelineWindow
from feed.models import RelationSets

__all__ = [
    "OUTAGE_BACKOFF_SECONDS",
    "Cache",
    "ReaderSnapshot",
    "RedisClient",
    "RelationSets",
    "TimelineWindow",
]


@dataclass(frozen=True, slots=True)
class ReaderSnapshot:
    """What a feed page needs from the cache about its reader, read in one round trip;
    None where the cache does not hold it."""

    profile: dict[str, Any] | None
    relations: RelationSets | None
    affinity: dict[str, float] | None
    celebrities: frozenset[str] | None
    window: TimelineWindow
    recommended: list[dict[str, Any]] | None


class Cache(TimelineCache, KooCache, ReaderCache, DiscoveryCache, LiveCache, ErasureCache):
    """The hot cache, over a standalone Redis or a Redis Cluster."""

    async def snapshot(
        self, reader: str, *, window: int, before: tuple[int, str] | None = None
    ) -> ReaderSnapshot:
        """The reader's profile, relation sets, affinity, the celebrities, the first
        timeline window and the stored recommended koos, in one round trip."""
        found = await self._fetch(
            self._profile_read(reader), self._relations_read(reader),
            self._affinity_read(reader), self._celebrities_read(),
            self._window_read(reader, limit=window, before=before),
            self._recommendations_read(reader, "koos"),
        )
        return ReaderSnapshot(*found)
