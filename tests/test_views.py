"""The first feed read after the hot cache is lost: how many DynamoDB round trips the
answer waits for, and that it is still exactly the warm feed (what a feed promises, 5).

Every DynamoDB call goes through ``Dynamo.call``. These tests wrap it to record when
each call starts and ends, and add the same delay to every call, as a network's
round trip would: then calls that run side by side overlap and calls that wait for
one another do not, whatever the local backend's own speed. The answer's critical
path is the longest chain of calls in which each starts only after the one before it
ended. Calls of the background rebuild of the cached timeline are not part of it.

Pass criteria: a cold first page (Redis flushed) waits for at most
``MAX_ROUND_TRIPS`` sequential DynamoDB stages, both when the reader's recommended
koos come from trending and when they are stored, and so does a later page read cold;
every page of a cold read (items, order, reasons, scores, and where each next_cursor
points) equals the warm read; the background rebuild runs once and leaves the
reader's timeline cached; a cold read of an unknown user is NotFound and leaves
nothing about them in the cache; concurrent cold reads share one rebuild, and a
failed rebuild is logged and redone by a later read.
"""

from __future__ import annotations

import asyncio
import contextvars
import logging
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import pytest

from config.settings import Settings
from feed import keys
from feed.cache import Cache
from feed.errors import NotFound
from feed.reader import FeedPage, Reader
from feed.services import Services, open_services
from feed.store import Dynamo, create_tables, drop_tables
from feed.timeline import FeedManager
from tests.conftest import uid
from tests.helpers import apply_all, event, follow, koo, react, relation, signup

MAX_ROUND_TRIPS = 3
ROUND_TRIP_SECONDS = 0.1  # far above the local backend's own time per call
LIMIT = 10
LANG = "mt"  # no other test uses it: trending holds this test's koos only

# Set inside the background rebuild, so that its calls can be told from the answer's.
_BACKGROUND: contextvars.ContextVar[bool] = contextvars.ContextVar("background", default=False)


@dataclass(frozen=True, slots=True)
class Call:
    operation: str
    table: str
    start: float
    end: float
    background: bool


@dataclass
class Trace:
    """DynamoDB calls recorded while ``on``, each delayed by ``delay`` seconds."""

    delay: float
    on: bool = False
    calls: list[Call] = field(default_factory=list)
    rebuilds: int = 0

    def start(self) -> None:
        self.calls.clear()
        self.on = True

    def stop(self) -> list[Call]:
        self.on = False
        return list(self.calls)


def _table(db: Dynamo, request: dict[str, Any]) -> str:
    names = [request["TableName"]] if "TableName" in request else list(
        request.get("RequestItems", {})
    )
    return ",".join(str(n).removeprefix(db.prefix) for n in names)


def trace_dynamo(monkeypatch: pytest.MonkeyPatch, delay: float) -> Trace:
    trace = Trace(delay)
    call = Dynamo.call
    populate = FeedManager.populate

    # Passes on whatever it is given: only the operation's name and body are read.
    async def traced(self: Dynamo, operation: str, *args: Any, **kwargs: Any) -> Any:
        if not trace.on:
            return await call(self, operation, *args, **kwargs)
        request = args[0] if args and isinstance(args[0], dict) else kwargs
        started = time.perf_counter()
        try:
            await asyncio.sleep(trace.delay)
            return await call(self, operation, *args, **kwargs)
        finally:
            trace.calls.append(Call(operation, _table(self, request), started,
                                    time.perf_counter(), _BACKGROUND.get()))

    async def marked(self: FeedManager, reader: str) -> bool:
        token = _BACKGROUND.set(True)
        try:
            rebuilt = await populate(self, reader)
            trace.rebuilds += int(rebuilt)
            return rebuilt
        finally:
            _BACKGROUND.reset(token)

    monkeypatch.setattr(Dynamo, "call", traced)
    monkeypatch.setattr(FeedManager, "populate", marked)
    return trace


def stages(calls: list[Call]) -> list[list[Call]]:
    """Calls by their place on the longest chain that ends with them (1: waited for no
    other call); the number of stages is the critical path in round trips."""
    ordered = sorted(calls, key=lambda c: c.end)
    depth: list[int] = []
    for i, c in enumerate(ordered):
        before = [depth[j] for j in range(i) if ordered[j].end <= c.start]
        depth.append(1 + max(before, default=0))
    found: list[list[Call]] = [[] for _ in range(max(depth, default=0))]
    for c, d in zip(ordered, depth, strict=True):
        found[d - 1].append(c)
    return found


