"""Reading notifications: pages from the hot cache (DynamoDB past it or without it), the
unseen count, and the seen mark.

A page reads the recipient's profile (404 for an unknown user), relation sets and cached
notifications side by side, then drops actors the recipient blocks or mutes or who block
them: a notification left with none is not shown, and not counted as unseen. A recipient
not cached yet is loaded (the newest ``CACHED_GROUPS``) once the profile shows they exist.
"""

from __future__ import annotations

import asyncio
import hashlib
import time
from collections.abc import Iterable
from typing import Any

from feed import notify_keys
from feed.cache.fallback import without_cache
from feed.cache.notifications import CachedPage, NotificationCache
from feed.cursor import CursorCodec, InvalidCursor
from feed.errors import ValidationFailed
from feed.store.notifications import NotificationStore
from feed.views import ReaderViews

__all__ = ["CACHED_GROUPS", "MAX_SEEN_AHEAD_MS", "NotificationReads", "notification_id",
           "served"]

SHOWN_ACTORS = 3
CACHED_GROUPS = 500  # newest notifications loaded into the cache for one recipient
SPARE = 8  # notifications read beyond a page's, for those the read-time filter drops
MAX_SEEN_AHEAD_MS = 86_400_000


def notification_id(group: str) -> str:
    """A notification's public id: stable for its group, and no storage key."""
    return hashlib.blake2s(group.encode(), digest_size=10).hexdigest()


def served(body: dict[str, Any], hidden: frozenset[str], seen: int) -> dict[str, Any] | None:
    """A group as the API shows it, less the actors the recipient must not see; None if
    none is left."""
    actors = list(body.get("actors") or [])
    visible = [a for a in actors if a not in hidden]
    count = int(body.get("actor_count", 0)) - (len(actors) - len(visible))
    if count <= 0 or not visible:
        return None
    updated = int(body["updated_at"])
    return {"notification_id": notification_id(body["group"]), "kind": body["kind"],
            "koo_id": body.get("koo_id"), "actors": visible[:SHOWN_ACTORS],
            "actor_count": count, "updated_at": updated, "seen": updated <= seen}


class NotificationReads:
    """The read side of :class:`~feed.notifications.Notifications`."""

    views: ReaderViews
    store: NotificationStore
    cache: NotificationCache
    cursors: CursorCodec
    ttl_ms: int

    async def page(self, recipient: str, *, limit: int, cursor: str | None = None,
                   now_ms: int | None = None) -> dict[str, Any]:
        """One page of notifications, newest activity first, with the unseen count."""
        now_ms = int(time.time() * 1000) if now_ms is None else now_ms
        before: str | None = None
        if cursor is not None:
            position = self.cursors.decode(cursor, "notifications", recipient,
                                           now=now_ms / 1000)
            before = position.get("s")
            if not isinstance(before, str) or not before[:13].isdigit():
                raise InvalidCursor("the cursor is malformed")
        floor = max(0, now_ms - self.ttl_ms)
        want = limit + 1 + SPARE
        # One round trip's time for the three: a warm read costs that, and the script's.
        _, relations, cached = await asyncio.gather(
            self.views.profile_of(recipient),  # NotFound for an unknown user
            self.views.relations_of(recipient), self._cached(recipient, before, floor, want))
        hidden = relations.hidden
        if cached is None:  # the user exists: now the cache may be filled
            with without_cache("notifications_load"):
                await self._load_cache(recipient, floor)
            cached = await self._cached(recipient, before, floor, want)
        items: list[tuple[str, dict[str, Any]]] = []
        seen = cached.seen if cached is not None else await self.store.seen(recipient)
        last: str | None = before
        exhausted = False
        part = cached
        while part is not None:
            for body in part.bodies:
                last = body["sk"]
                item = served(body, hidden, seen)
                if item is not None:
                    items.append((last, item))
                if len(items) > limit:
                    break
            if len(items) > limit:
                break
            if part.members < want:
                exhausted = part.low == ""  # else older ones are in DynamoDB only
                break
            part = await self._cached(recipient, last, floor, want)
        while len(items) <= limit and not exhausted:
            bodies = await self.store.page(recipient, floor=floor, before=last,
                                           limit=limit + 1)
            exhausted = len(bodies) < limit + 1
            for body in bodies:
                last = notify_keys.notify_updated_sk(body["updated_at"], body["group"])
                item = served(body, hidden, seen)
                if item is not None:
                    items.append((last, item))
                if len(items) > limit:
                    break
        next_cursor = None
        if len(items) > limit:
            items = items[:limit]
            # The position: the updated sort key of the last item shown.
            next_cursor = self.cursors.encode("notifications", recipient,
                                              {"s": items[-1][0]}, now=now_ms / 1000)
        unseen = await self._unseen(recipient, cached, hidden, max(seen + 1, floor))
        return {"items": [item for _, item in items], "unseen": unseen,
                "next_cursor": next_cursor}

    async def _cached(self, recipient: str, before: str | None, floor: int, want: int
                      ) -> CachedPage | None:
        with without_cache("notifications"):
            return await self.cache.page(recipient, before=before, floor=floor, limit=want)
        return None

    async def _unseen(self, recipient: str, cached: CachedPage | None, hidden: frozenset[str],
                      since: int) -> int:
        covered = cached is not None and (cached.low == "" or cached.low <= f"{since:013d}")
        if not hidden and covered and cached is not None:
            return cached.unseen
        if not hidden:
            return await self.store.count_since(recipient, since)
        bodies: Iterable[dict[str, Any]] | None = None
        if covered:
            with without_cache("notifications_unseen"):
                bodies = await self.cache.unseen_bodies(recipient, since)
        if bodies is None:
            bodies = await self._all_since(recipient, since)
        return sum(1 for b in bodies if served(b, hidden, 0) is not None)

    async def _all_since(self, recipient: str, since: int) -> list[dict[str, Any]]:
        found: list[dict[str, Any]] = []
        before: str | None = None
        while True:
            page = await self.store.page(recipient, floor=since, before=before, limit=500)
            found += page
            if len(page) < 500:
                return found
            before = notify_keys.notify_updated_sk(page[-1]["updated_at"], page[-1]["group"])

    async def _load_cache(self, recipient: str, floor: int) -> None:
        await self.cache.begin_load(recipient)
        bodies, seen = await asyncio.gather(
            self.store.page(recipient, floor=floor, before=None, limit=CACHED_GROUPS + 1),
            self.store.seen(recipient))
        low = ""
        if len(bodies) > CACHED_GROUPS:
            bodies = bodies[:CACHED_GROUPS]
            low = notify_keys.notify_updated_sk(bodies[-1]["updated_at"], bodies[-1]["group"])
        await self.cache.finish_load(recipient, bodies, seen=seen, low=low)

    async def mark_seen(self, recipient: str, up_to: Any, *, now_ms: int | None = None) -> None:
        """Mark seen every notification updated at ``up_to`` or before (the highest mark
        ever posted counts)."""
        now_ms = int(time.time() * 1000) if now_ms is None else now_ms
        if (not isinstance(up_to, int) or isinstance(up_to, bool) or up_to < 0
                or up_to > now_ms + MAX_SEEN_AHEAD_MS):
            raise ValidationFailed([{"field": "up_to", "message":
                                     "up_to must be an integer time in ms, at most a day "
                                     "ahead"}])
        await self.views.profile_of(recipient)
        mark = await self.store.mark_seen(recipient, up_to)
        with without_cache("notifications_seen"):
            await self.cache.set_seen(recipient, mark)
