"""What the read path knows about a reader, from the hot cache with a DynamoDB fallback.

A feed page needs the reader's profile, relation sets, affinity, the celebrity list,
the stored recommended koos and the first step of the timeline before it can pick
anything. :meth:`ReaderViews.page_state` reads them in one cache round trip and then,
for whatever the cache lacks (all of it after a cache loss), in one DynamoDB round
trip: every read side by side. The values read from DynamoDB are cached only once the
profile shows that the reader exists, so a 404 leaves nothing behind in the cache.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Coroutine, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar, cast

from config.settings import Settings
from feed import keys
from feed.cache import Cache, TimelineWindow
from feed.cache.fallback import without_cache
from feed.errors import NotFound, StorageUnavailable
from feed.models import Koo, RelationSets, User
from feed.store import Entry, Stores

__all__ = ["AFFINITY_SAMPLE", "REACTION_WEIGHT", "PageState", "ReaderViews"]

T = TypeVar("T")

# How much one reaction says about a reader's interest in the koo's author.
REACTION_WEIGHT = {"like": 1, "rekoo": 2, "comment": 3}
AFFINITY_SAMPLE = 200  # recent reactions that make up a reader's affinity
# The fields of a profile that stay in its home region (never in this region's cache).
PROFILE_FIELDS = frozenset({"handle", "lang", "created_at"})
REMOTE = "remote"  # marks a cached stub of a profile that lives in another region
# The refresh job drops the cached copy when it stores new lists, so it may live long.
STORED_RECOMMENDATIONS_CACHE_SECONDS = 900


@dataclass(frozen=True, slots=True)
class PageState:
    """What a feed page needs about its reader before it picks candidates."""

    user: User
    relations: RelationSets
    affinity: dict[str, float]
    celebrities: frozenset[str]
    window: TimelineWindow | None  # the cached timeline window; None: the cache failed
    # The first timeline step read from DynamoDB, when the cache holds no window.
    page: tuple[list[Entry], bool] | None
    recommended: list[dict[str, Any]] | None  # the stored recommended koos, if read


class ReaderViews:
    """Reads about readers and koos: the cache first, DynamoDB for what it lacks."""

    def __init__(self, settings: Settings, stores: Stores, cache: Cache) -> None:
        self.settings = settings
        self.stores = stores
        self.cache = cache
        self._inflight: dict[str, asyncio.Future[Any]] = {}

    # --- one feed page's reader state -----------------------------------------------

    async def page_state(
        self, reader: str, *, window: int, before: tuple[int, str] | None, recommended: bool,
    ) -> PageState:
        """The reader's state for one feed page, with a timeline window of ``window``
        entries from ``before``; ``recommended``: the page shows recommended koos.

        Raises NotFound for a reader who never signed up (or was erased).
        """
        snap = None
        with without_cache("snapshot"):
            snap = await self.cache.snapshot(reader, window=window, before=before)
        cached_window = snap.window if snap is not None else None
        need_page = cached_window is None or not cached_window.ready
        stored = snap.recommended if snap is not None else None
        if (snap is not None and snap.profile is not None and snap.relations is not None
                and snap.affinity is not None and snap.celebrities is not None
                and not need_page and (stored is not None or not recommended)):
            # A warm cache (most reads): no tasks to start for loads that are not needed.
            return PageState(User.from_item(snap.profile), snap.relations, snap.affinity,
                             snap.celebrities, cached_window, None, stored)
        # Everything the cache lacks, side by side: these reads wait for nothing but the
        # snapshot, so a cold page costs one DynamoDB round trip here, not one per read
        # (two when the profile lives in another region's table).
        profile, relations, affinity, celebrities, loaded_stored, page = await asyncio.gather(
            _or_load(snap.profile if snap else None, lambda: self.read_profile(reader)),
            _or_load(snap.relations if snap else None, lambda: self.read_relations(reader)),
            _or_load(snap.affinity if snap else None, lambda: self.read_affinity(reader)),
            _or_load(snap.celebrities if snap else None, self.load_celebrities),
            _when(recommended and stored is None,
                  lambda: self.stores.recommendations.load(reader, "koos")),
            _when(need_page, lambda: self.stores.timelines.page(
                reader, limit=window, before=keys.sort_key(*before) if before else None)),
        )
        # The reader exists: now what was read may be cached.
        writes: list[Coroutine[Any, Any, None]] = []
        if snap is None or snap.profile is None:
            writes.append(self.cache.store_profile(reader, self.cacheable(profile)))
        if snap is None or snap.relations is None:
            writes.append(self.cache.store_relation_sets(reader, relations))
        if snap is None or snap.affinity is None:
            writes.append(self.cache.store_affinity(reader, affinity))
        if loaded_stored is not None:
            writes.append(self.cache.store_recommendations(
                reader, "koos", loaded_stored, ttl=STORED_RECOMMENDATIONS_CACHE_SECONDS))
        await _best_effort(writes)
        return PageState(
            User.from_item(profile), relations, affinity, celebrities, cached_window, page,
            stored if stored is not None else loaded_stored,
        )

    # --- profiles -------------------------------------------------------------------

    async def profile_of(self, user_id: str) -> dict[str, Any]:
        """A signed-up user's profile (as JSON); NotFound otherwise."""
        with without_cache("profile"):
            cached = await self.cache.profile(user_id)
            if cached is not None and REMOTE not in cached:
                return cached
        profile = await self.read_profile(user_id)
        with without_cache("store_profile"):
            await self.cache.store_profile(user_id, self.cacheable(profile))
        return profile

    def cacheable(self, profile: dict[str, Any]) -> dict[str, Any]:
        """What of a profile the hot cache may hold: all of it when the profile lives in
        this service's own table; for one kept in its home region's table, only what our
        table holds too (id, region pointer, counters), marked REMOTE: the profile itself
        is never cached outside its region, so a read that needs it goes there."""
        if self.stores.users.home_of(profile.get("region")) is None:
            return profile
        kept = {k: v for k, v in profile.items() if k not in PROFILE_FIELDS}
        return {**kept, REMOTE: True}

    async def language_of(self, user: User) -> str:
        """The user's language, from their home region when the cache holds only the
        remote stub of their profile (a feed page needs it only for trending koos)."""
        if user.lang:
            return user.lang
        return str((await self.read_profile(user.user_id)).get("lang", ""))

    async def read_profile(self, user_id: str) -> dict[str, Any]:
        """:meth:`profile_of` from DynamoDB only."""
        user = await self.stores.users.get(user_id)
        if user is None:
            raise NotFound(f"user {user_id} is not known")
        return user.as_json()

    # --- relations, celebrities, affinity -------------------------------------------

    async def relations_of(self, reader: str) -> RelationSets:
        """Whom the reader follows, blocks and mutes, and who blocks the reader."""
        with without_cache("relation_sets"):
            cached = await self.cache.relation_sets(reader)
            if cached is not None:
                return cached
        return await self.load_relations(reader)

    async def load_relations(self, reader: str) -> RelationSets:
        """:meth:`relations_of` from DynamoDB (a cache miss), cached for next time."""
        sets = await self.read_relations(reader)
        with without_cache("store_relation_sets"):
            await self.cache.store_relation_sets(reader, sets)
        return sets

    async def read_relations(self, reader: str) -> RelationSets:
        """:meth:`relations_of` from DynamoDB only."""
        followed_at: dict[str, int] = {}
        outgoing, blocked_by = await asyncio.gather(
            self.stores.relations.outgoing(reader, followed_at=followed_at),
            self.stores.relations.incoming(reader, "block"),
        )
        return RelationSets(
            following=frozenset(outgoing.get("follow", ())),
            blocking=frozenset(outgoing.get("block", ())),
            muting=frozenset(outgoing.get("mute", ())),
            blocked_by=frozenset(blocked_by),
            followed_at=followed_at,
        )

    async def celebrities(self) -> frozenset[str]:
        """Authors whose koos are pulled at read time."""
        with without_cache("celebrities"):
            cached = await self.cache.celebrities()
            if cached is not None:
                return cached
        return await self.load_celebrities()

    async def load_celebrities(self) -> frozenset[str]:
        async def load() -> frozenset[str]:
            authors = frozenset(await self.stores.users.celebrities())
            with without_cache("store_celebrities"):
                await self.cache.store_celebrities(authors)
            return authors

        return await self._once("celebrities", load)

    async def load_affinity(self, reader: str) -> dict[str, float]:
        """:meth:`read_affinity`, then cached for the next reads."""
        weights = await self.read_affinity(reader)
        with without_cache("store_affinity"):
            await self.cache.store_affinity(reader, weights)
        return weights

    async def read_affinity(self, reader: str) -> dict[str, float]:
        """author_id -> weight of the reader's recent reactions to that author's koos,
        from DynamoDB."""
        weights: dict[str, float] = {}
        for item in await self.stores.reactions.recent_by_user(reader, limit=AFFINITY_SAMPLE):
            author = item.get("author_id")
            if author and author != reader:
                weights[author] = weights.get(author, 0.0) + REACTION_WEIGHT.get(item["kind"], 1)
        return weights

    # --- koos and stored recommendations --------------------------------------------

    async def koos(self, koo_ids: Sequence[str]) -> dict[str, Koo]:
        """Koos by id (deleted ones marked), from the cache, then DynamoDB for the misses."""
        found: dict[str, Koo] = {}
        with without_cache("get_koos"):
            found = await self.cache.get_koos(koo_ids)
        missing = [k for k in koo_ids if k not in found]
        if missing:
            loaded = await self.stores.koos.get_many(missing)
            found.update(loaded)
            with without_cache("put_koos"):
                await self.cache.put_koos(loaded.values())
        return found

    async def stored_recommendations(self, reader: str, kind: str) -> list[dict[str, Any]]:
        """Stored recommendations of one kind (cache first; [] when none are stored)."""
        with without_cache("recommendations"):
            cached = await self.cache.recommendations(reader, kind)
            if cached is not None:
                return cached
        stored = await self.stores.recommendations.load(reader, kind)
        with without_cache("store_recommendations"):
            await self.cache.store_recommendations(reader, kind, stored,
                                                   ttl=STORED_RECOMMENDATIONS_CACHE_SECONDS)
        return stored

    # --- plumbing -------------------------------------------------------------------

    async def _once(self, key: str, load: Callable[[], Awaitable[T]]) -> T:
        """Run ``load`` once for every concurrent caller with the same ``key`` (a cold
        cache would otherwise send each of a crowd of reads to DynamoDB for the same
        rows). A caller that gives up does not cancel the others' load."""
        task = self._inflight.get(key)
        if task is None:
            task = asyncio.ensure_future(load())
            self._inflight[key] = task
            task.add_done_callback(lambda _: self._inflight.pop(key, None))
        return cast(T, await asyncio.shield(task))


async def _or_load(value: T | None, load: Callable[[], Awaitable[T]]) -> T:
    """``value`` if the cache had it, else what ``load`` reads from DynamoDB."""
    return value if value is not None else await load()


async def _when(wanted: bool, load: Callable[[], Awaitable[T]]) -> T | None:
    return await load() if wanted else None


async def _best_effort(writes: list[Coroutine[Any, Any, None]]) -> None:
    """Run cache writes side by side; an unavailable cache is only a missed write."""
    results = await asyncio.gather(*writes, return_exceptions=True)
    for result in results:
        if isinstance(result, BaseException) and not isinstance(result, StorageUnavailable):
            raise result
