"""The read side: ranked feeds, profiles, koos, reactions and recommendations.

The API is a thin layer over :class:`Reader`; so are the demo and the
benchmarks, which call it in-process.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Container
from dataclasses import dataclass
from typing import Any

from config.settings import Settings
from feed import jobs as job
from feed import keys, ranking, recommend
from feed.cache.fallback import without_cache
from feed.candidates import Slice
from feed.cursor import CursorCodec, FeedPosition, InvalidCursor, walk_digest
from feed.errors import NotFound, StorageUnavailable
from feed.models import Koo, RelationSets, User
from feed.ranking import Ranked
from feed.recommend import KooPick, UserPick
from feed.timeline import FeedManager
from feed.trending import Trends
from feed.views import PageState

__all__ = ["FeedPage", "Reader"]

log = logging.getLogger(__name__)

RECOMMENDATION_TTL_SECONDS = 900
TRENDING_FIRST = 50  # trending koos read first for a page's recommendations
FOLLOW_SAMPLE = 100  # followees whose followees are considered for who-to-follow


@dataclass(frozen=True, slots=True)
class FeedPage:
    items: list[Ranked]
    next_cursor: str | None

    def as_json(self, *, explain: bool = False) -> dict[str, Any]:
        items = []
        for ranked in self.items:
            item = ranked.koo.as_json()
            item["score"] = round(ranked.score, 6)
            item["reason"] = ranked.reason
            if explain:
                item["explain"] = {k: round(v, 6) for k, v in ranked.explain.items()}
            items.append(item)
        return {"items": items, "next_cursor": self.next_cursor}


class Reader:
    def __init__(self, manager: FeedManager) -> None:
        self.manager = manager
        self.settings: Settings = manager.settings
        self.stores = manager.stores
        self.cache = manager.cache
        self.cursors = CursorCodec(self.settings.cursor_secret, self.settings.cursor_ttl_seconds)
        self.trends = Trends(manager)

    # --- users ------------------------------------------------------------------------

    async def profile(self, user_id: str) -> dict[str, Any]:
        """A signed-up user's profile; NotFound otherwise."""
        return await self.manager.profile_of(user_id)

    async def user(self, user_id: str) -> User:
        return User.from_item(await self.profile(user_id))

    # --- the home feed ----------------------------------------------------------------

    async def feed(
        self, reader: str, *, limit: int = 20, cursor: str | None = None,
        now_ms: int | None = None,
    ) -> FeedPage:
        """One page of the reader's ranked home feed."""
        now_ms = int(time.time() * 1000) if now_ms is None else now_ms
        walk = FeedPosition()
        if cursor is not None:
            position = self.cursors.decode(cursor, "feed", reader, now=now_ms / 1000)
            walk = FeedPosition.from_position(position)
        every = self.settings.recommended_every
        n_rec = walk.recommended_slots(limit, every)
        want = limit - n_rec
        before = walk.before
        # A cold cache costs three DynamoDB round trips, each waiting for the one before:
        # the reader's state with the first timeline step; pulled celebrities' koos and
        # trending (or the stored recommended koos' bodies); the other bodies.
        state = await self.manager.page_state(
            reader, window=self.manager.batch_for(want), before=before, recommended=n_rec > 0,
        )
        relations = state.relations
        # The page's candidates and its recommended koos are read side by side.
        slice_, picks = await asyncio.gather(
            self._candidates(reader, relations, want, before, state),
            self._recommended_koos(state.user, relations, n_rec, now_ms,
                                   stored=state.recommended, skip=walk.recommended_before),
        )
        shown = {c.koo.koo_id for c in slice_.candidates}
        fresh = [koo for koo, _ in picks if koo.koo_id not in shown][:n_rec]
        if len(fresh) < n_rec and slice_.more:
            # Too few recommended koos for their slots: the timeline fills the rest.
            start = slice_.boundary if slice_.boundary is not None else before
            rest = await self.manager.candidates(
                reader, relations, want=n_rec - len(fresh), before=start,
                celebrities=state.celebrities,
            )
            slice_ = Slice([*slice_.candidates, *rest.candidates],
                           rest.boundary if rest.boundary is not None else start, rest.more)
        ranked = ranking.rank(
            [(c.koo, c.reason) for c in slice_.candidates], now_ms=now_ms,
            affinity=state.affinity, weights=self.settings.weights,
        )
        if not slice_.more:
            # The walk ends on this page: no recommended koo past the last slot it reaches.
            while fresh and walk.recommended_slots(len(ranked) + len(fresh), every) < len(fresh):
                fresh.pop()
        extra = [_as_recommended(koo, now_ms=now_ms, weights=self.settings.weights)
                 for koo in fresh]
        items = ranking.interleave(ranked, extra, every, start=walk.shown)
        next_cursor = None
        if slice_.more and (slice_.boundary is not None or want == 0):
            position = walk.after(slice_.boundary, len(items), [k.koo_id for k in fresh])
            next_cursor = self.cursors.encode("feed", reader, position, now=now_ms / 1000)
        return FeedPage(items, next_cursor)

    async def _candidates(self, reader: str, relations: RelationSets, want: int,
                          before: tuple[int, str] | None, state: PageState) -> Slice:
        if want == 0:
            # A page of recommended koos only (a small page at a recommended slot): the
            # timeline stays where it is (filled in below if none is found).
            return Slice([], before, True)
        return await self.manager.candidates(
            reader, relations, want=want, before=before, celebrities=state.celebrities,
            window=state.window, page=state.page,
        )

    # --- koos -------------------------------------------------------------------------

    async def koo(self, koo_id: str) -> Koo:
        found = (await self.manager.koos([koo_id])).get(koo_id)
        if found is None or found.deleted:
            raise NotFound(f"koo {koo_id} is not known or was deleted")
        return found

    async def author_koos(
        self, author: str, *, limit: int, cursor: str | None = None
    ) -> tuple[list[Koo], str | None]:
        """An author's own live koos, newest first."""
        await self.profile(author)
        before = None
        if cursor is not None:
            position = self.cursors.decode(cursor, "koos", author, now=time.time())
            before = FeedPosition.from_position(position).before
        ids = await self.stores.koos.by_author(author, limit=limit + 1, before=before)
        more = len(ids) > limit
        ids = ids[:limit]
        bodies = await self.manager.koos([k for k, _ in ids])
        koos = [bodies[k] for k, _ in ids if k in bodies and not bodies[k].deleted]
        next_cursor = None
        if more and ids:
            last_id, last_created = ids[-1]
            next_cursor = self.cursors.encode("koos", author, {"t": last_created, "k": last_id},
                                              now=time.time())
        return koos, next_cursor

    async def reactions(
        self, koo_id: str, *, limit: int, cursor: str | None = None
    ) -> tuple[list[dict[str, Any]], str | None]:
        await self.koo(koo_id)
        start = None
        if cursor is not None:
            position = self.cursors.decode(cursor, "reactions", koo_id, now=time.time())
            start = position.get("start")
            if not isinstance(start, dict):
                raise InvalidCursor("the cursor is malformed")
        reactions, last = await self.stores.reactions.for_koo(koo_id, limit=limit, start=start)
        next_cursor = None
        if last is not None and reactions:
            next_cursor = self.cursors.encode("reactions", koo_id, {"start": last},
                                              now=time.time())
        return [r.as_json() for r in reactions], next_cursor

    # --- recommendations --------------------------------------------------------------

    async def recommended_follows(self, reader: str, *, limit: int) -> list[UserPick]:
        """Who to follow: stored by the backfill job, computed on the fly when missing."""
        user = await self.user(reader)
        relations = await self.manager.relations_of(reader)
        excluded = relations.following | relations.hidden
        stored = await self.manager.stored_recommendations(reader, "follows")
        if stored:
            picks = [UserPick(s["target"], s["score"], s["reason"]) for s in stored]
        else:
            picks = await self.compute_follows(user, relations)
        return [p for p in picks if p.user_id not in excluded and p.user_id != reader][:limit]

    async def recommended_koos(
        self, reader: str, *, limit: int, now_ms: int | None = None
    ) -> list[tuple[Koo, KooPick]]:
        now_ms = int(time.time() * 1000) if now_ms is None else now_ms
        user = await self.user(reader)
        relations = await self.manager.relations_of(reader)
        return (await self._recommended_koos(user, relations, limit, now_ms))[:limit]

    async def _recommended_koos(
        self, user: User, relations: RelationSets, limit: int, now_ms: int, *,
        stored: list[dict[str, Any]] | None = None, skip: Container[str] = (),
    ) -> list[tuple[Koo, KooPick]]:
        """The best ``limit`` recommended koos the reader may see: the stored list, or
        trending in their language. Bodies are fetched a few at a time, best first, only
        until ``limit`` are found (a page shows one or two); of the trending list only the
        top TRENDING_FIRST are read unless they are all filtered out. ``stored``: the
        cached stored list, when the caller has read it. ``skip``: koo ids already
        recommended earlier in the reader's walk (by :func:`walk_digest`)."""
        if limit <= 0:
            return []
        if stored is None:
            stored = await self.manager.stored_recommendations(user.user_id, "koos")
        whole = bool(stored)  # a stored list is read whole; trending first in part
        if stored:
            ranked = [KooPick(s["target"], s["score"], s["reason"]) for s in stored]
        else:
            lang = await self.manager.language_of(user)  # from its region if remote
            ranked = [KooPick(koo_id, score, "") for koo_id, score in
                      await self.trends.ids(lang, now_ms=now_ms, limit=TRENDING_FIRST)]
            whole = len(ranked) < TRENDING_FIRST
        excluded = relations.hidden
        out: list[tuple[Koo, KooPick]] = []
        start = 0
        while len(out) < limit:
            if start >= len(ranked):
                if whole:
                    break
                rest = await self.trends.ids(lang, now_ms=now_ms)
                ranked += [KooPick(k, score, "") for k, score in rest[len(ranked):]]
                whole = True
                continue
            chunk = ranked[start:start + max(8, 2 * (limit - len(out)))]
            start += len(chunk)
            chunk = [p for p in chunk if walk_digest(p.koo_id) not in skip]
            bodies = await self.manager.koos([p.koo_id for p in chunk])
            scored = [(bodies[p.koo_id], p.score) for p in chunk if p.koo_id in bodies]
            reasons = {p.koo_id: p.reason for p in chunk}
            for pick in recommend.recommend_koos(
                user.user_id, trending_koos=scored, following=relations.following,
                excluded=excluded, limit=limit - len(out),
            ):
                reason = reasons[pick.koo_id] or pick.reason
                out.append((bodies[pick.koo_id], KooPick(pick.koo_id, pick.score, reason)))
        return out

    async def compute_follows(self, user: User, relations: RelationSets) -> list[UserPick]:
        """Friends of friends weighted by mutual count, plus popular creators in the language."""
        followees = sorted(relations.following)[:FOLLOW_SAMPLE]
        outgoing = await asyncio.gather(
            *(self.stores.relations.outgoing(f) for f in followees)
        )
        mutual: dict[str, int] = {}
        for rel in outgoing:
            for candidate in rel.get(keys.REL_FOLLOW, ()):
                mutual[candidate] = mutual.get(candidate, 0) + 1
        popular: list[tuple[str, int]] | None = []
        with without_cache("popular_authors"):
            popular = await self.cache.popular_authors(user.lang, 50)
        if popular is None:
            # Never computed, or the cache was lost: have it rebuilt (once in a while).
            try:
                await self.manager.jobs.enqueue(job.REFRESH_POPULAR,
                                                job_id=keys.popular_job("missing"))
            except StorageUnavailable as exc:
                log.warning("popular creators not rebuilt", extra={"error": str(exc)})
            popular = []
        return recommend.recommend_follows(
            user.user_id, excluded=relations.following | relations.hidden,
            mutual_counts=mutual, popular=popular, lang=user.lang, limit=100,
        )

    async def refresh_recommendations(self, reader: str, *, now_ms: int | None = None) -> int:
        """Compute and store both recommendation lists of a reader (the backfill job)."""
        now_ms = int(time.time() * 1000) if now_ms is None else now_ms
        user = await self.user(reader)
        relations = await self.manager.relations_of(reader)
        follows = await self.compute_follows(user, relations)
        trending = await self.trends.with_bodies(user.lang, now_ms=now_ms)
        koos = recommend.recommend_koos(
            reader, trending_koos=trending, following=relations.following,
            excluded=relations.hidden, limit=100,
        )
        await self.stores.recommendations.save(
            reader, "follows",
            [{"target": p.user_id, "score": p.score, "reason": p.reason} for p in follows],
            ttl_seconds=RECOMMENDATION_TTL_SECONDS,
        )
        await self.stores.recommendations.save(
            reader, "koos",
            [{"target": p.koo_id, "score": p.score, "reason": p.reason} for p in koos],
            ttl_seconds=RECOMMENDATION_TTL_SECONDS,
        )
        with without_cache("drop_recommendations"):
            for kind in ("follows", "koos"):
                await self.cache.drop_recommendations(reader, kind)
        return len(follows) + len(koos)


def _as_recommended(koo: Koo, *, now_ms: int, weights: Any) -> Ranked:
    parts = ranking.score_koo(koo, now_ms=now_ms, affinity=0.0, repeats=0, weights=weights)
    return Ranked(koo, "recommended", sum(parts.values()), parts)