def describe(by_stage: list[list[Call]]) -> str:
    return "; ".join(
        f"stage {n}: " + ", ".join(sorted(f"{c.operation} {c.table}" for c in calls))
        for n, calls in enumerate(by_stage, 1)
    )


# --- the world ----------------------------------------------------------------------


@dataclass(frozen=True)
class World:
    me: str
    expected: set[str]  # what the reader's feed holds, recommended koos aside


@pytest.fixture
async def svc(settings: Settings) -> AsyncIterator[Services]:
    """Services over tables of their own (the backend's time per call then stays far
    below the added round trip, however much the rest of the suite stored), with a
    celebrity threshold of 3 followers: the star's koos are pulled at read time."""
    own = settings.replace(celebrity_followers=3, table_prefix=f"{uid('fr')}_")
    async with open_services(own) as services:
        await create_tables(services.stores.db)
        try:
            yield services
        finally:
            await drop_tables(services.stores.db)


async def build_world(svc: Services) -> World:
    me, a, b, star, f2, f3, stranger, blocker, muted = (uid() for _ in range(9))
    await apply_all(svc, *(signup(u, lang=LANG)
                           for u in (me, a, b, star, f2, f3, stranger, blocker, muted)))
    await apply_all(svc, *(follow(me, u) for u in (a, b, star, blocker, muted)),
                    follow(f2, star), follow(f3, star))
    cycle = (a, b, star, me, stranger, blocker, muted)
    posted = [uid("k") for _ in range(5 * len(cycle))]
    await apply_all(svc, *(koo(k, cycle[i % len(cycle)], lang=LANG)
                           for i, k in enumerate(posted)))
    await apply_all(svc, react("like", posted[1], me), react("comment", posted[7], me),
                    react("like", posted[4], f2), react("rekoo", posted[11], f3),
                    event("koo_deleted", koo_id=posted[0], author_id=a),
                    relation("user_blocked", blocker, me), relation("user_muted", me, muted))
    shown = (a, b, star, me)  # not the stranger, the blocker or the muted author
    expected = {k for i, k in enumerate(posted) if cycle[i % len(cycle)] in shown} - {posted[0]}
    return World(me, expected)


@dataclass(frozen=True)
class Read:
    pages: list[FeedPage]
    positions: list[dict[str, Any] | None]  # where each next_cursor points

    def signature(self) -> list[list[tuple[str, str, float]]]:
        return [[(i.koo.koo_id, i.reason, round(i.score, 9)) for i in p.items]
                for p in self.pages]


async def read_pages(reader: Reader, user: str, now_ms: int, *,
                     first: FeedPage | None = None) -> Read:
    """Every page, following next_cursor until it is null (``first``: page one, read)."""
    pages: list[FeedPage] = []
    positions: list[dict[str, Any] | None] = []
    page = first or await reader.feed(user, limit=LIMIT, now_ms=now_ms)
    while True:
        pages.append(page)
        cursor = page.next_cursor
        positions.append(None if cursor is None else
                         reader.cursors.decode(cursor, "feed", user, now=now_ms / 1000))
        if cursor is None:
            return Read(pages, positions)
        assert len(pages) < 50, "next_cursor never became null"
        page = await reader.feed(user, limit=LIMIT, cursor=cursor, now_ms=now_ms)


# --- tests --------------------------------------------------------------------------


