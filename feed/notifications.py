"""Aggregated notifications: what happened to a user's koos and who followed them.

Each sync reads the source of truth of one action (the reaction row, the follow
row, the reply koo) and brings its source row in line with it
(:class:`~feed.store.notifications.NotificationStore`); the group's count then moves
in a settle, batched. Syncs are jobs after the event's commit
(``workers/notifications.py``): they read current state, so running one twice, late,
or out of order changes nothing. Reads come from the hot cache for active recipients
and from DynamoDB otherwise, and drop at read time actors the recipient blocks or mutes
or who block the recipient.
"""

from __future__ import annotations

import logging
import uuid

from config.settings import Settings
from config.tables import REACTIONS
from feed import jobs, keys, metrics, notify_keys
from feed.cache.fallback import without_cache
from feed.cache.notifications import NotificationCache
from feed.cursor import CursorCodec
from feed.errors import CacheUnavailable, StorageUnavailable
from feed.events import Event, KooCreated, KooDeleted, Reaction, Relation
from feed.notification_reads import NotificationReads, notification_id, served
from feed.store import Stores
from feed.store.notifications import NotificationStore, Source
from feed.store.reactions import Reactions
from feed.views import ReaderViews

__all__ = ["KINDS", "Notifications", "follow_up_jobs", "notification_id", "served"]

log = logging.getLogger(__name__)

KINDS = ("like", "rekoo", "comment", "reply", "follow")
SWITCH_ATTEMPTS = 8
SETTLE_ATTEMPTS = 50
LOCK_MS = 15_000
NO_SOURCE = "-"
# A deleted reply never comes back: its "off" outranks its "on" (version 1).
REPLY_ON, REPLY_OFF = 1, 2


def follow_up_jobs(event: Event) -> list[tuple[jobs.Job, tuple[str, ...], str]]:
    """The notification jobs an applied event calls for: (job, arguments, job id)."""
    tag = event.event_id
    match event:
        case Reaction():
            return [(jobs.SYNC_REACTION_NOTIFICATION, (event.koo_id, event.user_id, event.kind),
                     keys.notify_job(tag))]
        case KooCreated() if event.reply_to:
            return [(jobs.SYNC_REPLY_NOTIFICATION, (event.koo_id,), keys.notify_job(tag))]
        case KooDeleted():
            return [(jobs.PURGE_KOO_NOTIFICATIONS, (event.koo_id,), keys.notify_job(tag))]
        case Relation() if event.KIND == keys.REL_FOLLOW:
            return [(jobs.SYNC_FOLLOW_NOTIFICATION, (event.user, event.other),
                     keys.notify_job(tag))]
        case Relation() if event.ON:
            found: list[tuple[jobs.Job, tuple[str, ...], str]] = [
                (jobs.PURGE_NOTIFICATIONS_FROM, (event.user, event.other),
                      keys.notify_job(tag, "out"))]
            if event.KIND == keys.REL_BLOCK:  # neither notifies the other any more
                found.append((jobs.PURGE_NOTIFICATIONS_FROM, (event.other, event.user),
                              keys.notify_job(tag, "in")))
            return found
    return []


