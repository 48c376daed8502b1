"""Timelines: the stored, unranked koo ids delivered to each reader."""

from __future__ import annotations

import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from config.tables import TIMELINES
from feed import keys
from feed.store._codec import values
from feed.store._dynamo import Dynamo

__all__ = ["Entry", "Timelines"]


@dataclass(frozen=True, slots=True)
class Entry:
    """One timeline row: a koo delivered to a reader."""

    koo_id: str
    author_id: str
    created_at: int

    @property
    def sort_key(self) -> str:
        return keys.sort_key(self.created_at, self.koo_id)


class Timelines:
    def __init__(self, db: Dynamo) -> None:
        self.db = db

    async def add(self, readers: Iterable[str], entry: Entry) -> int:
        """Deliver one koo to many readers; replays overwrite the same rows."""
        expires = int(time.time()) + self.db.settings.timeline_ttl_days * 86_400
        sk = entry.sort_key
        rows = [
            {"reader_id": r, "sk": sk, "koo_id": entry.koo_id, "author_id": entry.author_id,
             "expires_at": expires}
            for r in readers
        ]
        return await self.db.batch_write(TIMELINES, puts=rows)

    async def add_entries(self, reader: str, entries: Iterable[Entry]) -> int:
        """Deliver many koos to one reader."""
        expires = int(time.time()) + self.db.settings.timeline_ttl_days * 86_400
        rows = [
            {"reader_id": reader, "sk": e.sort_key, "koo_id": e.koo_id,
             "author_id": e.author_id, "expires_at": expires}
            for e in entries
        ]
        return await self.db.batch_write(TIMELINES, puts=rows)

    async def remove(self, readers: Iterable[str], entry: Entry) -> int:
        """Take one koo out of many readers' timelines."""
        sk = entry.sort_key
        return await self.db.batch_write(
            TIMELINES, deletes=[{"reader_id": r, "sk": sk} for r in readers]
        )

    async def remove_keys(self, reader: str, sort_keys: Sequence[str]) -> int:
        return await self.db.batch_write(
            TIMELINES, deletes=[{"reader_id": reader, "sk": sk} for sk in sort_keys]
        )

    async def page(
        self, reader: str, *, limit: int, before: str | None = None
    ) -> tuple[list[Entry], bool]:
        """Up to ``limit`` unexpired entries, newest first, older than sort key ``before``.

        Returns the entries and whether more may follow.
        """
        now = int(time.time())
        condition = "reader_id = :r"
        vals: dict[str, object] = {"r": reader, "now": now}
        if before:
            condition += " AND sk < :b"
            vals["b"] = before
        entries: list[Entry] = []
        start = None
        while len(entries) < limit:
            items, start = await self.db.query_page(
                TIMELINES, condition, values=values(**vals), limit=limit - len(entries),
                forward=False, start=start, filter="expires_at > :now",
                attributes=["sk", "author_id"],
            )
            for item in items:
                created, koo_id = keys.parse_sort_key(item["sk"])
                entries.append(Entry(koo_id, item.get("author_id", ""), created))
            if start is None:
                return entries, False
        return entries, True

    async def scan_reader(self, reader: str, *, max_items: int) -> list[Entry]:
        """All (up to ``max_items``) entries of a reader, newest first, expired included."""
        found: list[Entry] = []
        async for item in self.db.query(
            TIMELINES, "reader_id = :r", values=values(r=reader), forward=False,
            page_size=1000, max_items=max_items, attributes=["sk", "author_id"],
        ):
            created, koo_id = keys.parse_sort_key(item["sk"])
            found.append(Entry(koo_id, item.get("author_id", ""), created))
        return found

    async def older_than_rank(self, reader: str, keep: int) -> list[str]:
        """Sort keys of a reader's rows beyond the newest ``keep`` (for the per-reader cap)."""
        extra: list[str] = []
        seen = 0
        async for item in self.db.query(
            TIMELINES, "reader_id = :r", values=values(r=reader), forward=False,
            page_size=1000, attributes=["sk"],
        ):
            seen += 1
            if seen > keep:
                extra.append(item["sk"])
        return extra

    async def erase_reader(self, reader: str) -> int:
        """Delete every row of a reader's timeline; returns how many."""
        sort_keys = [item["sk"] async for item in self.db.query(
            TIMELINES, "reader_id = :r", values=values(r=reader), page_size=1000,
            attributes=["sk"],
        )]
        await self.remove_keys(reader, sort_keys)
        return len(sort_keys)
