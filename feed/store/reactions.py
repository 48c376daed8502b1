"""Reactions (like, rekoo, comment) of users on koos."""

from __future__ import annotations

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
