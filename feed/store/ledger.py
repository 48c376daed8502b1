"""The event ledger (idempotency) and the dead-letter table."""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Mapping
from typing import Any

import orjson

from config.tables import DEAD_LETTERS, LEDGER
from feed.errors import ConditionFailed, Unapplicable
from feed.events import Event, event_digest
from feed.store._codec import values
from feed.store._dynamo import Dynamo

__all__ = ["EVENT_ID_REUSED", "PERSONAL_FIELDS", "USER_DELETED", "DeadLetters", "Ledger",
           "ids_only", "without_personal"]

log = logging.getLogger(__name__)

EVENT_ID_REUSED = "event_id_reused"  # the dead-letter reason of a reused event_id
USER_DELETED = "user_deleted"  # the dead-letter reason of an event naming an erased user

# What a dead letter never keeps itself (its event is held in the user's home region).
PERSONAL_FIELDS = frozenset({"handle", "text", "hashtags", "region"})
HELD_PREFIX = "held#"  # the key of a dead letter's whole event, in its home region's table
HERE = "-"  # held_in of an event kept in the service's own dead-letter table

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
    """Events (and jobs) that can never succeed, with the reason, for an operator to inspect.

    A dead letter keeps no personal data: the fields in :data:`PERSONAL_FIELDS` (a
    handle, a koo's text, a region) are cut from it, and the whole event is kept, for a
    replay, in the dead-letter table of the home region of the user it is about
    (``held_in``: that region, or ``HERE`` for the service's own table). :meth:`get`
    puts it back together; :meth:`all` lists what the letters themselves hold.
    """

    def __init__(self, db: Dynamo, regions: Mapping[str, Dynamo] | None = None) -> None:
        self.db = db
        self.regions: Mapping[str, Dynamo] = regions or {}

    def _home(self, region: str) -> Dynamo:
        return self.regions.get(region, self.db) if region != HERE else self.db

    async def add(self, dl_id: str, payload: Any, reason: str, *, attempts: int = 1,
                  home: str | None = None) -> None:
        """Record a payload that can never apply, its personal fields held in ``home``
        (the region of the user it is about; None: the service's own table). A payload
        too big for one DynamoDB item (400 KB) is kept as the start of its JSON text."""
        held_in: str | None = None
        whole = ""  # the held event's JSON text
        if reason == USER_DELETED:
            payload = ids_only(payload)  # never applies: the ids, type and reason suffice
        elif without_personal(payload) != payload:
            held_in = home if home is not None and home in self.regions else HERE
            whole = orjson.dumps(payload, default=repr).decode()
            await self._home(held_in).put(DEAD_LETTERS, {
                "dl_id": HELD_PREFIX + dl_id, "held": True,
                "payload": whole[:MAX_PAYLOAD_CHARS]})
            payload = without_personal(payload)
        encoded = orjson.dumps(payload, default=repr).decode()
        item: dict[str, Any] = {
            "dl_id": dl_id,
            "payload": encoded,
            "reason": reason[:2000],
            "attempts": attempts,
            "failed_at": int(time.time() * 1000),
        }
        if held_in is not None:
            item["held_in"] = held_in
        if len(encoded) > MAX_PAYLOAD_CHARS:
            item["payload"] = orjson.dumps(encoded[:MAX_PAYLOAD_CHARS]).decode()
        if max(len(encoded), len(whole)) > MAX_PAYLOAD_CHARS:  # the letter or the held event
            item["payload_truncated"] = True
            item["payload_chars"] = max(len(encoded), len(whole))
        await self.db.put(DEAD_LETTERS, item)

    async def get(self, dl_id: str) -> dict[str, Any] | None:
        """One dead letter, with its whole event read back from its home region."""
        item = await self.db.get(DEAD_LETTERS, {"dl_id": dl_id}, consistent=True)
        if item is None or item.get("held"):
            return None
        item["payload"] = orjson.loads(item["payload"])
        if "held_in" in item:
            held = await self._home(str(item["held_in"])).get(
                DEAD_LETTERS, {"dl_id": HELD_PREFIX + dl_id}, consistent=True)
            if held is not None:
                with contextlib.suppress(orjson.JSONDecodeError):
                    item["payload"] = orjson.loads(held["payload"])
        return item

    async def all(self, limit: int = 1000) -> list[dict[str, Any]]:
        """Up to ``limit`` dead letters as they are kept (no personal fields), in no
        particular order (a Scan)."""
        found: list[dict[str, Any]] = []
        async for page, _ in self.db.scan_pages(DEAD_LETTERS, limit=min(limit, 500)):
            for item in page:
                if item.get("held"):
                    continue
                item["payload"] = orjson.loads(item["payload"])
                found.append(item)
            if len(found) >= limit:
                break
        return found[:limit]

    async def remove(self, dl_id: str, failed_at: int) -> bool:
        """Delete a dead letter (and its held event) unless it was written again since it
        was read (its ``failed_at`` changed); False then, or if it is gone."""
        old = await self.db.get(DEAD_LETTERS, {"dl_id": dl_id}, consistent=True,
                                attributes=["held_in"])
        try:
            await self.db.delete(DEAD_LETTERS, {"dl_id": dl_id}, condition="failed_at = :t",
                                 values=values(t=failed_at))
        except ConditionFailed:
            return False
        if old and "held_in" in old:
            await self._home(str(old["held_in"])).delete(
                DEAD_LETTERS, {"dl_id": HELD_PREFIX + dl_id})
        return True

    async def scrub(self, user_id: str) -> int:
        """Reduce every dead letter that names ``user_id`` to ids, type and reason, and
        delete the events held for them in every region (Scans); returns how many
        letters were rewritten."""
        scrubbed = 0
        for db in (self.db, *self.regions.values()):
            async for page, _ in db.scan_pages(DEAD_LETTERS, limit=500):
                for item in page:
                    text = str(item.get("payload", ""))
                    if user_id not in text and user_id not in str(item.get("reason", "")):
                        continue
                    if item.get("held"):
                        await db.delete(DEAD_LETTERS, {"dl_id": item["dl_id"]})
                        continue
                    try:
                        payload = orjson.loads(text)
                    except orjson.JSONDecodeError:
                        payload = None
                    item["payload"] = orjson.dumps(ids_only(payload)).decode()
                    item["reason"] = str(item.get("reason", "")).replace(user_id, "(erased)")
                    for extra in ("payload_truncated", "payload_chars", "held_in"):
                        item.pop(extra, None)
                    await db.put(DEAD_LETTERS, item)
                    scrubbed += 1
        return scrubbed


def without_personal(value: Any) -> Any:
    """A payload without the fields that say something about a person beyond ids."""
    if isinstance(value, dict):
        return {k: without_personal(v) for k, v in value.items() if k not in PERSONAL_FIELDS}
    if isinstance(value, list):
        return [without_personal(v) for v in value]
    return value


def ids_only(value: Any) -> Any:
    """A payload cut down to its ids and type (what an erased user's dead letters keep)."""
    if isinstance(value, dict):
        return {k: ids_only(v) for k, v in value.items()
                if k == "type" or k.endswith(("_id", "_ids"))}
    if isinstance(value, list | tuple):
        return [ids_only(v) for v in value]
    return value if isinstance(value, str | int) else None
