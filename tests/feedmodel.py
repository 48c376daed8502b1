"""Helpers for the feed-semantics tests: read a whole feed page by page, run only
some queues, and a small in-memory model of what a feed promises (docs/api.md).

The model is deliberately simple: with ``FEED_BACKFILL_ON_FOLLOW`` at least as
large as any author's number of koos, a reader's feed (recommended koos left
out) is exactly their own live koos plus the live koos of everyone they follow,
minus authors they block or mute and authors who block them.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from feed.jobs import BACKFILL, REALTIME
from feed.ranking import Ranked
from feed.reader import Reader
from feed.services import Services
from workers.runner import run_workers

__all__ = [
    "FeedModel",
    "FeedRead",
    "backfill_depth",
    "check_read",
    "duplicates",
    "publish_realtime_only",
    "read_all",
]

RECOMMENDED = "recommended"


@dataclass(frozen=True)
class FeedRead:
    """Every page of one reader's feed, as served."""

    pages: list[list[Ranked]]

    @property
    def items(self) -> list[Ranked]:
        return [item for page in self.pages for item in page]

    def ids(self, *, recommended: bool = False) -> list[str]:
        """Koo ids in the order served; recommended koos only if asked for."""
        return [i.koo.koo_id for i in self.items if recommended or i.reason != RECOMMENDED]

    def recommended(self) -> list[Ranked]:
        return [i for i in self.items if i.reason == RECOMMENDED]

    def reasons(self) -> dict[str, str]:
        return {i.koo.koo_id: i.reason for i in self.items}

    def signature(self) -> list[tuple[str, str, float]]:
        """What must not change between a hot and a rebuilt cache: ids, reasons, scores."""
        return [(i.koo.koo_id, i.reason, round(i.score, 9)) for i in self.items]


async def read_all(
    reader: Reader, user: str, *, limit: int = 20, now_ms: int | None = None,
    max_pages: int = 500,
) -> FeedRead:
    """Follow ``next_cursor`` until it is null; checks page sizes on the way."""
    pages: list[list[Ranked]] = []
    cursor: str | None = None
    while True:
        page = await reader.feed(user, limit=limit, cursor=cursor, now_ms=now_ms)
        assert len(page.items) <= limit, f"page of {len(page.items)} items for limit {limit}"
        pages.append(page.items)
        cursor = page.next_cursor
        if cursor is None:
            return FeedRead(pages)
        assert len(pages) < max_pages, "next_cursor never became null"


async def publish_realtime_only(svc: Services, *events: dict[str, Any]) -> None:
    """Publish events and run only the realtime queue: follow-up jobs on the backfill
    queue (purges, demotions) stay queued, so reads show what the read path does alone."""
    await svc.publisher.publish(list(events))
    await run_workers(svc.settings, (REALTIME,), burst=True, services=svc)


async def backfill_depth(svc: Services) -> int:
    return await svc.jobs.depth(BACKFILL)


@dataclass
class FeedModel:
    """What docs/api.md says each reader should see (recommended koos aside)."""

    author_of: dict[str, str] = field(default_factory=dict)  # koo_id -> author
    deleted: set[str] = field(default_factory=set)
    follows: set[tuple[str, str]] = field(default_factory=set)  # (follower, followee)
    blocks: set[tuple[str, str]] = field(default_factory=set)  # (user, target)
    mutes: set[tuple[str, str]] = field(default_factory=set)  # (user, target)

    def koo(self, koo_id: str, author: str) -> None:
        self.author_of[koo_id] = author

    def delete(self, koo_id: str) -> None:
        self.deleted.add(koo_id)

    def koos_by(self, author: str) -> list[str]:
        """Every koo the author created, oldest first (deleted ones included)."""
        return [k for k, a in self.author_of.items() if a == author]

    def relation(self, kind: str, user: str, other: str, on: bool) -> None:
        rel = {"follow": self.follows, "block": self.blocks, "mute": self.mutes}[kind]
        if on:
            rel.add((user, other))
        else:
            rel.discard((user, other))

    def hidden(self, reader: str, author: str) -> bool:
        """Rule 1: blocked or muted by the reader, or blocking the reader."""
        return ((reader, author) in self.blocks or (reader, author) in self.mutes
                or (author, reader) in self.blocks)

    def visible_author(self, reader: str, author: str) -> bool:
        if author == reader:
            return True
        return (reader, author) in self.follows and not self.hidden(reader, author)

    def expected(self, reader: str) -> set[str]:
        """Rule 1: the koo ids the reader's feed must hold (recommended ones aside)."""
        return {
            k for k, a in self.author_of.items()
            if k not in self.deleted and self.visible_author(reader, a)
        }

    def may_recommend(self, reader: str, author: str) -> bool:
        """Rule 7: never from the reader, whom they follow, block or mute, nor who blocks them."""
        return author != reader and (reader, author) not in self.follows \
            and not self.hidden(reader, author)


def duplicates(ids: Iterable[str]) -> list[str]:
    seen: set[str] = set()
    twice: list[str] = []
    for koo_id in ids:
        if koo_id in seen:
            twice.append(koo_id)
        seen.add(koo_id)
    return twice


def check_read(model: FeedModel, reader: str, read: FeedRead, users: Sequence[str]) -> None:
    """Rules 1, 4 and 7 for one complete read of a reader's feed."""
    served = read.ids(recommended=True)
    assert not duplicates(served), f"served twice: {duplicates(served)}"
    got = set(read.ids())
    want = model.expected(reader)
    assert got == want, (
        f"feed of {reader}: missing {sorted(want - got)}, unexpected {sorted(got - want)}"
    )
    for item in read.items:
        author = item.koo.author_id
        if item.reason == RECOMMENDED:
            assert not item.koo.deleted
            if author in users:  # other examples' users are strangers to this model
                assert item.koo.koo_id not in model.deleted, item.koo.koo_id
                assert model.may_recommend(reader, author), (
                    f"{item.koo.koo_id} by {author} recommended to {reader}"
                )
        elif author == reader:
            assert item.reason == "self", (item.koo.koo_id, item.reason)
        else:
            assert item.reason in ("following", "celebrity"), (item.koo.koo_id, item.reason)

