"""What an operator does with dead letters: list, show, replay and purge them.

A dead letter is an event (or a job's payload) that could never apply, with
the reason. Replaying one puts the event back on the queue after its cause is
fixed (say, a reaction whose koo arrived later): its ledger entry, which
recorded the dead letter, is removed first so the event applies; the dead
letter goes once the event is back on the queue, and comes back if it fails
again. Replays are idempotent like every event: a replay of an event that has
applied meanwhile changes nothing.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

from feed import keys
from feed.errors import ValidationFailed
from feed.events import event_digest, typed, validate_event
from feed.jobs import APPLY_EVENT, JobQueue
from feed.store import Stores
from feed.store.ledger import EVENT_ID_REUSED

__all__ = ["DeadLetter", "DeadLetterDesk"]

REPLAYED = "replayed"


@dataclass(frozen=True, slots=True)
class DeadLetter:
    """One dead letter as an operator sees it."""

    dl_id: str
    event_id: str | None
    type: str | None
    reason: str
    failed_at: int  # ms since the epoch
    attempts: int
    payload: Any

    @classmethod
    def from_item(cls, item: dict[str, Any]) -> DeadLetter:
        payload = item.get("payload")
        fields = payload if isinstance(payload, dict) else {}
        event_id, kind = fields.get("event_id"), fields.get("type")
        return cls(
            dl_id=item["dl_id"], event_id=event_id if isinstance(event_id, str) else None,
            type=kind if isinstance(kind, str) else None, reason=str(item.get("reason", "")),
            failed_at=int(item.get("failed_at", 0)), attempts=int(item.get("attempts", 1)),
            payload=payload,
        )

    def summary(self) -> dict[str, Any]:
        return {"id": self.dl_id, "event_id": self.event_id, "type": self.type,
                "reason": self.reason, "failed_at": self.failed_at, "attempts": self.attempts}


class DeadLetterDesk:
    def __init__(self, stores: Stores, jobs: JobQueue) -> None:
        self.stores = stores
        self.jobs = jobs

    async def list(self, *, limit: int = 1000) -> list[DeadLetter]:
        """Dead letters, newest first."""
        found = [DeadLetter.from_item(i) for i in await self.stores.dead_letters.all(limit)]
        return sorted(found, key=lambda d: (d.failed_at, d.dl_id), reverse=True)

    async def show(self, dl_id: str) -> DeadLetter | None:
        item = await self.stores.dead_letters.get(dl_id)
        return None if item is None else DeadLetter.from_item(item)

    async def replay(self, dl_id: str) -> str:
        """Put one dead letter's event back on the queue; returns what happened:
        "replayed", or why it cannot be ("not found", "not an event: ...", ...)."""
        letter = await self.show(dl_id)
        if letter is None:
            return "not found"
        if letter.reason == EVENT_ID_REUSED:
            return "cannot replay: its event_id belongs to another event"
        try:
            # Checked against the clock as on arrival, so an old event is still taken.
            raw = validate_event(letter.payload, now_ms=max(
                int(time.time() * 1000), _occurred_at(letter.payload)))
        except ValidationFailed as exc:
            return f"cannot replay: not a valid event ({exc})"
        event = typed(raw)
        if not await self.stores.ledger.forget_dead_lettered(event):
            return "cannot replay: its event_id belongs to another event"
        job_id = keys.replay_job(event.event_id, event_digest(raw), letter.failed_at)
        await self.jobs.enqueue(APPLY_EVENT, raw, job_id=job_id)
        await self.stores.dead_letters.remove(dl_id, letter.failed_at)
        return REPLAYED

    async def replay_all(self, *, limit: int = 1000) -> dict[str, str]:
        return {d.dl_id: await self.replay(d.dl_id) for d in await self.list(limit=limit)}

    async def purge(self, *, older_than_days: float, now_ms: int | None = None) -> int:
        """Delete dead letters older than that; returns how many."""
        now_ms = int(time.time() * 1000) if now_ms is None else now_ms
        cutoff = now_ms - int(older_than_days * 86_400_000)
        removed = 0
        for letter in await self.list(limit=1_000_000):
            if letter.failed_at < cutoff and await self.stores.dead_letters.remove(
                    letter.dl_id, letter.failed_at):
                removed += 1
        return removed


def _occurred_at(payload: Any) -> int:
    value = payload.get("occurred_at") if isinstance(payload, dict) else None
    return value if isinstance(value, int) and not isinstance(value, bool) else 0
