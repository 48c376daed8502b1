"""Reactions (like, rekoo, comment) of users on koos."""

from __future__ import annotations

import asyncio
from typing import Any

from config.tables import REACTIONS, REACTIONS_BY_TIME, REACTIONS_BY_USER
from feed import keys
from feed.events import Reaction as ReactionEvent
from feed.models import Reaction
from feed.store import _toggle
from feed.store._codec import Item, values
from feed.store._dynamo import Dynamo

__all__ = ["Reactions"]

_INDEX_ATTRS = ("react_sk", "user_key")


class Reactions:
    def __init__(self, db: Dynamo) -> None:
        self.db = db

    @staticmethod
    def key(koo_id: str, user_id: str, kind: str) -> dict[str, str]:
        return {"koo_id": koo_id, "rk": keys.reaction_sk(user_id, kind)}

    def switch_item(self, event: ReactionEvent, author_id: str) -> dict[str, Any]:
        """Transaction item switching the reaction row on or off, as the event says."""
        at = event.occurred_at
        key = self.key(event.koo_id, event.user_id, event.kind)
        if not event.ADDED:
            return _toggle.switch_off(REACTIONS, key, at, _INDEX_ATTRS)
        return _toggle.switch_on(
            REACTIONS, key, at,
            {
                "user_id": event.user_id, "kind": event.kind, "author_id": author_id,
                "created_at": at, "user_key": event.user_id,
                "react_sk": keys.sort_key(at, f"{event.user_id}-{event.kind}"),
            },
        )

    async def settle(self, event: ReactionEvent) -> bool:
        """As Relations.settle: False means "apply the event again"."""
        key = self.key(event.koo_id, event.user_id, event.kind)
        return await _toggle.settle_row(self.db, REACTIONS, key, event.occurred_at, event.ADDED)

    async def for_koo(
        self, koo_id: str, *, limit: int, start: Item | None = None
    ) -> tuple[list[Reaction], Item | None]:
        """A koo's active reactions, newest first, one page."""
        items, last = await self.db.query_page(
            REACTIONS, "koo_id = :k", values=values(k=koo_id), index=REACTIONS_BY_TIME,
            limit=limit, forward=False, start=start,
        )
        return [
            Reaction(koo_id, i["user_id"], i["kind"], int(i["created_at"])) for i in items
        ], last

    async def recent_by_user(self, user_id: str, *, limit: int = 200) -> list[Item]:
        """A user's most recent active reactions (koo_id, kind, author_id, created_at)."""
        items, _ = await self.db.query_page(
            REACTIONS, "user_key = :u", values=values(u=user_id), index=REACTIONS_BY_USER,
            limit=limit, forward=False,
        )
        return items

    # --- erasure ------------------------------------------------------------------------

    async def rows_for_koo(self, koo_id: str) -> list[Item]:
        """Every reaction row under a koo, active or not."""
        return [item async for item in self.db.query(
            REACTIONS, "koo_id = :k", values=values(k=koo_id), page_size=1000,
            attributes=["koo_id", "rk", "user_id", "active"], consistent=True,
        )]

    def erase_item(self, koo_id: str, user_id: str, kind: str, *, active: bool | None
                   ) -> dict[str, Any]:
        """Transaction item deleting one reaction row; with ``active`` set, only while it
        is in that state (the koo's counter moves with it)."""
        body: dict[str, Any] = {"TableName": REACTIONS, "Key": self.key(koo_id, user_id, kind)}
        if active is not None:
            body["ConditionExpression"] = "active = :on" if active else (
                "attribute_not_exists(active) OR active = :on")
            body["ExpressionAttributeValues"] = values(on=active)
        return {"Delete": body}

    async def remove_rows(self, rows: list[tuple[str, str]]) -> int:
        """Delete reaction rows by (koo_id, rk)."""
        return await self.db.batch_write(
            REACTIONS, deletes=[{"koo_id": k, "rk": rk} for k, rk in rows])

    async def scan_by(self, user_id: str, *, segments: int = 4
                      ) -> list[tuple[str, str, bool]]:
        """Every reaction row of ``user_id`` (inactive ones are on no index): (koo_id,
        kind, active), from a parallel Scan of the whole table."""
        async def segment(n: int) -> list[tuple[str, str, bool]]:
            found = []
            async for page, _ in self.db.scan_pages(REACTIONS, segment=n, segments=segments,
                                                    limit=1000,
                                                    attributes=["koo_id", "rk", "active"]):
                for item in page:
                    user, kind = keys.split_reaction_sk(item["rk"])
                    if user == user_id:
                        found.append((item["koo_id"], kind, bool(item.get("active"))))
            return found

        parts = await asyncio.gather(*(segment(n) for n in range(segments)))
        return [row for part in parts for row in part]

    async def all_by_user(self, user_id: str) -> list[Item]:
        """Every active reaction of a user, newest first (every page of the index)."""
        return [item async for item in self.db.query(
            REACTIONS, "user_key = :u", values=values(u=user_id), index=REACTIONS_BY_USER,
            page_size=1000, forward=False,
        )]
