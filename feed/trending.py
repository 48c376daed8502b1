"""Trending koos per language: computed from DynamoDB, cached, refreshed in the background.

A cached list older than TRENDING_FRESH_SECONDS is still served while one
process (a Redis lock) recomputes it; with none cached, the reads of one
process share one computation, so an expiry never sends a crowd to DynamoDB.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from feed import keys, recommend
from feed.cache.fallback import without_cache
from feed.models import Koo
from feed.timeline import FeedManager

__all__ = ["TRENDING_FRESH_SECONDS", "TRENDING_SAMPLE", "Trends"]

log = logging.getLogger(__name__)

TRENDING_FRESH_SECONDS = 60  # a trending list older than this is refreshed in the background
TRENDING_TTL_SECONDS = 600  # ... and served meanwhile for up to this long
TRENDING_LOCK_SECONDS = 30
TRENDING_SAMPLE = 500  # recent koos per language and day considered for trending
SAMPLE_PER_AUTHOR = 50  # ... of which at most this many by any one author
TRENDING_PAGES = 4  # pages of TRENDING_SAMPLE read at most to fill the sample


class Trends:
    """The trending lists of every language, as one process reads them."""

    def __init__(self, manager: FeedManager) -> None:
        self.manager = manager
        self.stores = manager.stores
        self.cache = manager.cache
        self._tasks: dict[str, asyncio.Task[list[tuple[str, float]]]] = {}

    async def ids(
        self, lang: str, *, now_ms: int, limit: int = TRENDING_SAMPLE,
    ) -> list[tuple[str, float]]:
        """(koo_id, score) of the best ``limit`` trending koos in one language.

        A cached list older than TRENDING_FRESH_SECONDS is still served while one
        process refreshes it in the background; with none cached, concurrent reads of
        this process share one computation.
        """
        cached = None
        with without_cache("trending"):
            cached = await self.cache.trending(lang, limit)
        if cached is not None:
            entries, computed = cached
            if now_ms - computed > TRENDING_FRESH_SECONDS * 1000:
                self._task(lang, now_ms, refresh=True)
            return entries
        # Shielded: a read that gives up (its time ran out) must not cancel the
        # computation every other read of this language is waiting for.
        shared = self._task(lang, now_ms, refresh=False)
        return (await asyncio.shield(shared))[:limit]

    def _task(self, lang: str, now_ms: int, *, refresh: bool
                       ) -> asyncio.Task[list[tuple[str, float]]]:
        task = self._tasks.get(lang)
        if task is None or task.done():
            task = asyncio.get_running_loop().create_task(
                self._compute(lang, now_ms, refresh=refresh))
            task.add_done_callback(_quietly)
            self._tasks[lang] = task
        return task

    async def _compute(self, lang: str, now_ms: int, *, refresh: bool
                                ) -> list[tuple[str, float]]:
        if refresh:
            taken = False
            with without_cache("try_lock"):
                taken = await self.cache.try_lock(keys.trending_lock(lang),
                                                  TRENDING_LOCK_SECONDS)
            if not taken:
                return []  # another process is refreshing it
        days = await asyncio.gather(*(
            self._sample(lang, day) for day in (now_ms, now_ms - 86_400_000)
        ))
        bodies = [koo for day in days for koo in day]
        scored = recommend.trending(bodies, now_ms=now_ms)[:TRENDING_SAMPLE]
        with without_cache("store_trending"):
            await self.cache.store_trending(lang, scored, ttl=TRENDING_TTL_SECONDS,
                                            computed_ms=now_ms)
        return scored

    async def _sample(self, lang: str, day_ms: int) -> list[Koo]:
        """The day's newest live koos in a language, at most SAMPLE_PER_AUTHOR of any one
        author: a burst of koos by one author would otherwise be the whole sample, so
        the reading goes on (a bounded number of pages) past what one author filled."""
        kept: list[Koo] = []
        per_author: dict[str, int] = {}
        before: str | None = None
        for _ in range(TRENDING_PAGES):
            page = await self.stores.koos.recent_in_lang(lang, day_ms, limit=TRENDING_SAMPLE,
                                                         before=before)
            bodies = await self.manager.koos([koo_id for koo_id, _ in page])
            for koo_id, _ in page:
                koo = bodies.get(koo_id)
                if koo is None or koo.deleted:
                    continue
                count = per_author.get(koo.author_id, 0)
                if count < SAMPLE_PER_AUTHOR:
                    per_author[koo.author_id] = count + 1
                    kept.append(koo)
            if len(page) < TRENDING_SAMPLE or len(kept) >= TRENDING_SAMPLE:
                break
            before = page[-1][1]
        return kept

    async def with_bodies(self, lang: str, *, now_ms: int) -> list[tuple[Koo, float]]:
        """Trending koos in one language with their bodies, best first."""
        cached = await self.ids(lang, now_ms=now_ms)
        bodies = await self.manager.koos([k for k, _ in cached])
        return [(bodies[k], s) for k, s in cached if k in bodies and not bodies[k].deleted]


def _quietly(task: asyncio.Task[Any]) -> None:
    """Retrieve a background task's exception (logged, not raised anywhere)."""
    if not task.cancelled() and task.exception() is not None:
        log.warning("background refresh failed", extra={"error": str(task.exception())})