@pytest.mark.parametrize("recommended", ["trending", "stored"])
async def test_a_cold_first_read_waits_for_at_most_three_round_trips(
    svc: Services, monkeypatch: pytest.MonkeyPatch, recommended: str,
) -> None:
    world = await build_world(svc)
    reader = Reader(svc.manager)
    now = int(time.time() * 1000)
    if recommended == "stored":
        assert await reader.refresh_recommendations(world.me, now_ms=now) > 0
    await read_pages(reader, world.me, now)  # fills the cache
    await svc.manager.drain()
    warm = await read_pages(reader, world.me, now)
    shown = {i.koo.koo_id for p in warm.pages for i in p.items if i.reason != "recommended"}
    assert shown == world.expected
    assert any(i.reason == "recommended" for p in warm.pages for i in p.items)
    assert any(i.reason == "celebrity" for p in warm.pages for i in p.items)
    assert len(warm.pages) > 1

    trace = trace_dynamo(monkeypatch, ROUND_TRIP_SECONDS)
    await svc.cache.redis.flushdb()
    trace.start()
    first = await reader.feed(world.me, limit=LIMIT, now_ms=now)
    calls = trace.stop()
    answer = [c for c in calls if not c.background]
    by_stage = stages(answer)
    assert len(by_stage) <= MAX_ROUND_TRIPS, (
        f"{len(by_stage)} sequential DynamoDB round trips ({len(answer)} calls): "
        f"{describe(by_stage)}"
    )

    cold = await read_pages(reader, world.me, now, first=first)
    assert cold.signature() == warm.signature()
    assert cold.positions == warm.positions
    await svc.manager.drain()
    assert trace.rebuilds == 1, "one background rebuild of the cached timeline"
    assert (await svc.cache.window(world.me, limit=1)).ready

    # Cold again, read straight through while the rebuild may still run: the same feed.
    await svc.cache.redis.flushdb()
    assert (await read_pages(reader, world.me, now)).signature() == warm.signature()
    await svc.manager.drain()

    # A later page is a first read too when the cache is lost between two pages.
    await svc.cache.redis.flushdb()
    cursor = warm.pages[0].next_cursor
    trace.start()
    second = await reader.feed(world.me, limit=LIMIT, cursor=cursor, now_ms=now)
    by_stage = stages([c for c in trace.stop() if not c.background])
    assert len(by_stage) <= MAX_ROUND_TRIPS, describe(by_stage)
    rest = await read_pages(reader, world.me, now, first=second)
    assert rest.signature() == warm.signature()[1:]
    assert rest.positions == warm.positions[1:]
    await svc.manager.drain()


async def test_a_cold_read_of_an_unknown_user_leaves_nothing_in_the_cache(
    svc: Services,
) -> None:
    world = await build_world(svc)
    nobody = uid("nobody")
    # Relations of an id that never signed up still exist in storage: they must not be
    # read into the cache for a 404.
    await apply_all(svc, follow(nobody, world.me), relation("user_blocked", world.me, nobody))
    await svc.cache.redis.flushdb()
    reader = Reader(svc.manager)
    with pytest.raises(NotFound):
        await reader.feed(nobody, limit=LIMIT)
    await svc.manager.drain()
    await asyncio.sleep(0.1)  # any stray write of a load the 404 did not wait for
    left = [k async for k in svc.cache.redis.scan_iter(match=f"*{{{nobody}}}*")]
    assert left == [], left
    assert keys.timeline(nobody) not in left


async def test_concurrent_cold_reads_share_one_rebuild_and_a_failed_one_is_logged(
    svc: Services, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture,
) -> None:
    """Pass criteria: ten cold reads at once all answer the warm page and start one
    rebuild between them; a rebuild that fails is logged with the reader's id, leaves
    the answer alone, and the next read rebuilds the cache."""
    world = await build_world(svc)
    reader = Reader(svc.manager)
    now = int(time.time() * 1000)
    warm = await reader.feed(world.me, limit=LIMIT, now_ms=now)
    await svc.manager.drain()
    trace = trace_dynamo(monkeypatch, 0.0)

    await svc.cache.redis.flushdb()
    pages = await asyncio.gather(*(reader.feed(world.me, limit=LIMIT, now_ms=now)
                                   for _ in range(10)))
    await svc.manager.drain()
    assert trace.rebuilds == 1
    signature = Read([warm], [None]).signature()
    assert all(Read([p], [None]).signature() == signature for p in pages)

    complete = Cache.complete_rebuild

    async def broken(self: Cache, *args: Any, **kwargs: Any) -> None:
        raise RuntimeError("rebuild broke")

    monkeypatch.setattr(Cache, "complete_rebuild", broken)
    await svc.cache.redis.flushdb()
    caplog.set_level(logging.WARNING, logger="feed.timeline")
    page = await reader.feed(world.me, limit=LIMIT, now_ms=now)
    await svc.manager.drain()
    assert Read([page], [None]).signature() == signature
    failed = [r for r in caplog.records if r.getMessage() == "timeline rebuild failed"]
    assert failed, "a failed rebuild must be logged"
    assert getattr(failed[0], "user_id", None) == world.me
    assert failed[0].exc_info is not None, "the error itself is logged"
    assert not (await svc.cache.window(world.me, limit=1)).ready

    monkeypatch.setattr(Cache, "complete_rebuild", complete)
    again = await reader.feed(world.me, limit=LIMIT, now_ms=now)
    assert Read([again], [None]).signature() == signature
    await svc.manager.drain()
    assert (await svc.cache.window(world.me, limit=1)).ready
