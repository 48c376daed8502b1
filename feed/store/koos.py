"""Koos: content, counters, the deleted mark and the state of each koo's fan-out."""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

from config.tables import KOOS, KOOS_BY_AUTHOR, KOOS_BY_LANG_DAY, KOOS_FANOUT_PENDING
from feed import keys
from feed.errors import ConditionFailed
from feed.events import KooCreated
from feed.models import Koo
from feed.store._codec import Item, values
from feed.store._dynamo import Dynamo

__all__ = ["COUNTER_OF", "FanoutState", "Koos"]

# reaction kind -> counter attribute
COUNTER_OF = {"like": "likes", "rekoo": "rekoos", "comment": "comments"}
BODY_FIELDS = ("koo_id", "author_id", "text", "lang", "created_at", "hashtags", "reply_to",
               "rekoo_of", "likes", "rekoos", "comments", "deleted")


class FanoutState:
    PENDING = "pending"  # stored, fan-out not started (or to be redone)
    RUNNING = "running"  # chunks enqueued, not all done
    DONE = "done"
    PULL = "pull"  # celebrity author: pulled at read time, never fanned out


class Koos:
    def __init__(self, db: Dynamo) -> None:
        self.db = db

    def create_item(self, event: KooCreated, *, pull: bool) -> dict[str, Any]:
        """Transaction item storing a new koo; cancels if the koo id is already known."""
        created = event.occurred_at
        item: dict[str, Any] = {
            "koo_id": event.koo_id,
            "author_id": event.author_id,
            "author_key": event.author_id,
            "text": event.text,
            "lang": event.lang,
            "lang_day": keys.lang_day(event.lang, created),
            "created_at": created,
            "created_sk": keys.sort_key(created, event.koo_id),
            "hashtags": list(event.hashtags),
            "reply_to": event.reply_to,
            "rekoo_of": event.rekoo_of,
            "likes": 0,
            "rekoos": 0,
            "comments": 0,
        }
        if pull:
            item["fanout_state"] = FanoutState.PULL
        else:
            item["fanout_state"] = FanoutState.PENDING
            item["fanout_shard"] = keys.FANOUT_SHARD
            item["fanout_deadline"] = self._deadline()
        return {
            "Put": {
                "TableName": KOOS,
                "Item": item,
                "ConditionExpression": "attribute_not_exists(koo_id)",
            }
        }

    def _deadline(self) -> int:
        return int(time.time()) + self.db.settings.fanout_deadline_seconds

    async def get(self, koo_id: str, *, consistent: bool = False) -> Item | None:
        """The stored item (deleted ones and tombstones included)."""
        return await self.db.get(KOOS, {"koo_id": koo_id}, consistent=consistent)

    async def get_many(self, koo_ids: Sequence[str]) -> dict[str, Koo]:
        """Koos by id (deleted ones included, marked), through BatchGetItem."""
        items = await self.db.batch_get(
            KOOS, [{"koo_id": k} for k in koo_ids], attributes=BODY_FIELDS
        )
        return {i["koo_id"]: Koo.from_item(i) for i in items if "text" in i or i.get("deleted")}

    def counter_item(self, koo_id: str, kind: str, delta: int) -> dict[str, Any]:
        """Transaction item adding ``delta`` to a koo's counter; cancels for an unknown koo."""
        return {
            "Update": {
                "TableName": KOOS,
                "Key": {"koo_id": koo_id},
                "UpdateExpression": "ADD #c :d",
                "ConditionExpression": "attribute_exists(created_at)",
                "ExpressionAttributeNames": {"#c": COUNTER_OF[kind]},
                "ExpressionAttributeValues": values(d=delta),
            }
        }

    async def mark_deleted(self, koo_id: str, author_id: str, at: int) -> str:
        """Mark a koo deleted. Returns "deleted", "already", "not_author" or "tombstone"
        (the koo is not known yet: a tombstone keeps a late koo_created from showing it)."""
        try:
            await self.db.update(
                KOOS, {"koo_id": koo_id},
                "SET deleted = :yes, deleted_at = :t REMOVE author_key, lang_day, fanout_shard",
                condition="attribute_exists(created_at) AND author_id = :a "
                "AND attribute_not_exists(deleted)",
                values=values(yes=True, t=at, a=author_id),
            )
            return "deleted"
        except ConditionFailed:
            pass
        item = await self.get(koo_id, consistent=True)
        if item is None:
            try:
                await self.db.put(
                    KOOS,
                    {"koo_id": koo_id, "author_id": author_id, "deleted": True, "deleted_at": at},
                    condition="attribute_not_exists(koo_id)",
                )
                return "tombstone"
            except ConditionFailed:
                return await self.mark_deleted(koo_id, author_id, at)
        if item.get("author_id") != author_id:
            return "not_author"
        if not item.get("deleted"):
            # The koo was stored between the failed update and this read: delete it now.
            return await self.mark_deleted(koo_id, author_id, at)
        return "already"

    async def by_author(
        self, author_id: str, *, limit: int, before: tuple[int, str] | None = None
    ) -> list[tuple[str, int]]:
        """An author's live koos as (koo_id, created), newest first, older than ``before``."""
        condition = "author_key = :a"
        vals: dict[str, Any] = {"a": author_id}
        if before:
            condition += " AND created_sk < :b"
            vals["b"] = keys.sort_key(*before)
        items, _ = await self.db.query_page(
            KOOS, condition, values=values(**vals), index=KOOS_BY_AUTHOR, limit=limit,
            forward=False,
        )
        return [(k, c) for c, k in (keys.parse_sort_key(i["created_sk"]) for i in items)]

    async def recent_in_lang(
        self, lang: str, day_ms: int, *, limit: int, before: str | None = None,
    ) -> list[tuple[str, str]]:
        """Live koos in one language on one UTC day as (koo_id, sort key), newest first,
        older than the sort key ``before`` (to read on from where a page ended)."""
        condition = "lang_day = :d"
        vals: dict[str, Any] = {"d": keys.lang_day(lang, day_ms)}
        if before is not None:
            condition += " AND created_sk < :b"
            vals["b"] = before
        items, _ = await self.db.query_page(
            KOOS, condition, values=values(**vals), index=KOOS_BY_LANG_DAY, limit=limit,
            forward=False,
        )
        return [(i["koo_id"], i["created_sk"]) for i in items]

    # --- fan-out state ------------------------------------------------------------------

    async def start_fanout(self, koo_id: str) -> bool:
        """Move a koo to RUNNING with a fresh deadline; False if it is done, pulled or gone.

        Chunks already recorded as done by an earlier run are kept: chunk ids are
        stable, so a re-run skips them.
        """
        try:
            await self.db.update(
                KOOS, {"koo_id": koo_id},
                "SET fanout_state = :run, fanout_shard = :s, fanout_deadline = :d "
                "REMOVE fanout_expected",
                condition="attribute_exists(created_at) AND fanout_state IN (:pend, :run) "
                "AND attribute_not_exists(deleted)",
                values=values(run=FanoutState.RUNNING, pend=FanoutState.PENDING,
                              s=keys.FANOUT_SHARD, d=self._deadline()),
            )
        except ConditionFailed:
            return False
        return True

    async def finish_small_fanout(self, koo_id: str) -> bool:
        """DONE straight from PENDING/RUNNING: a fan-out delivered in one step."""
        try:
            await self.db.update(
                KOOS, {"koo_id": koo_id},
                "SET fanout_state = :done REMOVE fanout_shard, fanout_deadline, fanout_done, "
                "fanout_expected",
                condition="fanout_state IN (:pend, :run)",
                values=values(done=FanoutState.DONE, pend=FanoutState.PENDING,
                              run=FanoutState.RUNNING),
            )
        except ConditionFailed:
            return False
        return True

    async def chunk_done(self, koo_id: str, chunk: str) -> bool:
        """Record one delivered chunk; True if that completed the fan-out."""
        item = await self.db.update(
            KOOS, {"koo_id": koo_id}, "ADD fanout_done :c",
            condition="attribute_exists(created_at)", values={":c": {"SS": [chunk]}},
            returns="ALL_NEW",
        )
        return await self._finish_if_complete(koo_id, item)

    async def set_expected(self, koo_id: str, chunks: set[str]) -> bool:
        """Record every chunk this run enqueued; True if they were all done already."""
        if not chunks:
            return await self._finish(koo_id)
        item = await self.db.update(
            KOOS, {"koo_id": koo_id}, "SET fanout_expected = :e",
            condition="attribute_exists(created_at)", values={":e": {"SS": sorted(chunks)}},
            returns="ALL_NEW",
        )
        return await self._finish_if_complete(koo_id, item)

    async def _finish_if_complete(self, koo_id: str, item: Item) -> bool:
        expected = item.get("fanout_expected")
        if item.get("fanout_state") != FanoutState.RUNNING or not expected:
            return item.get("fanout_state") == FanoutState.DONE
        if not set(expected) <= set(item.get("fanout_done") or ()):
            return False
        return await self._finish(koo_id)

    async def _finish(self, koo_id: str) -> bool:
        try:
            await self.db.update(
                KOOS, {"koo_id": koo_id},
                "SET fanout_state = :done REMOVE fanout_shard, fanout_deadline, fanout_done, "
                "fanout_expected",
                condition="fanout_state = :run",
                values=values(done=FanoutState.DONE, run=FanoutState.RUNNING),
            )
        except ConditionFailed:
            return False
        return True

    async def overdue_fanouts(self, now_s: int, *, limit: int = 500) -> list[Item]:
        """Koos whose fan-out is unfinished past its deadline (the sweeper's work list)."""
        items, _ = await self.db.query_page(
            KOOS, "fanout_shard = :s AND fanout_deadline < :now",
            values=values(s=keys.FANOUT_SHARD, now=now_s), index=KOOS_FANOUT_PENDING,
            limit=limit,
        )
        return items

    async def unpull(self, koo_id: str) -> bool:
        """Turn a celebrity-era koo (pulled at read time) into one to fan out."""
        try:
            await self.db.update(
                KOOS, {"koo_id": koo_id},
                "SET fanout_state = :pend, fanout_shard = :s, fanout_deadline = :d",
                condition="fanout_state = :pull AND attribute_not_exists(deleted)",
                values=values(pend=FanoutState.PENDING, pull=FanoutState.PULL,
                              s=keys.FANOUT_SHARD, d=self._deadline()),
            )
        except ConditionFailed:
            return False
        return True

    async def erase(self, koo_id: str) -> None:
        """Delete a koo's row outright (an erasure: no tombstone of the koo is kept; the
        author's tombstone refuses a replay of its koo_created)."""
        await self.db.delete(KOOS, {"koo_id": koo_id})

    async def scan_by_author(self, author_id: str) -> list[Item]:
        """Every koo row of an author, deleted ones and tombstones included (those are on
        no index), from a Scan of the whole table."""
        found: list[Item] = []
        async for page, _ in self.db.scan_pages(KOOS, limit=1000,
                                                attributes=["koo_id", "author_id"]):
            found.extend(i for i in page if i.get("author_id") == author_id)
        return found
