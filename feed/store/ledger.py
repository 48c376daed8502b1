"""The event ledger (idempotency) and the dead-letter table."""

from __future__ import annotations

import contextlib
import logging
import time
from typing import Any

import orjson

from config.tables import DEAD_LETTERS, LEDGER
from feed.errors import ConditionFailed, Unapplicable
from feed.events import Event, event_digest
from feed.store._codec import values
from feed.store._dynamo import Dynamo

__all__ = ["EVENT_ID_REUSED", "USER_DELETED", "DeadLetters", "Ledger", "ids_only"]

log = logging.getLogger(__name__)

EVENT_ID_REUSED = "event_id_reused"  # the dead-letter reason of a reused event_id
USER_DELETED = "user_deleted"  # the dead-letter reason of an event naming an erased user

# Well under DynamoDB's 400 KB item limit even in 4-byte characters.
MAX_PAYLOAD_CHARS = 32 * 1024


class Ledger:
    """Which events have been applied, kept ``ledger_ttl_days`` (replays older than that
    still change nothing: every write is also idempotent by key and version).

    Each entry holds the event's digest (:func:`feed.events.event_digest`), so a later
    event under the same ``event_id`` can be told apart: the same content is a replay,
    different content a reused id."""

    def __init__(self, db: Dynamo) -> None:
        self.db = db

    def _item(self, event: Event, outcome: str) -> dict[str, Any]:
        now = int(time.time())
        return {
            "event_id": event.event_id,
            "type": event.TYPE,
            "digest": event_digest(event.wire()),
            "outcome": outcome,
            "applied_at": now,
            "expires_at": now + self.db.settings.ledger_ttl_days * 86_400,
        }

    def record_item(self, event: Event, outcome: str = "applied") -> dict[str, Any]:
        """Transaction item recording the event; cancels if it was recorded already."""
        return {"Put": {"TableName": LEDGER, "Item": self._item(event, outcome),
                        "ConditionExpression": "attribute_not_exists(event_id)"}}

    async def record(self, event: Event, outcome: str = "applied") -> bool:
        """Record the event outside a transaction; False if it was already recorded."""
        try:
            await self.db.put(LEDGER, self._item(event, outcome),
                              condition="attribute_not_exists(event_id)")
        except ConditionFailed:
            return False
        return True

    async def refuse_reused_id(self, event: Event) -> None:
        """Raise Unapplicable (``event_id_reused``) if the entry under this event's id
        records a different event (one GetItem). An entry without a digest (written
        before digests were kept), or none at all, cannot tell: no error."""
        item = await self.db.get(LEDGER, {"event_id": event.event_id}, consistent=True,
                                 attributes=["digest"])
        recorded = (item or {}).get("digest")
        if isinstance(recorded, str) and recorded != event_digest(event.wire()):
            log.warning("event_id reused by a different event",
                        extra={"event_id": event.event_id, "type": event.TYPE})
            raise Unapplicable(EVENT_ID_REUSED)

    async def claim(self, event: Event) -> bool:
        """Record an event before writes that cannot join its ledger transaction: True if
        it is new, False for a replay (whose idempotent writes then run again: a crash may
        have come between the claim and the writes); a reused id raises Unapplicable."""
        if await self.record(event, "applied"):
            return True
        await self.refuse_reused_id(event)
        return False

    async def set_outcome(self, event: Event, outcome: str) -> None:
        """Correct the outcome of an entry recorded before its writes ran; only the entry
        of this very event (same digest) is changed."""
        # A failed condition means another event's entry (a reused id) or none (expired):
        # nothing of ours to correct.
        with contextlib.suppress(ConditionFailed):
            await self.db.update(
                LEDGER, {"event_id": event.event_id}, "SET #o = :o", condition="#d = :d",
                names={"#o": "outcome", "#d": "digest"},
                values=values(o=outcome, d=event_digest(event.wire())),
            )


    async def forget_dead_lettered(self, event: Event) -> bool:
        """Remove this event's entry if it records a dead letter of this very event, so a
        replay applies it; False if the entry is another's, or not a dead letter."""
        try:
            await self.db.delete(
                LEDGER, {"event_id": event.event_id},
                condition="attribute_not_exists(event_id) OR (#o = :o AND #d = :d)",
                names={"#o": "outcome", "#d": "digest"},
                values=values(o="dead-lettered", d=event_digest(event.wire())),
            )
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
        if reason == USER_DELETED:
            payload = ids_only(payload)  # never applies: the ids, type and reason suffice
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
        """Up to ``limit`` dead letters, in no particular order (a Scan)."""
        found: list[dict[str, Any]] = []
        async for page, _ in self.db.scan_pages(DEAD_LETTERS, limit=min(limit, 500)):
            for item in page:
                item["payload"] = orjson.loads(item["payload"])
                found.append(item)
            if len(found) >= limit:
                break
        return found[:limit]

    async def remove(self, dl_id: str, failed_at: int) -> bool:
        """Delete a dead letter unless it was written again since it was read (its
        ``failed_at`` changed); False then, or if it is gone."""
        try:
            await self.db.delete(DEAD_LETTERS, {"dl_id": dl_id}, condition="failed_at = :t",
                                 values=values(t=failed_at))
        except ConditionFailed:
            return False
        return True

    async def scrub(self, user_id: str) -> int:
        """Reduce every dead letter that names ``user_id`` to ids, type and reason (a Scan
        of the table); returns how many were rewritten."""
        scrubbed = 0
        async for page, _ in self.db.scan_pages(DEAD_LETTERS, limit=500):
            for item in page:
                text = str(item.get("payload", ""))
                if user_id not in text and user_id not in str(item.get("reason", "")):
                    continue
                try:
                    payload = orjson.loads(text)
                except orjson.JSONDecodeError:
                    payload = None
                item["payload"] = orjson.dumps(ids_only(payload)).decode()
                item["reason"] = str(item.get("reason", "")).replace(user_id, "(erased)")
                item.pop("payload_truncated", None)
                item.pop("payload_chars", None)
                await self.db.put(DEAD_LETTERS, item)
                scrubbed += 1
        return scrubbed


def ids_only(value: Any) -> Any:
    """A payload cut down to its ids and type (what an erased user's dead letters keep)."""
    if isinstance(value, dict):
        return {k: ids_only(v) for k, v in value.items()
                if k == "type" or k.endswith(("_id", "_ids"))}
    if isinstance(value, list | tuple):
        return [ids_only(v) for v in value]
    return value if isinstance(value, str | int) else None
