"""Relations between users: follow, block and mute, with an inverse index of active ones."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

from config.tables import RELATIONS, RELATIONS_INVERSE
from feed import keys
from feed.store import _toggle
from feed.store._codec import Item, values
from feed.store._dynamo import Dynamo

__all__ = ["Relations"]

_INDEX_ATTRS = ("inv_pk", "inv_sk")


class Relations:
    def __init__(self, db: Dynamo) -> None:
        self.db = db

    @staticmethod
    def key(user_id: str, kind: str, other_id: str) -> dict[str, str]:
        return {"user_id": user_id, "rel": keys.relation_sk(kind, other_id)}

    def switch_on_item(self, user_id: str, kind: str, other_id: str, at: int) -> dict[str, Any]:
        return _toggle.switch_on(
            RELATIONS, self.key(user_id, kind, other_id), at,
            {"inv_pk": other_id, "inv_sk": keys.relation_inverse_sk(kind, user_id),
             "created_at": at},
        )

    def switch_off_item(self, user_id: str, kind: str, other_id: str, at: int) -> dict[str, Any]:
        return _toggle.switch_off(RELATIONS, self.key(user_id, kind, other_id), at, _INDEX_ATTRS)

    async def load_many(self, relations: list[tuple[str, str, str]], *, at: int) -> int:
        """Bulk load (seeding, migrations) active (user, kind, other) rows, in the same form
        the events produce. Counters are the caller's to set."""
        rows = [
            {**self.key(user, kind, other), "active": True, "ver": at, "created_at": at,
             "inv_pk": other, "inv_sk": keys.relation_inverse_sk(kind, user)}
            for user, kind, other in relations
        ]
        return await self.db.batch_write(RELATIONS, puts=rows)

    async def settle(self, user_id: str, kind: str, other_id: str, at: int, on: bool) -> bool:
        """Record the version of an event that changed nothing (see _toggle.settle).

        False if the row is older than the event and in the other state: an older event
        changed it meanwhile, and the caller must apply this one again.
        """
        key = self.key(user_id, kind, other_id)
        return await _toggle.settle_row(self.db, RELATIONS, key, at, on)

    async def is_active(self, user_id: str, kind: str, other_id: str) -> bool:
        item = await self.db.get(RELATIONS, self.key(user_id, kind, other_id), consistent=True,
                                 attributes=["active"])
        return bool(item and item.get("active"))

    async def active_among(self, relations: list[tuple[str, str, str]]) -> list[bool]:
        """For each (user, kind, other): whether that relation is active (one BatchGetItem)."""
        wanted = [self.key(u, k, o) for u, k, o in relations]
        items = await self.db.batch_get(RELATIONS, wanted, attributes=["user_id", "rel", "active"],
                                        consistent=True)
        active = {(i["user_id"], i["rel"]) for i in items if i.get("active")}
        return [(k["user_id"], k["rel"]) in active for k in wanted]

    async def versions(self, relations: list[tuple[str, str, str]]) -> list[int | None]:
        """For each (user, kind, other): the version (ms) of an active relation, else None."""
        wanted = [self.key(u, k, o) for u, k, o in relations]
        items = await self.db.batch_get(RELATIONS, wanted,
                                        attributes=["user_id", "rel", "active", "ver"],
                                        consistent=True)
        found = {(i["user_id"], i["rel"]): int(i.get("ver", 0)) for i in items if i.get("active")}
        return [found.get((k["user_id"], k["rel"])) for k in wanted]

    async def outgoing(self, user_id: str, *, followed_at: dict[str, int] | None = None
                       ) -> dict[str, set[str]]:
        """Every active relation from ``user_id``: {"follow": {...}, "block": ..., "mute": ...};
        ``followed_at``, if given, gets each follow's version (when it was made, ms)."""
        found: dict[str, set[str]] = {kind: set() for kind in keys.REL_KINDS}
        async for item in self.db.query(
            RELATIONS, "user_id = :u", values=values(u=user_id, on=True),
            filter="active = :on", page_size=1000, attributes=["rel", "ver"],
        ):
            kind, other = keys.split_relation_sk(item["rel"])
            found.setdefault(kind, set()).add(other)
            if followed_at is not None and kind == keys.REL_FOLLOW and "ver" in item:
                followed_at[other] = int(item["ver"])
        return found

    async def incoming(self, other_id: str, kind: str) -> set[str]:
        """Every user with an active ``kind`` relation to ``other_id`` (e.g. who blocks them)."""
        users: set[str] = set()
        async for ids in self.incoming_pages(other_id, kind):
            users.update(ids)
        return users

    async def incoming_page(
        self, other_id: str, kind: str, *, page_size: int = 1000, start: Item | None = None,
    ) -> tuple[list[str], Item | None]:
        """One page of users with an active ``kind`` relation to ``other_id``, and the key to
        continue from (None at the end)."""
        items, cursor = await self.db.query_page(
            RELATIONS, "inv_pk = :o AND begins_with(inv_sk, :k)",
            values=values(o=other_id, k=keys.relation_prefix(kind)),
            index=RELATIONS_INVERSE, limit=page_size, start=start,
        )
        return [keys.split_relation_sk(i["inv_sk"])[1] for i in items], cursor

    async def incoming_pages(
        self, other_id: str, kind: str, *, page_size: int = 1000, start: Item | None = None,
    ) -> AsyncIterator[list[str]]:
        """Users with an active ``kind`` relation to ``other_id`` (followers, for "follow"),
        page by page from the inverse index."""
        cursor = start
        while True:
            ids, cursor = await self.incoming_page(other_id, kind, page_size=page_size,
                                                   start=cursor)
            if ids:
                yield ids
            if cursor is None:
                return

    # --- erasure ------------------------------------------------------------------------

    async def rows_of(self, user_id: str) -> list[tuple[str, str, bool]]:
        """Every relation row from ``user_id``, active or not: (kind, other, active)."""
        return [
            (*keys.split_relation_sk(item["rel"]), bool(item.get("active")))
            async for item in self.db.query(
                RELATIONS, "user_id = :u", values=values(u=user_id), page_size=1000,
                attributes=["rel", "active"], consistent=True,
            )
        ]

    def erase_item(self, user_id: str, kind: str, other_id: str, *, active: bool | None
                   ) -> dict[str, Any]:
        """Transaction item deleting one relation row; with ``active`` set, only while the
        row is in that state (so the counters moved with it stay exact)."""
        body: dict[str, Any] = {"TableName": RELATIONS, "Key": self.key(user_id, kind, other_id)}
        if active is not None:
            body["ConditionExpression"] = "active = :on" if active else (
                "attribute_not_exists(active) OR active = :on")
            body["ExpressionAttributeValues"] = values(on=active)
        return {"Delete": body}

    async def scan_naming(self, user_id: str, *, segments: int = 4
                          ) -> list[tuple[str, str, str]]:
        """Every row toward ``user_id`` (inactive ones are on no index): (user, kind, other)
        from a parallel Scan of the whole table."""
        async def segment(n: int) -> list[tuple[str, str, str]]:
            found = []
            async for page, _ in self.db.scan_pages(RELATIONS, segment=n, segments=segments,
                                                    limit=1000, attributes=["user_id", "rel"]):
                for item in page:
                    kind, other = keys.split_relation_sk(item["rel"])
                    if other == user_id or item["user_id"] == user_id:
                        found.append((item["user_id"], kind, other))
            return found

        parts = await asyncio.gather(*(segment(n) for n in range(segments)))
        return [row for part in parts for row in part]
