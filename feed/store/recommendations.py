"""Precomputed recommendations per reader (who to follow, koos), with a TTL."""

from __future__ import annotations

import time
from typing import Any

from config.tables import RECOMMENDATIONS
from feed import keys
from feed.store._codec import values
from feed.store._dynamo import Dynamo

__all__ = ["Recommendations"]


class Recommendations:
    def __init__(self, db: Dynamo) -> None:
        self.db = db

    async def save(
        self, user_id: str, kind: str, items: list[dict[str, Any]], *, ttl_seconds: int
    ) -> None:
        """Replace a reader's stored list of one kind (items: target, score, reason)."""
        now = int(time.time())
        old = await self.load(user_id, kind, include_expired=True)
        rows = [
            {"user_id": user_id, "rk": keys.recommendation_sk(kind, rank),
             "target": it["target"], "score": float(it["score"]), "reason": it["reason"],
             "computed_at": now, "expires_at": now + ttl_seconds}
            for rank, it in enumerate(items)
        ]
        stale = [
            {"user_id": user_id, "rk": keys.recommendation_sk(kind, rank)}
            for rank in range(len(items), len(old))
        ]
        await self.db.batch_write(RECOMMENDATIONS, puts=rows, deletes=stale)

    async def load(
        self, user_id: str, kind: str, *, include_expired: bool = False
    ) -> list[dict[str, Any]]:
        """A reader's stored list of one kind, best first ([] if none or expired)."""
        now = int(time.time())
        found: list[dict[str, Any]] = []
        async for item in self.db.query(
            RECOMMENDATIONS, "user_id = :u AND begins_with(rk, :k)",
            values=values(u=user_id, k=f"{kind}{keys.SORT_SEP}"), page_size=200,
        ):
            if not include_expired and int(item.get("expires_at", 0)) <= now:
                return []
            found.append({"target": item["target"], "score": float(item["score"]),
                          "reason": item["reason"]})
        return found

    async def erase(self, user_id: str) -> int:
        """Delete every stored list of a reader; returns the rows removed."""
        rows = [{"user_id": user_id, "rk": item["rk"]} async for item in self.db.query(
            RECOMMENDATIONS, "user_id = :u", values=values(u=user_id), page_size=500,
            attributes=["rk"],
        )]
        await self.db.batch_write(RECOMMENDATIONS, deletes=rows)
        return len(rows)

    async def readers_recommended(self, targets: set[str]) -> set[str]:
        """Readers whose stored lists name any of ``targets`` (users or koos), from a Scan
        of the whole table."""
        readers: set[str] = set()
        async for page, _ in self.db.scan_pages(RECOMMENDATIONS, limit=1000,
                                                attributes=["user_id", "target"]):
            readers.update(i["user_id"] for i in page if i.get("target") in targets)
        return readers