class Notifications(NotificationReads):
    """Builds, settles, serves (:class:`NotificationReads`) and erases notifications."""

    def __init__(self, settings: Settings, stores: Stores, views: ReaderViews,
                 cache: NotificationCache) -> None:
        self.settings = settings
        self.stores = stores
        self.views = views
        self.cache = cache
        self.ttl_ms = settings.notify_ttl_days * 86_400_000
        self.store = NotificationStore(stores.db, window_ms=settings.notify_group_hours
                                       * 3_600_000, ttl_seconds=self.ttl_ms // 1000)
        self.cursors = CursorCodec(settings.cursor_secret, settings.cursor_ttl_seconds)

    @classmethod
    def over(cls, views: ReaderViews) -> Notifications:
        """Over the stores and the cache's Redis of the read path's views (the manager)."""
        return cls(views.settings, views.stores, views,
                   NotificationCache(views.cache.redis, views.settings))

    # --- syncing one action ------------------------------------------------------------

    async def sync_reaction(self, koo_id: str, actor: str, kind: str) -> int:
        """Bring the notification of one reaction in line with the reaction as stored."""
        koo = await self.stores.koos.get(koo_id, consistent=True)
        if koo is None or "author_id" not in koo:
            return 0
        row = await self.stores.db.get(REACTIONS, Reactions.key(koo_id, actor, kind),
                                       consistent=True)
        if row is None:
            return 0
        on = bool(row.get("active")) and not koo.get("deleted")
        at = int(row.get("created_at") or row.get("ver", 0))
        return await self._sync(Source(koo["author_id"], kind, koo_id, actor, NO_SOURCE, on,
                                       at, int(row.get("ver", 0))))

    async def sync_follow(self, follower: str, followee: str) -> int:
        """Bring the notification of one follow in line with the relation as stored."""
        row = await self.stores.db.get(
            "relations", self.stores.relations.key(follower, keys.REL_FOLLOW, followee),
            consistent=True)
        if row is None:
            return 0
        at = int(row.get("created_at") or row.get("ver", 0))
        return await self._sync(Source(followee, "follow", None, follower, NO_SOURCE,
                                       bool(row.get("active")), at, int(row.get("ver", 0))))

    async def sync_reply(self, reply_id: str) -> int:
        """Bring the notification of one reply in line with the reply and its parent."""
        reply = await self.stores.koos.get(reply_id, consistent=True)
        if reply is None or not reply.get("reply_to") or "author_id" not in reply:
            return 0
        parent = await self.stores.koos.get(reply["reply_to"], consistent=True)
        if parent is None or "author_id" not in parent:
            return 0
        on = not reply.get("deleted") and not parent.get("deleted")
        return await self._sync(Source(
            parent["author_id"], "reply", reply["reply_to"], reply["author_id"], reply_id, on,
            int(reply.get("created_at", 0)), REPLY_ON if on else REPLY_OFF))

    async def _sync(self, change: Source) -> int:
        if change.on and (change.actor == change.recipient
                          or await self._hidden(change.recipient, change.actor)):
            change = Source(change.recipient, change.kind, change.koo_id, change.actor,
                            change.source, False, change.at, change.ver)
        return await self._switch(change)

    async def _switch(self, change: Source, *, force_off: bool = False) -> int:
        for _ in range(SWITCH_ATTEMPTS):
            groups = await self.store.switch(change, force_off=force_off)
            if groups is not None:
                break
        else:
            raise StorageUnavailable("notification source keeps changing", "contended")
        for group in groups:
            await self.settle(change.recipient, group)
        return len(groups)

    async def _hidden(self, recipient: str, actor: str) -> bool:
        """Whether the recipient blocks or mutes the actor, or the actor blocks them."""
        found = await self.stores.relations.active_among([
            (recipient, keys.REL_BLOCK, actor), (recipient, keys.REL_MUTE, actor),
            (actor, keys.REL_BLOCK, recipient)])
        return any(found)

    # --- removing ----------------------------------------------------------------------

    async def purge_koo(self, koo_id: str) -> int:
        """A koo was deleted: its notifications go, and if it was a reply, its actor
        leaves its parent's."""
        koo = await self.stores.koos.get(koo_id, consistent=True)
        if koo is None or "author_id" not in koo:
            return 0
        moved = await self.sync_reply(koo_id) if koo.get("reply_to") else 0
        for kind in ("like", "rekoo", "comment", "reply"):
            async for row in self.store.sources_of_koo(koo["author_id"], koo_id, kind):
                moved += await self._switch_row(koo["author_id"], row["nk"])
        return moved

    async def remove_between(self, recipient: str, actor: str) -> int:
        """The recipient blocked or muted the actor (or was blocked): the actor leaves
        every notification of the recipient."""
        moved = 0
        async for owner, nk in self.store.rows_of_actor(actor, recipient):
            if nk.startswith("s#"):
                moved += await self._switch_row(owner, nk)
        return moved

    async def _switch_row(self, recipient: str, nk: str) -> int:
        _, kind, koo, actor, source = nk.split(keys.SORT_SEP)
        change = Source(recipient, kind, None if koo == notify_keys.NOTIFY_NO_KOO else koo, actor,
                        source, False, 0, 0)
        return await self._switch(change, force_off=True)

    async def remove_actor(self, actor_id: str) -> int:
        """Erasure: the user leaves every notification of others (counts adjusted), and
        no row naming them remains."""
        moved = 0
        async for owner, nk in self.store.rows_of_actor(actor_id):
            if nk.startswith("s#"):
                moved += await self._switch_row(owner, nk)
        rows = [row async for row in self.store.rows_of_actor(actor_id)]
        await self.store.delete_rows(rows)
        return moved

    async def erase_recipient(self, user_id: str) -> int:
        """Erasure: every notification of the user, and the seen mark, are deleted."""
        deleted = 0
        async for page in self.store.all_rows(user_id):
            deleted += await self.store.delete_rows([(user_id, nk) for nk in page])
        with without_cache("forget_notifications"):
            await self.cache.forget(user_id)
        return deleted

    # --- settling a group's count ------------------------------------------------------

    async def settle(self, recipient: str, group: str) -> None:
        """Move a group's count by its pending actors. Many workers may call this for one
        group at once: one settles (a lock in the cache) while the others leave their
        change to it; without the cache each settles, and the group row's revision keeps
        the count exact either way."""
        token = uuid.uuid4().hex
        try:
            got, _ = await self.cache.note_change(recipient, group, token, LOCK_MS)
            if not got:
                return  # the holder sees the new generation and settles again
            await self._settle_holding(recipient, group, token)
        except CacheUnavailable as exc:
            metrics.CACHE_FALLBACKS.labels("notify_settle").inc()
            log.debug("settling without the cache's lock", extra={"error": str(exc)})
            await self._drain(recipient, group)

    async def _settle_holding(self, recipient: str, group: str, token: str) -> None:
        try:
            await self._settle_until_quiet(recipient, group, token)
        except BaseException:
            # Let the next change settle at once rather than after the lock's expiry.
            with without_cache("notify_settle_release"):
                await self.cache.release(recipient, group, token)
            raise

    async def _settle_until_quiet(self, recipient: str, group: str, token: str) -> None:
        while True:
            gen = await self.cache.generation(recipient, group)
            await self._drain(recipient, group, token)
            if await self.cache.generation(recipient, group) != gen:
                await self.cache.keep_lock(recipient, group, token, LOCK_MS)
                continue
            await self.cache.release(recipient, group, token)
            if await self.cache.generation(recipient, group) == gen:
                return
            if not await self.cache.keep_lock(recipient, group, token, LOCK_MS):
                return  # another worker took it over, and settles what came

    async def _drain(self, recipient: str, group: str, token: str | None = None) -> None:
        """Settle batch after batch until nothing is pending; a settle that lost to a
        concurrent change is tried again, up to SETTLE_ATTEMPTS times in a row."""
        lost = 0
        while lost < SETTLE_ATTEMPTS:
            if token is not None:
                # A long drain (a burst) keeps its lock: another settler would only
                # compete for the same rows.
                await self.cache.keep_lock(recipient, group, token, LOCK_MS)
            done, body = await self.store.settle(recipient, group)
            if body is not None:
                lost = 0
                with without_cache("notify_put"):
                    await self.cache.put_group(recipient, body)
            elif not done:
                lost += 1
            if done:
                return
        raise StorageUnavailable(f"notification group of {recipient} keeps changing",
                                 "contended")
