"""Apply events to storage, idempotently, and enqueue their follow-up work.

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

After the commit comes the event's follow-up: cache updates, and jobs
enqueued for the timeline work (merges, purges, demotions), which the
:class:`~feed.timeline.FeedManager` does. The one exception is a new koo: it
is fanned out inline, here, so that followers see it within one job's time;
the ``fan_out_koo`` job only resumes fan-outs (the sweeper) and carries the
chunks of large ones. The follow-up checks the current state and is
idempotent, so it runs again when a duplicate arrives: a worker killed
between the commit and the follow-up loses nothing.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

from feed import jobs as job
from feed import keys, metrics
from feed.cache.fallback import without_cache
from feed.errors import (
    NotReady,
    StorageUnavailable,
    TransactionCancelled,
    Unapplicable,
)
from feed.events import (
    Event,
    KooCreated,
    KooDeleted,
    Reaction,
    Relation,
    UserDeleted,
    UserSignedUp,
    named_users,
)
from feed.jobs import JobQueue
from feed.models import Koo
from feed.notifications import follow_up_jobs
from feed.store.koos import COUNTER_OF
from feed.store.ledger import USER_DELETED
from feed.timeline import REACTION_WEIGHT, FeedManager

__all__ = ["APPLIED", "DEAD_LETTERED", "DUPLICATE", "NOOP", "EventApplier"]

log = logging.getLogger(__name__)

SETTLE_ATTEMPTS = 4
APPLIED = "applied"
DUPLICATE = "duplicate"
NOOP = "noop"  # valid, recorded, but older than the state already stored
DEAD_LETTERED = "dead-lettered"

_RELATION_SET = {keys.REL_FOLLOW: keys.following, keys.REL_BLOCK: keys.blocking,
                 keys.REL_MUTE: keys.muting}


@dataclass(frozen=True, slots=True)
class Committed:
    """What a commit did: its outcome, and the koo item it stored (spares a read)."""

    outcome: str
    item: dict[str, Any] | None = None


class _AlreadyApplied(Exception):
    """The ledger already holds this event_id: a duplicate, unless its digest differs."""

    def __init__(self, event_id: str, *, checked: bool = False) -> None:
        super().__init__(event_id)
        self.checked = checked  # the handler compared the digests already


class EventApplier:
    """Commits events and enqueues their follow-ups; the timeline work is the manager's."""

    def __init__(self, manager: FeedManager, jobs: JobQueue) -> None:
        self.manager = manager
        self.stores = manager.stores
        self.cache = manager.cache
        self.settings = manager.settings
        self.jobs = jobs

    async def apply(self, event: Event) -> str:
        """Apply one validated event; returns "applied", "duplicate" or "noop".

        Raises NotReady (retry later) or Unapplicable (dead-letter it).
        """
        # No ledger read first: each commit records the event in the same write (a
        # condition on the ledger item), so a duplicate is found by the write itself.
        try:
            done = await self._commit_event(event)
        except _AlreadyApplied as exc:
            if not exc.checked:
                await self.stores.ledger.refuse_reused_id(event)
            done = Committed(DUPLICATE)
        except NotReady:
            # Waiting for something (a koo) is pointless for an event whose id is taken:
            # say so now rather than after every retry.
            await self.stores.ledger.refuse_reused_id(event)
            raise
        await self._follow_up(event, done)
        metrics.EVENTS_APPLIED.labels(event.TYPE, done.outcome).inc()
        return done.outcome

    async def _commit_event(self, event: Event) -> Committed:
        match event:
            case UserSignedUp():
                return Committed(await self._signed_up(event))
            case KooCreated():
                return await self._koo_created(event)
            case KooDeleted():
                return Committed(await self._koo_deleted(event))
            case Reaction():
                return Committed(await self._reaction(event))
            case Relation():
                return Committed(await self._relation(event))
            case UserDeleted():
                return Committed(await self._user_deleted(event))
        raise TypeError(f"no handler for {type(event).__name__}")

    async def _follow_up(self, event: Event, done: Committed) -> None:
        match event:
            case KooCreated():
                await self._after_koo_created(event, done)
            case KooDeleted():
                await self._after_koo_deleted(event)
            case Relation():
                await self._after_relation(event, done)
            case UserDeleted():
                await self.jobs.enqueue(job.ERASE_USER, event.user_id, 0,
                                        job_id=keys.erase_job(event.user_id, 0))
        # Notifications are jobs of their own: the event's commit stays as it is.
        for notify, args, job_id in follow_up_jobs(event):
            await self.jobs.enqueue(notify, *args, job_id=job_id)

    # --- the ledger -----------------------------------------------------------------------

    async def _commit(self, event: Event, items: list[dict[str, Any]]) -> int | None:
        """Write ``items`` and record the event, in one transaction. Returns None on
        success, else the index of the first item whose condition failed; raises
        _AlreadyApplied if the event was recorded before."""
        # Every write also checks that no user the event names is erased (USER_DELETED).
        items, guarded = self.stores.users.guard(items, named_users(event))
        ledger = len(items)
        try:
            await self.stores.db.transact([*items, self.stores.ledger.record_item(event)])
        except TransactionCancelled as exc:
            failed = [i for i, reason in enumerate(exc.reasons) if reason not in ("None", "")]
            if guarded.intersection(failed):
                raise Unapplicable(USER_DELETED) from None
            if ledger in failed:
                raise _AlreadyApplied(event.event_id) from None
            if failed:
                return failed[0]
            raise
        return None

    async def _settle_claim(self, event: Event, first: bool, outcome: str) -> str:
        """A replay is a duplicate; a new event that changed nothing says so in the ledger."""
        if not first:
            raise _AlreadyApplied(event.event_id, checked=True)
        if outcome != APPLIED:
            await self.stores.ledger.set_outcome(event, outcome)
        return outcome

    async def _record(self, event: Event, outcome: str) -> str:
        """Record an event whose commit wrote nothing (or wrote on its own); returns
        ``outcome``, or raises _AlreadyApplied if it was recorded before."""
        if not await self.stores.ledger.record(event, outcome):
            raise _AlreadyApplied(event.event_id)
        return outcome

    # --- signups ----------------------------------------------------------------------

    async def _refuse_erased(self, event: Event) -> None:
        """Signups and deletes cannot join the guarded transaction: one read instead."""
        if await self.stores.users.any_erased(named_users(event)):
            raise Unapplicable(USER_DELETED)

    async def _user_deleted(self, event: UserDeleted) -> str:
        """Start an erasure (the tombstone); the erase_user job does the rest, and a
        replay re-enqueues it, so an interrupted erasure resumes."""
        first = await self.stores.ledger.claim(event)
        started = await self.stores.users.mark_erased(event.user_id, event.event_id)
        if not started and not first:
            return await self._settle_claim(event, first, NOOP)
        if not started and await self.stores.users.erasure_done(event.user_id):
            await self.stores.ledger.set_outcome(event, DEAD_LETTERED)
            raise Unapplicable(USER_DELETED)
        return await self._settle_claim(event, first, APPLIED if started else NOOP)

    async def _signed_up(self, event: UserSignedUp) -> str:
        await self._refuse_erased(event)
        first = await self.stores.ledger.claim(event)
        changed = await self.stores.users.save_profile(event)
        with without_cache("drop_profiles"):
            await self.cache.drop_profiles(event.user_id)
        return await self._settle_claim(event, first, APPLIED if changed else NOOP)

    # --- koos -------------------------------------------------------------------------

    async def _koo_created(self, event: KooCreated) -> Committed:
        author = event.author_id
        followers, celebrity = await self.stores.users.reach(author)
        pull = followers >= self.settings.celebrity_followers
        create = self.stores.koos.create_item(event, pull=pull)
        failed = await self._commit(event, [create])
        if failed is not None:
            # The koo id is known already: a tombstone of an early delete, or a replay
            # under another event id. Either way nothing new to store.
            return Committed(await self._record(event, NOOP))
        koo = Koo(
            koo_id=event.koo_id, author_id=author, text=event.text, lang=event.lang,
            created_at=event.occurred_at, hashtags=event.hashtags,
            reply_to=event.reply_to, rekoo_of=event.rekoo_of,
        )
        with without_cache("put_koos"):
            await self.cache.put_koos([koo])
        if pull and not celebrity:
            await self.stores.users.set_celebrity(author, True, at=event.occurred_at)
            await self.cache.celebrity_changed(author, True)
        return Committed(APPLIED, create["Put"]["Item"])

    async def _after_koo_created(self, event: KooCreated, done: Committed) -> None:
        # Inline, not a job: see the module docstring.
        await self.manager.deliver_new_koo(event.koo_id, item=done.item)

    async def _koo_deleted(self, event: KooDeleted) -> str:
        await self._refuse_erased(event)
        first = await self.stores.ledger.claim(event)
        status = await self.stores.koos.mark_deleted(
            event.koo_id, event.author_id, event.occurred_at
        )
        if status == "not_author":
            if first:
                await self.stores.ledger.set_outcome(event, DEAD_LETTERED)
            raise Unapplicable(
                f"koo {event.koo_id} is not by {event.author_id}: only its author may delete it"
            )
        return await self._settle_claim(event, first, APPLIED if status != "already" else NOOP)

    async def _after_koo_deleted(self, event: KooDeleted) -> None:
        koo_id = event.koo_id
        item = await self.stores.koos.get(koo_id, consistent=True)
        if item is None or not item.get("deleted"):
            return
        await self.cache.mark_deleted(koo_id)
        await self.cache.author_recent_remove(item["author_id"], koo_id)
        if item.get("lang"):
            await self.cache.trending_remove(item["lang"], koo_id)
        if "created_at" in item:
            await self.jobs.enqueue(job.PURGE_DELETED_KOO, koo_id,
                                    job_id=keys.purge_koo_job(koo_id))

    # --- reactions --------------------------------------------------------------------

    async def _reaction(self, event: Reaction) -> str:
        koo_id = event.koo_id
        item = await self.stores.koos.get(koo_id, consistent=True)
        if item is None:
            raise NotReady(f"koo {koo_id} is not stored (yet)")
        if "created_at" not in item:  # a tombstone: deleted before it arrived
            return await self._record(event, NOOP)
        author = item["author_id"]
        row = self.stores.reactions.switch_item(event, author)
        delta = 1 if event.ADDED else -1
        counter = self.stores.koos.counter_item(koo_id, event.kind, delta)
        for _ in range(SETTLE_ATTEMPTS):
            failed = await self._commit(event, [row, counter])
            if failed is None:
                break
            if failed != 0:
                raise NotReady(f"koo {koo_id} vanished while reacting")
            if await self.stores.reactions.settle(event):
                return await self._record(event, NOOP)
            # An older event changed the row between our write and settle: go again.
        else:
            raise StorageUnavailable(f"reaction row of koo {koo_id} keeps changing", "contended")
        with without_cache("bump_counter"):
            await self.cache.bump_counter(koo_id, COUNTER_OF[event.kind], delta)
            if author != event.user_id:
                await self.cache.affinity_changed(
                    event.user_id, author, delta * REACTION_WEIGHT[event.kind]
                )
        return APPLIED

    # --- relations --------------------------------------------------------------------

    async def _relation(self, event: Relation) -> str:
        user, kind, other, at = event.user, event.KIND, event.other, event.occurred_at
        relations = self.stores.relations
        items = [
            relations.switch_on_item(user, kind, other, at)
            if event.ON else relations.switch_off_item(user, kind, other, at)
        ]
        if kind == keys.REL_FOLLOW:
            delta = 1 if event.ON else -1
            items.append(self.stores.users.counter_item(other, "followers", delta))
            items.append(self.stores.users.counter_item(user, "following", delta))
        for _ in range(SETTLE_ATTEMPTS):
            failed = await self._commit(event, items)
            if failed is None:
                return APPLIED
            if await relations.settle(user, kind, other, at, event.ON):
                return await self._record(event, NOOP)
            # An older event changed the row between our write and settle: go again.
        raise StorageUnavailable(f"relation {user} {kind} {other} keeps changing", "contended")

    async def _after_relation(self, event: Relation, done: Committed) -> None:
        """Bring the cache in line with the relation's current state, and enqueue the
        timeline work it calls for."""
        user, kind, other = event.user, event.KIND, event.other
        if done.outcome == APPLIED:
            active = event.ON  # this event just set the state
        else:
            active = await self.stores.relations.is_active(user, kind, other)
        if kind == keys.REL_FOLLOW:
            with without_cache("drop_profiles"):
                await self.cache.drop_profiles(user, other)  # their counters changed
            # A new follow time: how far back a pulled author's koos show changes with it.
            await self.cache.drop_pull_floor(user, other)
        await self.cache.relation_changed(_RELATION_SET[kind](user), other, active)
        if kind == keys.REL_BLOCK:
            await self.cache.relation_changed(keys.blocked_by(other), user, active)
        with without_cache("live_note"):
            # Realtime streams of either side re-read the relations before going on.
            await self.cache.live_note([user, other] if kind == keys.REL_BLOCK else [user],
                                       "rel")
        tag = event.event_id
        if kind == keys.REL_FOLLOW:
            await self._check_celebrity(other, tag, event.occurred_at)
        if active and kind != keys.REL_FOLLOW:
            # Blocked or muted: take the other's koos out now (reads already filter them).
            await self._enqueue_unmerge(user, other, tag)
            if kind == keys.REL_BLOCK:
                await self._enqueue_unmerge(other, user, tag)
        elif not active and kind == keys.REL_FOLLOW:
            await self._enqueue_unmerge(user, other, tag)
        else:
            # Followed, or unblocked or unmuted: what the reader follows comes back.
            await self._enqueue_merge(user, other, tag)
            if not active and kind == keys.REL_BLOCK:
                await self._enqueue_merge(other, user, tag)

    async def _enqueue_merge(self, reader: str, author: str, tag: str) -> None:
        await self.jobs.enqueue(job.MERGE_AUTHOR, reader, author,
                                job_id=keys.merge_job(reader, author, tag))

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
