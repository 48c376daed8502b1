"""Erasing a user (``user_deleted``): every row, cached key and mention of them, in steps.

The event writes the tombstone first (:meth:`Users.mark_erased`): from then on every
event naming the user is refused (``user_deleted``), in the same transaction as its
writes, so nothing new about them can be stored while the erasure runs. The
``erase_user`` job then runs the steps below in order. Each step is idempotent and
works in bounded pieces; the step, the position in it and what was removed so far are
saved on the tombstone after every piece, so a run that is killed is redone from there.
A run works for part of its job's time limit, then enqueues the next run.

1. ``koos``: each live koo goes the way of a deleted one (the deleted mark, the cache,
   :meth:`FeedManager.undeliver`), then its row and the reactions under it are deleted.
   A koo whose fan-out is still running is marked and waited for (``fanouts``), so a
   chunk delivered meanwhile is taken out too.
2. ``reactions``: the user's reactions on others' koos, each deleted with the koo's
   counter in one transaction (only an active row moves the counter).
3. ``relations``: every relation from and to the user, each follow with the other's
   counter in one transaction; the other readers' cached sets follow.
4. ``sweep``: what is on no index (inactive relations and reactions): Scans of those
   tables, handled as above.
5. ``timeline``, ``recommendations`` (theirs, and others' lists naming them),
   ``notifications`` (theirs, and their part in others'), ``dead_letters`` (cut down to
   ids, type and reason), ``cache`` and ``profile`` (in its home region too; the row
   becomes the bare tombstone).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from feed import jobs as job
from feed import keys
from feed.audit import AuditTrail
from feed.cache.fallback import without_cache
from feed.errors import TransactionCancelled
from feed.jobs import JobQueue
from feed.notifications import Notifications
from feed.store.koos import COUNTER_OF, FanoutState
from feed.store.users import NOT_ERASED
from feed.timeline import FeedManager

__all__ = ["STEPS", "Erasure", "Progress"]

log = logging.getLogger(__name__)

STEPS = ("start", "koos", "koos_sweep", "fanouts", "reactions", "relations", "sweep",
         "timeline", "recommendations", "notifications", "dead_letters", "cache", "profile", "done")
PAGE = 100  # koos, reactions or relations handled per piece (progress saved after each)
KOOS_AT_ONCE = 4
KOO_PAGE = 4 * KOOS_AT_ONCE  # koos per piece: each is a purge of one batch per follower page
WAIT_SECONDS = 5.0  # how long a run waits before looking at unfinished fan-outs again


@dataclass
class Progress:
    """Where an erasure stands: the step, the position in it, counts of what was
    removed, and the koos whose fan-outs it waits for."""

    step: str
    pos: str = ""
    counts: dict[str, int] = field(default_factory=dict)
    wait: set[str] = field(default_factory=set)

    @classmethod
    def from_tombstone(cls, stone: dict[str, Any]) -> Progress:
        counts = {k: int(v) for k, v in (stone.get("erase_counts") or {}).items()}
        return cls(str(stone.get("erase_step", "start")), str(stone.get("erase_pos", "")),
                   counts, set(stone.get("erase_wait") or ()))

    def add(self, name: str, n: int = 1) -> None:
        if n:
            self.counts[name] = self.counts.get(name, 0) + n

    def as_dict(self) -> dict[str, Any]:
        return {"step": self.step, "position": self.pos, "removed": dict(self.counts),
                "waiting_for_fanouts": len(self.wait)}


class Erasure:
    """Runs the erasure of one user (see the module docstring)."""

    def __init__(self, manager: FeedManager, jobs: JobQueue) -> None:
        self.manager = manager
        self.stores = manager.stores
        self.cache = manager.cache
        self.jobs = jobs
        self.audit = AuditTrail(manager.stores.db)

    async def progress(self, user_id: str) -> Progress | None:
        stone = await self.stores.users.erasure(user_id)
        return None if stone is None else Progress.from_tombstone(stone)

    async def run(self, user_id: str, run: int = 0, *, budget: float = 20.0) -> str:
        """Work on the erasure, one piece at least, for about ``budget`` seconds; returns
        "done", "more" (the next run is enqueued), "waiting" (for fan-outs; enqueued
        later) or "not-erased"."""
        stone = await self.stores.users.erasure(user_id)
        if stone is None:
            return "not-erased"
        state = Progress.from_tombstone(stone)
        if state.step == "done":
            return "done"
        started = time.monotonic()
        steps: dict[str, Callable[[str, Progress], Awaitable[bool]]] = {
            "start": self._start, "koos": self._koos, "koos_sweep": self._koos_sweep,
            "fanouts": self._fanouts,
            "reactions": self._reactions, "relations": self._relations,
            "sweep": self._sweep, "timeline": self._timeline,
            "recommendations": self._recommendations,
            "notifications": self._notifications, "dead_letters": self._dead_letters,
            "cache": self._cache, "profile": self._profile,
        }
        while state.step != "done":
            finished = await steps[state.step](user_id, state)
            if finished:
                state.step, state.pos = STEPS[STEPS.index(state.step) + 1], ""
            if state.step == "done":  # recorded once: the row's id is the erasure's
                await self.audit.record(
                    "erasure", user_id, by=str(stone.get("erase_by", "")),
                    counts=state.counts, once=f"erasure-{stone.get('erased_at')}")
            await self.stores.users.save_erasure(user_id, state.step, state.pos,
                                                 state.counts, state.wait)
            if not finished and state.step == "fanouts":
                await self._next_run(user_id, run, defer=WAIT_SECONDS)
                return "waiting"
            if state.step != "done" and time.monotonic() - started > budget:
                await self._next_run(user_id, run, defer=None)
                return "more"
        log.info("user erased", extra={"user_id": user_id, "removed": state.counts})
        return "done"

    async def _next_run(self, user_id: str, run: int, *, defer: float | None) -> None:
        await self.jobs.enqueue(job.ERASE_USER, user_id, run + 1,
                                job_id=keys.erase_job(user_id, run + 1), defer_seconds=defer)

    # --- the steps: each handles one piece and returns True once the step is done -------

    async def _start(self, user_id: str, state: Progress) -> bool:
        # The profile and what shows the user at once: reads 404 from here on.
        with without_cache("drop_profiles"):
            await self.cache.drop_profiles(user_id)
            await self.cache.celebrity_changed(user_id, False)
        return True

    async def _koos(self, user_id: str, state: Progress) -> bool:
        page = await self.stores.koos.by_author(user_id, limit=KOO_PAGE)
        # A few koos at once: each one's purge is one batch of deletes per follower page.
        for start in range(0, len(page), KOOS_AT_ONCE):
            await asyncio.gather(*(self._erase_koo(user_id, koo_id, state)
                                   for koo_id, _ in page[start:start + KOOS_AT_ONCE]))
        state.pos = str(state.counts.get("koos", 0))
        return len(page) < KOO_PAGE

    async def _koos_sweep(self, user_id: str, state: Progress) -> bool:
        # Koos on no index: deleted before, or marked by a run killed half-way (while
        # their followers can still be found).
        for item in await self.stores.koos.scan_by_author(user_id):
            await self._erase_koo(user_id, item["koo_id"], state)
        return True

    async def _fanouts(self, user_id: str, state: Progress) -> bool:
        for koo_id in sorted(state.wait):
            await self._erase_koo(user_id, koo_id, state)
        return not state.wait

    async def _erase_koo(self, user_id: str, koo_id: str, state: Progress) -> None:
        """A koo of the user: hidden and purged like a deleted koo (the existing path),
        then its row and the reactions under it deleted."""
        item = await self.stores.koos.get(koo_id, consistent=True)
        if item is None or item.get("author_id") != user_id:
            state.wait.discard(koo_id)
            return
        if "created_at" in item and not item.get("deleted"):
            await self.stores.koos.mark_deleted(koo_id, user_id, int(time.time() * 1000))
        with without_cache("mark_deleted"):
            await self.cache.mark_deleted(koo_id)
            await self.cache.author_recent_remove(user_id, koo_id)
            if item.get("lang"):
                await self.cache.trending_remove(item["lang"], koo_id)
        running = (item.get("fanout_state") == FanoutState.RUNNING
                   and int(item.get("fanout_deadline", 0)) > time.time())
        if running:
            state.wait.add(koo_id)  # chunks may still land: purged once it settles
            return
        if "created_at" in item:
            await self.manager.undeliver(koo_id)
        # The reactions go before the row (a run killed in between finds the row again,
        # in the koos sweep) and once more after it: none can be added once it is gone.
        rows = await self._erase_reactions_on(koo_id)
        await self.stores.koos.erase(koo_id)
        rows += await self._erase_reactions_on(koo_id)
        reactors = {keys.split_reaction_sk(r)[0] for r in rows}
        with without_cache("erase_koos"):
            await self.cache.erase_koos([koo_id])
            await self.cache.forget_user(user_id, reactors)
        state.wait.discard(koo_id)
        state.add("koos")
        state.add("reactions_on_koos", len(set(rows)))

    async def _erase_reactions_on(self, koo_id: str) -> list[str]:
        rows = await self.stores.reactions.rows_for_koo(koo_id)
        await self.stores.reactions.remove_rows([(koo_id, r["rk"]) for r in rows])
        return [str(r["rk"]) for r in rows]

    async def _reactions(self, user_id: str, state: Progress) -> bool:
        page = await self.stores.reactions.recent_by_user(user_id, limit=PAGE)
        for item in page:
            await self._erase_reaction(user_id, item["koo_id"], item["kind"], True, state)
        state.pos = str(state.counts.get("reactions", 0))
        return len(page) < PAGE

    async def _erase_reaction(self, user_id: str, koo_id: str, kind: str, active: bool,
                              state: Progress) -> None:
        """Delete one reaction of the user; an active one takes its koo's counter down in
        the same transaction (a row already gone or off moves nothing)."""
        reactions = self.stores.reactions
        moved = False
        if active:
            try:
                await self.stores.db.transact([
                    reactions.erase_item(koo_id, user_id, kind, active=True),
                    self.stores.koos.counter_item(koo_id, kind, -1),
                ])
                moved = True
            except TransactionCancelled:
                pass
        if not moved:
            await self.stores.db.transact([reactions.erase_item(koo_id, user_id, kind,
                                                                active=None)])
        else:
            with without_cache("bump_counter"):
                await self.cache.bump_counter(koo_id, COUNTER_OF[kind], -1)
        state.add("reactions")

    async def _relations(self, user_id: str, state: Progress) -> bool:
        relations = self.stores.relations
        touched: set[str] = set()
        outgoing = await relations.rows_of(user_id)
        for kind, other, active in outgoing[:PAGE]:
            await self._erase_relation(user_id, user_id, kind, other, active, state)
            touched.add(other)
        done = len(outgoing) <= PAGE
        if done:
            for kind in keys.REL_KINDS:
                others, _ = await relations.incoming_page(user_id, kind, page_size=PAGE)
                for other in others:
                    await self._erase_relation(user_id, other, kind, user_id, True, state)
                    touched.add(other)
                done = done and len(others) < PAGE
        with without_cache("forget_user"):
            await self.cache.forget_user(user_id, touched)
        state.pos = str(state.counts.get("relations", 0))
        return done

    async def _erase_relation(self, erased: str, user: str, kind: str, other: str,
                              active: bool, state: Progress) -> None:
        """Delete one relation row (``user`` -> ``other``, one of them ``erased``); an
        active follow takes the other side's counter down in the same transaction."""
        relations = self.stores.relations
        if active and kind == keys.REL_FOLLOW:
            keeper, counter = (other, "followers") if user == erased else (user, "following")
            item = self.stores.users.counter_item(keeper, counter, -1)
            item["Update"]["ConditionExpression"] = NOT_ERASED  # an erased side has no counters
            try:
                await self.stores.db.transact([
                    relations.erase_item(user, kind, other, active=True), item])
                state.add("relations")
                return
            except TransactionCancelled:
                pass  # gone, off, or the other side is erased too: the row goes alone
        await self.stores.db.transact([relations.erase_item(user, kind, other, active=None)])
        state.add("relations")

    async def _sweep(self, user_id: str, state: Progress) -> bool:
        for koo_id, kind, active in await self.stores.reactions.scan_by(user_id):
            await self._erase_reaction(user_id, koo_id, kind, active, state)
        touched: set[str] = set()
        for user, kind, other in await self.stores.relations.scan_naming(user_id):
            active = await self.stores.relations.is_active(user, kind, other)
            await self._erase_relation(user_id, user, kind, other, active, state)
            touched.add(other if user == user_id else user)
        with without_cache("forget_user"):
            await self.cache.forget_user(user_id, touched)
        return True

    async def _timeline(self, user_id: str, state: Progress) -> bool:
        state.add("timeline_rows", await self.stores.timelines.erase_reader(user_id))
        return True

    async def _recommendations(self, user_id: str, state: Progress) -> bool:
        recommendations = self.stores.recommendations
        state.add("recommendation_rows", await recommendations.erase(user_id))
        for reader in await recommendations.readers_recommended({user_id}):
            state.add("recommendation_rows", await recommendations.erase(reader))
        return True

    async def _notifications(self, user_id: str, state: Progress) -> bool:
        notifications = Notifications.over(self.manager)
        state.add("notifications", await notifications.erase_recipient(user_id))
        state.add("notification_mentions", await notifications.remove_actor(user_id))
        return True

    async def _dead_letters(self, user_id: str, state: Progress) -> bool:
        state.add("dead_letters_scrubbed", await self.stores.dead_letters.scrub(user_id))
        return True

    async def _cache(self, user_id: str, state: Progress) -> bool:
        state.add("cache_keys", await self.cache.drop_user_keys(user_id))
        state.add("cache_lists", await self.cache.forget_in_lists(user_id, set()))
        return True

    async def _profile(self, user_id: str, state: Progress) -> bool:
        state.add("profiles", await self.stores.users.erase_profile(user_id))
        with without_cache("drop_profiles"):
            await self.cache.drop_profiles(user_id)
        return True
