"""Apply events to storage and cache, idempotently.

Every write is idempotent by itself: a koo is stored with a conditional put,
and relation and reaction rows carry the version (``occurred_at``) of the
event that last changed them, so a conditional update changes a row only on
a real transition, and counters move in the same transaction as the row
they count. The same event applied twice, twice at once, or long after its
ledger entry expired, changes nothing; events that arrive out of order
settle on the newest state. The ledger records each applied event, and what
happened to it, in the same transaction as the event's writes: a duplicate is
recognised by that transaction, with no read before it; only then is the entry
read, and another event under the same ``event_id`` is dead-lettered
(``event_id_reused``). Signups and deletes, whose writes cannot join that
transaction, claim the entry first and write again on a replay (idempotent).

After the commit, each handler runs its follow-up work (fan-out, purges,
cache updates). That work checks the current state and is idempotent, so it
is run again when a duplicate arrives: a worker killed between the commit and
the follow-up loses nothing.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Awaitable, Callable
from typing import Any

from feed import jobs as job
from feed import keys, metrics
from feed.errors import (
    NotReady,
    StorageUnavailable,
    TransactionCancelled,
    Unapplicable,
)
from feed.fanout import FanOut
from feed.jobs import JobQueue
from feed.models import Koo
from feed.store import Entry
from feed.store.koos import COUNTER_OF, FanoutState
from feed.timeline import REACTION_WEIGHT, FeedManager

__all__ = ["APPLIED", "DUPLICATE", "NOOP", "EventApplier"]

log = logging.getLogger(__name__)

SETTLE_ATTEMPTS = 4
APPLIED = "applied"
DUPLICATE = "duplicate"
NOOP = "noop"  # valid, recorded, but older than the state already stored
DEAD_LETTERED = "dead-lettered"

Handler = Callable[[dict[str, Any], dict[str, Any]], Awaitable[str]]
# Follow-up work: the event, the outcome of its commit, and what the commit stored (if known).
After = Callable[[dict[str, Any], str, Any], Awaitable[str]]


class _AlreadyApplied(Exception):
    """The ledger already holds this event_id: a duplicate, unless its digest differs."""

    def __init__(self, event_id: str, *, checked: bool = False) -> None:
        super().__init__(event_id)
        self.checked = checked  # the handler compared the digests already


class EventApplier:
    def __init__(self, manager: FeedManager, jobs: JobQueue) -> None:
        self.manager = manager
        self.stores = manager.stores
        self.cache = manager.cache
        self.settings = manager.settings
        self.jobs = jobs
        self.fanout = FanOut(manager, jobs)
        self._handlers: dict[str, tuple[Handler, After]] = {
            "user_signed_up": (self._signed_up, self._nothing),
            "koo_created": (self._koo_created, self._after_koo_created),
            "koo_deleted": (self._koo_deleted, self._after_koo_deleted),
            "reaction_added": (self._reaction, self._nothing),
            "reaction_removed": (self._reaction, self._nothing),
            "user_followed": (self._relation, self._after_relation),
            "user_unfollowed": (self._relation, self._after_relation),
            "user_blocked": (self._relation, self._after_relation),
            "user_unblocked": (self._relation, self._after_relation),
            "user_muted": (self._relation, self._after_relation),
            "user_unmuted": (self._relation, self._after_relation),
        }

    async def apply(self, event: dict[str, Any]) -> str:
        """Apply one validated event; returns "applied", "duplicate" or "noop".

        Raises NotReady (retry later) or Unapplicable (dead-letter it).
        """
        commit, after = self._handlers[event["type"]]
        stored: dict[str, Any] = {}
        # No ledger read first: each commit records the event in the same write (a
        # condition on the ledger item), so a duplicate is found by the write itself.
        try:
            outcome = await commit(event, stored)
        except _AlreadyApplied as exc:
            if not exc.checked:
                await self.stores.ledger.refuse_reused_id(event)
            outcome = DUPLICATE
        except NotReady:
            # Waiting for something (a koo) is pointless for an event whose id is taken:
            # say so now rather than after every retry.
            await self.stores.ledger.refuse_reused_id(event)
            raise
        await after(event, outcome, stored)
        metrics.EVENTS_APPLIED.labels(event["type"], outcome).inc()
        return outcome

    async def _nothing(
        self, event: dict[str, Any], outcome: str, stored: dict[str, Any]
    ) -> str:
        return NOOP

    async def _commit(self, event: dict[str, Any], items: list[dict[str, Any]]) -> int | None:
        """Write ``items`` and record the event, in one transaction. Returns None on
        success, else the index of the first item whose condition failed; raises
        _AlreadyApplied if the event was recorded before."""
        ledger = len(items)
        try:
            await self.stores.db.transact([*items, self.stores.ledger.record_item(event)])
        except TransactionCancelled as exc:
            failed = [i for i, reason in enumerate(exc.reasons) if reason not in ("None", "")]
            if ledger in failed:
                raise _AlreadyApplied(event["event_id"]) from None
            if failed:
                return failed[0]
            raise
        return None

    async def _settle_claim(self, event: dict[str, Any], first: bool, outcome: str) -> str:
        """A replay is a duplicate; a new event that changed nothing says so in the ledger."""
        if not first:
            raise _AlreadyApplied(event["event_id"], checked=True)
        if outcome != APPLIED:
            await self.stores.ledger.set_outcome(event, outcome)
        return outcome

    async def _record(self, event: dict[str, Any], outcome: str) -> str:
        """Record an event whose commit wrote nothing (or wrote on its own); returns
        ``outcome``, or raises _AlreadyApplied if it was recorded before."""
        if not await self.stores.ledger.record(event, outcome):
            raise _AlreadyApplied(event["event_id"])
        return outcome

    # --- signups ----------------------------------------------------------------------

    async def _signed_up(self, event: dict[str, Any], stored: dict[str, Any]) -> str:
        first = await self.stores.ledger.claim(event)
        changed = await self.stores.users.save_profile(event)
        with contextlib.suppress(StorageUnavailable):
            await self.cache.drop_profiles(event["user_id"])
        return await self._settle_claim(event, first, APPLIED if changed else NOOP)

    # --- koos -------------------------------------------------------------------------

    async def _koo_created(self, event: dict[str, Any], stored: dict[str, Any]) -> str:
        author = event["author_id"]
        followers, celebrity = await self.stores.users.reach(author)
        pull = followers >= self.settings.celebrity_followers
        create = self.stores.koos.create_item(event, pull=pull)
        failed = await self._commit(event, [create])
        if failed is not None:
            # The koo id is known already: a tombstone of an early delete, or a replay
            # under another event id. Either way nothing new to store.
            return await self._record(event, NOOP)
        koo = Koo(
            koo_id=event["koo_id"], author_id=author, text=event["text"], lang=event["lang"],
            created_at=event["occurred_at"], hashtags=tuple(event.get("hashtags") or ()),
            reply_to=event.get("reply_to"), rekoo_of=event.get("rekoo_of"),
        )
        stored["item"] = create["Put"]["Item"]
        with contextlib.suppress(StorageUnavailable):
            await self.cache.put_koos([koo])
        if pull and not celebrity:
            await self.stores.users.set_celebrity(author, True, at=event["occurred_at"])
            await self.cache.celebrity_changed(author, True)
        return APPLIED

    async def _after_koo_created(
        self, event: dict[str, Any], outcome: str, stored: dict[str, Any]
    ) -> str:
        item = stored.get("item")  # just created: no need to read it back
        if item is None:
            item = await self.stores.koos.get(event["koo_id"], consistent=True)
        if item is None or item.get("deleted") or "created_at" not in item:
            return NOOP
        entry = Entry(item["koo_id"], item["author_id"], int(item["created_at"]))
        await self.cache.author_recent_add(entry.author_id, entry.koo_id, entry.created_at)
        state = item.get("fanout_state")
        if state == FanoutState.PULL:
            await self.manager.push(entry, [entry.author_id])
        elif state in (FanoutState.PENDING, FanoutState.RUNNING):
            await self.fanout.run(entry.koo_id, item=item)
        return APPLIED

    async def _koo_deleted(self, event: dict[str, Any], stored: dict[str, Any]) -> str:
        first = await self.stores.ledger.claim(event)
        status = await self.stores.koos.mark_deleted(
            event["koo_id"], event["author_id"], event["occurred_at"]
        )
        if status == "not_author":
            if first:
                await self.stores.ledger.set_outcome(event, DEAD_LETTERED)
            raise Unapplicable(
                f"koo {event['koo_id']} is not by {event['author_id']}: only its author "
                "may delete it"
            )
        return await self._settle_claim(event, first, APPLIED if status != "already" else NOOP)

    async def _after_koo_deleted(
        self, event: dict[str, Any], outcome: str, stored: dict[str, Any]
    ) -> str:
        koo_id = event["koo_id"]
        item = await self.stores.koos.get(koo_id, consistent=True)
        if item is None or not item.get("deleted"):
            return NOOP
        await self.cache.mark_deleted(koo_id)
        await self.cache.author_recent_remove(item["author_id"], koo_id)
        if item.get("lang"):
            await self.cache.trending_remove(item["lang"], koo_id)
        if "created_at" in item:
            await self.jobs.enqueue(job.PURGE_DELETED_KOO, koo_id,
                                    job_id=keys.purge_koo_job(koo_id))
        return APPLIED

    # --- reactions --------------------------------------------------------------------

    async def _reaction(self, event: dict[str, Any], stored: dict[str, Any]) -> str:
        koo_id, on = event["koo_id"], event["type"] == "reaction_added"
        item = await self.stores.koos.get(koo_id, consistent=True)
        if item is None:
            raise NotReady(f"koo {koo_id} is not stored (yet)")
        if "created_at" not in item:  # a tombstone: deleted before it arrived
            return await self._record(event, NOOP)
        author = item["author_id"]
        row = (
            self.stores.reactions.switch_on_item(event, author)
            if on else self.stores.reactions.switch_off_item(event)
        )
        delta = 1 if on else -1
        counter = self.stores.koos.counter_item(koo_id, event["kind"], delta)
        for _ in range(SETTLE_ATTEMPTS):
            failed = await self._commit(event, [row, counter])
            if failed is None:
                break
            if failed != 0:
                raise NotReady(f"koo {koo_id} vanished while reacting")
            if await self.stores.reactions.settle(event, on):
                return await self._record(event, NOOP)
            # An older event changed the row between our write and settle: go again.
        else:
            raise StorageUnavailable(f"reaction row of koo {koo_id} keeps changing", "contended")
        with contextlib.suppress(StorageUnavailable):
            await self.cache.bump_counter(koo_id, COUNTER_OF[event["kind"]], delta)
            if author != event["user_id"]:
                await self.cache.affinity_changed(
                    event["user_id"], author, delta * REACTION_WEIGHT[event["kind"]]
                )
        return APPLIED

    # --- relations --------------------------------------------------------------------

    @staticmethod
    def _relation_parts(event: dict[str, Any]) -> tuple[str, str, str, bool]:
        """(user, kind, other, on) of a relation event."""
        kind_of = {
            "user_followed": (keys.REL_FOLLOW, True),
            "user_unfollowed": (keys.REL_FOLLOW, False),
            "user_blocked": (keys.REL_BLOCK, True),
            "user_unblocked": (keys.REL_BLOCK, False),
            "user_muted": (keys.REL_MUTE, True),
            "user_unmuted": (keys.REL_MUTE, False),
        }
        kind, on = kind_of[event["type"]]
        if kind == keys.REL_FOLLOW:
            return event["follower_id"], kind, event["followee_id"], on
        return event["user_id"], kind, event["target_id"], on

    async def _relation(self, event: dict[str, Any], stored: dict[str, Any]) -> str:
        user, kind, other, on = self._relation_parts(event)
        at = event["occurred_at"]
        relations = self.stores.relations
        items = [
            relations.switch_on_item(user, kind, other, at)
            if on else relations.switch_off_item(user, kind, other, at)
        ]
        if kind == keys.REL_FOLLOW:
            delta = 1 if on else -1
            items.append(self.stores.users.counter_item(other, "followers", delta))
            items.append(self.stores.users.counter_item(user, "following", delta))
        for _ in range(SETTLE_ATTEMPTS):
            failed = await self._commit(event, items)
            if failed is None:
                return APPLIED
            if await relations.settle(user, kind, other, at, on):
                return await self._record(event, NOOP)
            # An older event changed the row between our write and settle: go again.
        raise StorageUnavailable(f"relation {user} {kind} {other} keeps changing", "contended")

    async def _after_relation(
        self, event: dict[str, Any], outcome: str, stored: dict[str, Any]
    ) -> str:
        """Bring the cache and the timelines in line with the relation's current state."""
        user, kind, other, on = self._relation_parts(event)
        if outcome == APPLIED:
            active = on  # this event just set the state
        else:
            active = await self.stores.relations.is_active(user, kind, other)
        if kind == keys.REL_FOLLOW:
            with contextlib.suppress(StorageUnavailable):
                await self.cache.drop_profiles(user, other)  # their counters changed
        set_of = {keys.REL_FOLLOW: keys.following, keys.REL_BLOCK: keys.blocking,
                  keys.REL_MUTE: keys.muting}[kind]
        await self.cache.relation_changed(set_of(user), other, active)
        if kind == keys.REL_BLOCK:
            await self.cache.relation_changed(keys.blocked_by(other), user, active)
        tag = event["event_id"]
        if kind == keys.REL_FOLLOW:
            await self._check_celebrity(other, tag, event["occurred_at"])
        if active and kind != keys.REL_FOLLOW:
            # Blocked or muted: take the other's koos out now (reads already filter them).
            await self._enqueue_unmerge(user, other, tag)
            if kind == keys.REL_BLOCK:
                await self._enqueue_unmerge(other, user, tag)
        elif not active and kind == keys.REL_FOLLOW:
            await self._enqueue_unmerge(user, other, tag)
        elif active:
            await self.jobs.enqueue(job.MERGE_AUTHOR, user, other,
                                    job_id=keys.merge_job(user, other, tag))
        else:
            # Unblocked or unmuted: what the reader follows comes back.
            await self.jobs.enqueue(job.MERGE_AUTHOR, user, other,
                                    job_id=keys.merge_job(user, other, tag))
            if kind == keys.REL_BLOCK:
                await self.jobs.enqueue(job.MERGE_AUTHOR, other, user,
                                        job_id=keys.merge_job(other, user, tag))
        return APPLIED

    async def _enqueue_unmerge(self, reader: str, author: str, tag: str) -> None:
        await self.jobs.enqueue(job.PURGE_AUTHOR, reader, author,
                                job_id=keys.unmerge_job(reader, author, tag))

    async def _check_celebrity(self, author: str, tag: str, at: int) -> None:
        followers, celebrity = await self.stores.users.reach(author)
        if followers >= self.settings.celebrity_followers and not celebrity:
            await self.stores.users.set_celebrity(author, True, at=at)
            await self.cache.celebrity_changed(author, True)
        elif followers < self.settings.celebrity_followers and celebrity:
            await self.jobs.enqueue(job.DEMOTE_CELEBRITY, author,
                                    job_id=keys.demote_job(author, tag))

    # --- follow-up jobs (called by the workers) ------------------------------------------

    async def visible(self, reader: str, author: str) -> bool:
        """Whether the reader should currently see the author's koos in their timeline."""
        if reader == author:
            return True
        active = await self.stores.relations.active_among([
            (reader, keys.REL_FOLLOW, author),
            (reader, keys.REL_BLOCK, author),
            (reader, keys.REL_MUTE, author),
            (author, keys.REL_BLOCK, reader),
        ])
        follows, blocks, mutes, blocked = active
        return follows and not (blocks or mutes or blocked)

    async def merge_author(self, reader: str, author: str) -> int:
        """Job: bring an author's recent koos into a reader's timeline, if still visible."""
        recent = await self.stores.koos.by_author(author, limit=self.settings.backfill_on_follow)
        if not recent:
            return 0
        if not await self.visible(reader, author):
            return 0
        if (await self.stores.users.reach(author))[1]:
            return 0  # a celebrity: pulled at read time
        return await self.manager.merge(reader, author, recent=recent)

    async def demote(self, author: str) -> int:
        """Job: an author fell below the celebrity threshold. Followers who followed while
        the author was pulled never got timeline rows: merge the author's recent koos into
        theirs, then fan out the pulled koos and stop pulling (FanOut.demote)."""
        followers, _ = await self.stores.users.reach(author)
        if followers >= self.settings.celebrity_followers:
            return 0
        since = await self.stores.users.celebrity_since(author)
        recent = await self.stores.koos.by_author(author, limit=self.settings.backfill_on_follow)
        merged = 0
        if since is not None and recent:
            async for page in self.stores.relations.incoming_pages(author, keys.REL_FOLLOW):
                versions = await self.stores.relations.versions(
                    [(f, keys.REL_FOLLOW, author) for f in page]
                )
                for follower, ver in zip(page, versions, strict=True):
                    if ver is not None and ver >= since and await self.visible(follower, author):
                        await self.manager.merge(follower, author, recent=recent)
                        merged += 1
        return merged + await self.fanout.demote(author)

    async def unmerge_author(self, reader: str, author: str) -> int:
        """Job: purge an author's koos from a reader's timeline, if still not visible."""
        if await self.visible(reader, author):
            return 0
        return await self.manager.unmerge(reader, author)
