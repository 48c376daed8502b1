"""Notifications in DynamoDB: one partition per recipient, exact counts under retries.

Three kinds of rows, all under the recipient (``keys.notify_*`` builds their sort keys):

- a **source** row per action (a reaction, a follow, one reply) holds whether it counts,
  the version of the state it was last set from and the group it counts in;
- an **actor** row per (group, actor) holds ``n``, how many live sources of that actor
  the group has (1 but for replies), and whether the group's count includes the actor;
- a **group** row per notification holds ``actor_count``, the newest actors and
  ``updated_at``, and a revision.

A source changes in one transaction with the actor rows it moves (conditioned on the
version read), and marks them ``pend``. Only :meth:`NotificationStore.settle` moves a
group's count: it reads the pending actor rows of the group (a local index, read
consistently), and in one transaction clears their marks and moves the count by the
actors that came or went, conditioned on each actor row's revision and on the group's.
So a replayed event, a retried transaction or a worker killed anywhere counts nothing
twice and loses nothing (the marks stay until a settle clears them), and a burst on one
notification moves its group row once per batch of actors, not once per action.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

from config.tables import (
    NOTIFICATIONS,
    NOTIFY_BY_ACTOR,
    NOTIFY_BY_UPDATED,
    NOTIFY_LIVE,
    NOTIFY_PENDING,
)
from feed import keys, notify_keys
from feed.errors import ConditionFailed, TransactionCancelled
from feed.store._codec import Item, values
from feed.store._dynamo import Dynamo

__all__ = ["KEEP_ACTORS", "SETTLE_BATCH", "NotificationStore", "Source", "group_body"]

KEEP_ACTORS = 8  # newest actors kept on a group: 3 shown, the rest cover read-time filters
SETTLE_BATCH = 24  # pending actor rows per settle transaction (plus the group row)
REPLY = "reply"


@dataclass(frozen=True, slots=True)
class Source:
    """One action as its source of truth says now: on or off, when, at which version."""

    recipient: str
    kind: str
    koo_id: str | None
    actor: str
    source: str  # the reply's koo id; "-" for reactions and follows
    on: bool
    at: int  # the action's time (ms): picks its window
    ver: int  # the version of the state this was read from: a lower one never wins


def group_body(item: Item) -> dict[str, Any]:
    """The cached and served form of a group row."""
    kind, koo_id, _ = notify_keys.split_notify_group(item["nk"][2:])
    return {"group": item["nk"][2:], "kind": kind, "koo_id": koo_id,
            "actors": list(item.get("actors") or []),
            "actor_count": int(item.get("actor_count", 0)),
            "updated_at": int(item.get("updated_at", 0)), "rev": int(item.get("rev", 0))}


class NotificationStore:
    def __init__(self, db: Dynamo, *, window_ms: int, ttl_seconds: int) -> None:
        self.db = db
        self.window_ms = window_ms
        self.ttl_seconds = ttl_seconds

    def group_of(self, kind: str, koo_id: str | None, at: int) -> str:
        return notify_keys.notify_group(kind, koo_id, at // self.window_ms)

    def _expires(self, at_ms: int) -> int:
        return at_ms // 1000 + self.ttl_seconds

    # --- sources ------------------------------------------------------------------------

    async def switch(self, change: Source, *, force_off: bool = False) -> list[str] | None:
        """Bring a source row to ``change`` (or, ``force_off``, switch it off whatever its
        version). Returns the groups whose actors moved ([] if nothing changed), or None
        if another writer got there first (read again and retry)."""
        nk = notify_keys.notify_source_sk(change.kind, change.koo_id, change.actor, change.source)
        key = {"user_id": change.recipient, "nk": nk}
        old = await self.db.get(NOTIFICATIONS, key, consistent=True)
        old_on = bool(old and old.get("active"))
        old_ver = int(old["ver"]) if old else None
        old_group = old.get("grp") if old_on and old else None
        # Nothing to change: the groups this source last moved still get settled, for a
        # run cut short between its switch and its settle.
        last = [g for g in (old or {}).get("moved", []) if isinstance(g, str)]
        if force_off:
            if not old_on:
                return last
            on, ver = False, int(old_ver or 0)
        else:
            if old_ver is not None and old_ver >= change.ver:
                return last  # a replay, or older than what the row holds
            on, ver = change.on, change.ver
        new_group = self.group_of(change.kind, change.koo_id, change.at) if on else None
        row: dict[str, Any] = {**key, "active": on, "ver": ver, "at": change.at,
                               "actor_key": change.actor,
                               "actor_sk": notify_keys.notify_actor_index_sk(change.recipient, nk),
                               "expires_at": self._expires(change.at)}
        if new_group:
            row["grp"] = new_group
        if old is None:
            put = {"Put": {"TableName": NOTIFICATIONS, "Item": row,
                           "ConditionExpression": "attribute_not_exists(nk)"}}
        else:
            put = {"Put": {"TableName": NOTIFICATIONS, "Item": row,
                           "ConditionExpression": "ver = :v AND active = :a",
                           "ExpressionAttributeValues": values(v=old_ver, a=old_on)}}
        items = [put]
        moved: list[str] = []
        if old_group and old_group != new_group:
            items.append(self._actor_delta(change, old_group, -1))
            moved.append(old_group)
        if new_group and new_group != old_group:
            items.append(self._actor_delta(change, new_group, +1))
            moved.append(new_group)
        if new_group and new_group == old_group and old and int(old.get("at", 0)) != change.at:
            items.append(self._actor_delta(change, new_group, 0))  # newer activity, same actor
            moved.append(new_group)
        row["moved"] = moved
        try:
            await self.db.transact(items)
        except TransactionCancelled:
            return None
        return moved

    def _actor_delta(self, change: Source, group: str, delta: int) -> dict[str, Any]:
        nk = notify_keys.notify_actor_sk(group, change.actor)
        sets: dict[str, Any] = {"pend": notify_keys.notify_pending_sk(group, change.actor)}
        remove = ""
        if delta >= 0:
            sets.update(at=change.at,
                        live_sk=notify_keys.notify_live_sk(group, change.at, change.actor),
                        actor_key=change.actor, expires_at=self._expires(change.at),
                        actor_sk=notify_keys.notify_actor_index_sk(change.recipient, nk))
        elif change.kind != REPLY:
            remove = " REMOVE live_sk"  # one source per actor: this was the last
        vals = values(d=delta, one=1, **{f"s{i}": v for i, v in enumerate(sets.values())})
        expression = ("SET " + ", ".join(f"#s{i} = :s{i}" for i in range(len(sets)))
                      + " ADD n :d, arev :one" + remove)
        return {"Update": {
            "TableName": NOTIFICATIONS,
            "Key": {"user_id": change.recipient, "nk": nk},
            "UpdateExpression": expression,
            "ExpressionAttributeNames": {f"#s{i}": name for i, name in enumerate(sets)},
            "ExpressionAttributeValues": vals,
        }}

    async def sources_of_koo(self, recipient: str, koo_id: str, kind: str
                             ) -> AsyncIterator[Item]:
        """Every source row of one kind on one koo of the recipient."""
        async for item in self.db.query(
            NOTIFICATIONS, "user_id = :u AND begins_with(nk, :p)",
            values=values(u=recipient, p=notify_keys.notify_koo_prefix(kind, koo_id, "s")),
            consistent=True, page_size=500,
        ):
            yield item

    async def rows_of_actor(self, actor: str, recipient: str | None = None
                            ) -> AsyncIterator[tuple[str, str]]:
        """(recipient, sort key) of every source and actor row naming ``actor`` (in one
        recipient's notifications, or everyone's), from the by-actor index."""
        condition = "actor_key = :a"
        vals: dict[str, Any] = {"a": actor}
        if recipient is not None:
            condition += " AND begins_with(actor_sk, :r)"
            vals["r"] = f"{recipient}{keys.SORT_SEP}"
        async for item in self.db.query(NOTIFICATIONS, condition, values=values(**vals),
                                        index=NOTIFY_BY_ACTOR, page_size=500):
            owner, _, nk = item["actor_sk"].partition(keys.SORT_SEP)
            yield owner, nk

    # --- settling a group's count -------------------------------------------------------

    async def settle(self, recipient: str, group: str) -> tuple[bool, dict[str, Any] | None]:
        """Move one batch of the group's pending actors into its count. Returns (done,
        body): done is False while more is pending (or another settle won: call again);
        body is the group as it now is (actor_count 0: gone), None if nothing moved."""
        pending, _ = await self.db.query_page(
            NOTIFICATIONS, "user_id = :u AND begins_with(pend, :p)",
            values=values(u=recipient, p=f"{group}{keys.SORT_SEP}"), index=NOTIFY_PENDING,
            limit=SETTLE_BATCH, consistent=True,
        )
        if not pending:
            return True, None
        gkey = {"user_id": recipient, "nk": notify_keys.notify_group_sk(group)}
        current = await self.db.get(NOTIFICATIONS, gkey, consistent=True)
        count = int(current.get("actor_count", 0)) if current else 0
        rev = int(current.get("rev", 0)) if current else 0
        items: list[dict[str, Any]] = []
        delta = 0
        gone: set[str] = set()
        for row in pending:
            n, counted = int(row.get("n", 0)), bool(row.get("counted"))
            key = {"user_id": recipient, "nk": row["nk"]}
            # Unchanged since read (arev), and still pending: another settle that read the
            # same rows and committed first cleared their marks, and counted them.
            guard = {"ConditionExpression": "arev = :r AND attribute_exists(pend)",
                     "ExpressionAttributeValues": values(r=int(row["arev"]))}
            actor = row["nk"].rpartition(keys.SORT_SEP)[2]
            if n > 0:
                delta += 0 if counted else 1
                items.append({"Update": {
                    "TableName": NOTIFICATIONS, "Key": key,
                    "UpdateExpression": "SET counted = :t, live_sk = :l REMOVE pend",
                    **guard, "ExpressionAttributeValues": values(
                        r=int(row["arev"]), t=True,
                        l=notify_keys.notify_live_sk(group, int(row.get("at", 0)), actor)),
                }})
            else:
                delta -= 1 if counted else 0
                gone.add(actor)
                # Kept (until its TTL), not deleted: its revision goes on counting, so a
                # settle that read it before cannot take a row made again for another.
                items.append({"Update": {
                    "TableName": NOTIFICATIONS, "Key": key,
                    "UpdateExpression": "SET counted = :f REMOVE pend, live_sk", **guard,
                    "ExpressionAttributeValues": values(r=int(row["arev"]), f=False),
                }})
        newest = [a for a in await self.newest_actors(recipient, group) if a[0] not in gone]
        count = max(0, count + delta)
        kind, koo_id, _ = notify_keys.split_notify_group(group)
        updated = newest[0][1] if newest else int((current or {}).get("updated_at", 0))
        body: dict[str, Any] = {"group": group, "kind": kind, "koo_id": koo_id,
                                "actors": [a for a, _ in newest], "actor_count": count,
                                "updated_at": updated, "rev": rev + 1}
        if count > 0:
            expression = ("SET actor_count = :c, actors = :a, updated_at = :u, upd_sk = :s, "
                          "rev = :n, expires_at = :e")
            vals = values(c=count, a=body["actors"], u=updated, n=rev + 1,
                          s=notify_keys.notify_updated_sk(updated, group),
                          e=self._expires(updated))
        else:
            expression = "SET actor_count = :c, rev = :n, expires_at = :e REMOVE upd_sk, actors"
            vals = values(c=0, n=rev + 1, e=self._expires(updated or int(time.time() * 1000)))
        if current is None:
            condition = "attribute_not_exists(nk)"
        else:
            condition = "rev = :r"
            vals.update(values(r=rev))
        items.append({"Update": {"TableName": NOTIFICATIONS, "Key": gkey,
                                 "UpdateExpression": expression,
                                 "ConditionExpression": condition,
                                 "ExpressionAttributeValues": vals}})
        try:
            await self.db.transact(items)
        except TransactionCancelled:
            return False, None
        return len(pending) < SETTLE_BATCH, body

    async def newest_actors(self, recipient: str, group: str, limit: int = KEEP_ACTORS
                            ) -> list[tuple[str, int]]:
        """The group's newest actors with live sources: (actor, time), newest first."""
        items, _ = await self.db.query_page(
            NOTIFICATIONS, "user_id = :u AND begins_with(live_sk, :p)",
            values=values(u=recipient, p=f"{group}{keys.SORT_SEP}"), index=NOTIFY_LIVE,
            limit=limit, forward=False, consistent=True,
        )
        found = []
        for item in items:
            at, _, actor = item["live_sk"][len(group) + 1:].partition(keys.SORT_SEP)
            found.append((actor, int(at)))
        return found

    async def group(self, recipient: str, group: str) -> dict[str, Any] | None:
        item = await self.db.get(NOTIFICATIONS,
                                 {"user_id": recipient, "nk": notify_keys.notify_group_sk(group)},
                                 consistent=True)
        return group_body(item) if item else None

    # --- reading ------------------------------------------------------------------------

    async def page(self, recipient: str, *, floor: int, before: str | None, limit: int
                   ) -> list[dict[str, Any]]:
        """Live groups updated at ``floor`` or later, newest first, strictly before the
        updated sort key ``before``."""
        high = before if before is not None else "9" * 13 + "~"
        items, _ = await self.db.query_page(
            NOTIFICATIONS, "user_id = :u AND upd_sk BETWEEN :lo AND :hi",
            values=values(u=recipient, lo=f"{floor:013d}", hi=high), index=NOTIFY_BY_UPDATED,
            limit=limit + 1, forward=False,
        )
        return [group_body(i) for i in items if i["upd_sk"] != before][:limit]

    async def count_since(self, recipient: str, since: int) -> int:
        """How many live groups were updated at ``since`` or later (exact; COUNT pages)."""
        request: dict[str, Any] = {
            "TableName": self.db.table(NOTIFICATIONS), "IndexName": NOTIFY_BY_UPDATED,
            "KeyConditionExpression": "user_id = :u AND upd_sk >= :lo",
            "ExpressionAttributeValues": values(u=recipient, lo=f"{since:013d}"),
            "Select": "COUNT",
        }
        total = 0
        while True:
            response = await self.db.call("Query", request)
            total += int(response.get("Count", 0))
            last = response.get("LastEvaluatedKey")
            if not last:
                return total
            request["ExclusiveStartKey"] = last

    async def seen(self, recipient: str) -> int:
        item = await self.db.get(NOTIFICATIONS,
                                 {"user_id": recipient, "nk": notify_keys.NOTIFY_SEEN},
                                 consistent=True, attributes=["up_to"])
        return int(item["up_to"]) if item else 0

    async def mark_seen(self, recipient: str, up_to: int) -> int:
        """Raise the recipient's seen mark to ``up_to`` (never lower it); returns the mark."""
        try:
            await self.db.update(
                NOTIFICATIONS, {"user_id": recipient, "nk": notify_keys.NOTIFY_SEEN},
                "SET up_to = :t",
                condition="attribute_not_exists(up_to) OR up_to < :t", values=values(t=up_to),
            )
        except ConditionFailed:
            return await self.seen(recipient)
        return up_to

    # --- removal ------------------------------------------------------------------------

    async def delete_rows(self, rows: list[tuple[str, str]]) -> int:
        """Delete (recipient, sort key) rows outright (erasure)."""
        if not rows:
            return 0
        return await self.db.batch_write(
            NOTIFICATIONS, deletes=[{"user_id": r, "nk": nk} for r, nk in rows])

    async def all_rows(self, recipient: str) -> AsyncIterator[list[str]]:
        """Every sort key of a recipient's partition, page by page."""
        start: Item | None = None
        while True:
            items, start = await self.db.query_page(
                NOTIFICATIONS, "user_id = :u", values=values(u=recipient), limit=500,
                start=start, attributes=["nk"], consistent=True,
            )
            if items:
                yield [i["nk"] for i in items]
            if start is None:
                return

