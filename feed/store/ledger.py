"""The event ledger (idempotency) and the dead-letter table."""

from __future__ import annotations

import time
from typing import Any

import orjson

from config.tables import DEAD_LETTERS, LEDGER
from feed.errors import ConditionFailed
from feed.store._dynamo import Dynamo

__all__ = ["DeadLetters", "Ledger"]

# Well under DynamoDB's 400 KB item limit even in 4-byte characters.
MAX_PAYLOAD_CHARS = 32 * 1024


class Ledger:
    """Which events have been applied, kept ``ledger_ttl_days`` (replays older than that
    still change nothing: every write is also idempotent by key and version)."""

    def __init__(self, db: Dynamo) -> None:
        self.db = db

    def _item(self, event: dict[str, Any], outcome: str) -> dict[str, Any]:
        now = int(time.time())
        return {
            "event_id": event["event_id"],
            "type": event["type"],
            "outcome": outcome,
            "applied_at": now,
            "expires_at": now + self.db.settings.ledger_ttl_days * 86_400,
        }

    def record_item(self, event: dict[str, Any], outcome: str = "applied") -> dict[str, Any]:
        """Transaction item recording the event; cancels if it was recorded already."""
        return {"Put": {"TableName": LEDGER, "Item": self._item(event, outcome),
                        "ConditionExpression": "attribute_not_exists(event_id)"}}

    async def seen(self, event_id: str) -> bool:
        """True if the event has been applied."""
        item = await self.db.get(LEDGER, {"event_id": event_id}, consistent=True,
                                 attributes=["event_id"])
        return item is not None

    async def record(self, event: dict[str, Any], outcome: str = "applied") -> bool:
        """Record the event outside a transaction; False if it was already recorded."""
        try:
            await self.db.put(LEDGER, self._item(event, outcome),
                              condition="attribute_not_exists(event_id)")
        except ConditionFailed:
            return False
        return True


class DeadLetters:
    """Events (and jobs) that can never succeed, with the reason, for an operator to inspect."""

    def __init__(self, db: Dynamo) -> None:
        self.db = db

    async def add(self, dl_id: str, payload: Any, reason: str, *, attempts: int = 1) -> None:
        """Record a payload that can never apply. A payload too big for one DynamoDB item
        (400 KB) is kept as the start of its JSON text, with its full size."""
        encoded = orjson.dumps(payload, default=repr).decode()
        item: dict[str, Any] = {
            "dl_id": dl_id,
            "payload": encoded,
            "reason": reason[:2000],
            "attempts": attempts,
            "failed_at": int(time.time() * 1000),
        }
        if len(encoded) > MAX_PAYLOAD_CHARS:
            item["payload"] = orjson.dumps(encoded[:MAX_PAYLOAD_CHARS]).decode()
            item["payload_truncated"] = True
            item["payload_chars"] = len(encoded)
        await self.db.put(DEAD_LETTERS, item)

    async def get(self, dl_id: str) -> dict[str, Any] | None:
        item = await self.db.get(DEAD_LETTERS, {"dl_id": dl_id}, consistent=True)
        if item is not None:
            item["payload"] = orjson.loads(item["payload"])
        return item

    async def all(self, limit: int = 1000) -> list[dict[str, Any]]:
        found: list[dict[str, Any]] = []
        async for page, _ in self.db.scan_pages(DEAD_LETTERS, limit=min(limit, 500)):
            for item in page:
                item["payload"] = orjson.loads(item["payload"])
                found.append(item)
            if len(found) >= limit:
                break
        return found[:limit]
