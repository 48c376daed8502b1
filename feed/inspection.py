"""Answers for an operator: what is stored and cached about a user, and whether a koo is
in a reader's feed and, if not, why.

``feed`` answers from the read path itself: the koo is in the feed if the
same walk that builds pages (:meth:`~feed.candidates.CandidateWalk.candidates`)
returns it when started just above it. If not, the reason comes from the same
rules the walk applies: :meth:`RelationSets.sees` (not followed, blocked,
muted, blocked by the author), the pull floor of a followed celebrity (older
than the follow's share), the koo's fan-out state (not delivered yet), and the
stored timeline (trimmed past the cap).
"""

from __future__ import annotations

from typing import Any

from feed import keys
from feed.erasure import Progress
from feed.errors import StorageUnavailable
from feed.store.koos import FanoutState
from feed.timeline import FeedManager

__all__ = ["Inspector"]

# A member just above every koo id of one time: ids are [A-Za-z0-9_-], all below "~".
_ABOVE = "~"


class Inspector:
    def __init__(self, manager: FeedManager) -> None:
        self.manager = manager
        self.stores = manager.stores
        self.cache = manager.cache
        self.settings = manager.settings

    async def user(self, user_id: str) -> dict[str, Any] | None:
        """A user's profile, counters, relation counts, cache state and stored timeline
        size; None for an id that never signed up. An erased user (or one being erased)
        shows only the erasure's progress: step, position and counts of what went."""
        stone = await self.stores.users.erasure(user_id)
        if stone is not None:
            return {"user_id": user_id, "erased_at": int(stone["erased_at"]),
                    "erasure": Progress.from_tombstone(stone).as_dict()}
        profile = await self.stores.users.get(user_id, consistent=True)
        if profile is None:
            return None
        relations = await self.manager.read_relations(user_id)
        followers, celebrity = await self.stores.users.reach(user_id)
        rows = await self.stores.timelines.scan_reader(
            user_id, max_items=self.settings.timeline_max_items * 2)
        try:
            cache: dict[str, Any] = await self.cache.timeline_state(user_id)
        except StorageUnavailable as exc:
            cache = {"error": str(exc)}
        return {
            "profile": profile.as_json(),
            "celebrity": celebrity,
            "relations": {
                "following": len(relations.following), "followers": followers,
                "blocking": len(relations.blocking), "muting": len(relations.muting),
                "blocked_by": len(relations.blocked_by),
            },
            "timeline": {"stored_rows": len(rows),
                         "cap": self.settings.timeline_max_items, "cache": cache},
        }

    async def feed(self, reader: str, koo_id: str) -> dict[str, Any]:
        """Whether ``koo_id`` is in ``reader``'s feed, and why (not)."""
        koo = (await self.manager.koos([koo_id])).get(koo_id)
        if koo is None:
            return _answer(False, "no such koo")
        if koo.deleted:
            return _answer(False, "deleted")
        relations = await self.manager.read_relations(reader)
        author = koo.author_id
        if not relations.sees(reader, author):
            return _answer(False, _hidden_because(relations, author))
        walk = await self.manager.candidates(
            reader, relations, want=1, before=(koo.created_at, koo_id + _ABOVE))
        if walk.candidates and walk.candidates[0].koo.koo_id == koo_id:
            return _answer(True, walk.candidates[0].reason)
        return _answer(False, await self._missing_because(reader, author, koo_id,
                                                          koo.created_at))

    async def _missing_because(self, reader: str, author: str, koo_id: str,
                               created: int) -> str:
        if author in await self.manager.celebrities():
            floor = (await self.manager.pull_floors(reader, [author])).get(author)
            if floor is not None and (created, koo_id) < floor:
                return ("outside the celebrity pull window: older than the follow, past the "
                        f"{self.settings.backfill_on_follow} koos a follow brings")
            return "not found by the read path (a pulled author)"
        item = await self.stores.koos.get(koo_id, consistent=True) or {}
        state = item.get("fanout_state")
        if state in (FanoutState.PENDING, FanoutState.RUNNING):
            return f"not delivered yet: fan-out {state}"
        rows = await self.stores.timelines.scan_reader(
            reader, max_items=self.settings.timeline_max_items * 2)
        if len(rows) >= self.settings.timeline_max_items and rows and \
                (created, koo_id) < (rows[-1].created_at, rows[-1].koo_id):
            return f"trimmed: older than the {self.settings.timeline_max_items} rows kept"
        versions = await self.stores.relations.versions([(reader, keys.REL_FOLLOW, author)])
        followed_at = versions[0]
        if followed_at is not None and created < followed_at:
            return ("older than the follow, past the "
                    f"{self.settings.backfill_on_follow} koos a follow brings")
        return "not delivered to this reader (no timeline row)"


def _hidden_because(relations: Any, author: str) -> str:
    if author in relations.blocked_by:
        return "the author blocks the reader"
    if author in relations.blocking:
        return "the reader blocks the author"
    if author in relations.muting:
        return "the reader mutes the author"
    return "not followed"


def _answer(in_feed: bool, reason: str) -> dict[str, Any]:
    return {"in_feed": in_feed, "reason": reason}
