"""The hot cache lost under load: flushed, then its Redis restarted (issue 7, item 6).

The cache Redis is a `redis-server` of the test's own (nothing persisted, so a
restart comes back empty). 500 feed reads are in flight at all times, ten for
each of 50 readers, while the cache is flushed and later killed and started
again. The reads call the :class:`feed.reader.Reader` the API serves from, in
this process: over HTTP the same load spends most of a small machine's CPU on
the HTTP layer, and the point here is the cache and its rebuilds.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import pytest
from redis.asyncio import Redis
from redis.exceptions import RedisError

from feed import keys
from feed.models import User
from feed.reader import Reader
from feed.services import Services, open_services
from tests.conftest import uid
from tests.fault._procs import RedisServer
from tests.helpers import apply_all, koo, now_ms

pytestmark = [pytest.mark.fault, pytest.mark.default_client_only, pytest.mark.slow]

READERS = 50
READS_PER_READER = 10  # in flight at once: 500 in all
AUTHORS = 8
KOOS_PER_AUTHOR = 4
FOLLOWS = (0, 1, 3)  # reader i follows authors i, i+1 and i+3 (mod AUTHORS)
PAGE = 10  # 3 x 4 followed koos + 1 own = 13 per feed: two pages
ANSWERED_WHILE_DOWN = 20  # reads answered before the cache Redis starts again
PHASE_SECONDS = 45.0


@pytest.fixture
async def cache_server(tmp_path: Path) -> AsyncIterator[RedisServer]:
    async with RedisServer(tmp_path / "cache").serving() as server:
        yield server


@pytest.fixture
async def cache_services(services: Services, cache_server: RedisServer
                         ) -> AsyncIterator[Services]:
    """Services whose hot cache is the test's own Redis; no recommended koos, so a feed
    is exactly the followed and own koos."""
    settings = services.settings.replace(cache_redis_url=cache_server.url(0),
                                         recommended_every=0)
    async with open_services(settings) as svc:
        yield svc


async def _seed(services: Services) -> dict[str, set[str]]:
    """Readers, authors, follows and koos; returns each reader's expected feed."""
    tag = uid("c")
    readers = [f"{tag}r{i:02d}" for i in range(READERS)]
    authors = [f"{tag}a{i}" for i in range(AUTHORS)]
    follows = {r: [authors[(i + d) % AUTHORS] for d in FOLLOWS] for i, r in enumerate(readers)}
    followers = Counter(a for fs in follows.values() for a in fs)
    at = now_ms()
    await services.stores.users.load_many(
        [(User(r, "@r", "hi", "ap-south-1", at, 0, len(FOLLOWS)), False) for r in readers]
        + [(User(a, "@a", "hi", "ap-south-1", at, followers[a], 0), False) for a in authors],
        at=at,
    )
    await services.stores.relations.load_many(
        [(r, keys.REL_FOLLOW, a) for r, fs in follows.items() for a in fs], at=at
    )
    by_author = {a: [f"{a}k{j}" for j in range(KOOS_PER_AUTHOR)] for a in authors}
    own = {r: f"{r}k" for r in readers}
    await apply_all(
        services,
        *(koo(k, a) for a, ks in by_author.items() for k in ks),
        *(koo(k, r) for r, k in own.items()),
    )
    return {r: {own[r], *(k for a in follows[r] for k in by_author[a])} for r in readers}


class Load:
    """READS_PER_READER loops per reader, each reading the whole feed page by page and
    checking it against the expected one, until stopped."""

    def __init__(self, reader: Reader, expected: dict[str, set[str]]) -> None:
        self.reader = reader
        self.expected = expected
        self.stop = asyncio.Event()
        self.reads = 0
        self.failures: list[str] = []

    async def read(self, reader: str) -> None:
        seen: list[str] = []
        cursor: str | None = None
        for _ in range(10):
            try:
                page = await self.reader.feed(reader, limit=PAGE, cursor=cursor)
            except Exception as exc:  # what the API would answer with a 5xx
                self.failures.append(f"{reader}: {exc!r}")
                return
            seen += [ranked.koo.koo_id for ranked in page.items]
            cursor = page.next_cursor
            if cursor is None:
                break
        if len(seen) != len(set(seen)) or set(seen) != self.expected[reader]:
            self.failures.append(f"{reader}: got {sorted(seen)}, want "
                                 f"{sorted(self.expected[reader])}")
        self.reads += 1

    async def loop(self, reader: str) -> None:
        while not self.stop.is_set():
            await self.read(reader)

    async def until(self, done: Callable[[], Awaitable[bool]], within: float) -> None:
        deadline = time.monotonic() + within
        while not await done():
            assert not self.failures, self.failures[:5]
            assert time.monotonic() < deadline, "the load did not get there in time"
            await asyncio.sleep(0.1)


async def _cached(redis: Redis, readers: list[str]) -> int:
    """How many readers have a complete cached timeline."""
    pipe = redis.pipeline(transaction=False)
    for reader in readers:
        pipe.zscore(keys.timeline(reader), keys.TIMELINE_READY)
    try:
        return sum(score is not None for score in await pipe.execute())
    except (OSError, RedisError):
        return 0


async def test_cache_flushed_then_restarted_under_500_concurrent_reads(
    cache_services: Services, cache_server: RedisServer, monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Pass criterion: with 500 feed reads in flight for 50 readers, after the cache
    Redis is flushed, and again after it is killed and started empty, every reader's
    cached timeline is rebuilt at most once (and is rebuilt), and every answer is 200
    with exactly the reader's expected feed (each koo once, none missing), including
    the answers given while the cache Redis was down."""
    services = cache_services
    expected = await _seed(services)
    readers = sorted(expected)
    manager = services.manager
    rebuilds: Counter[str] = Counter()
    attempts: Counter[str] = Counter()
    running: Counter[str] = Counter()  # rebuild attempts not finished yet
    populate = manager.populate

    async def counted(reader: str) -> bool:
        attempts[reader] += 1
        running[reader] += 1
        try:
            rebuilt = await populate(reader)
        finally:
            running[reader] -= 1
        if rebuilt:
            rebuilds[reader] += 1
        return rebuilt

    monkeypatch.setattr(manager, "populate", counted)
    probe = Redis.from_url(cache_server.url(0), socket_timeout=2, socket_connect_timeout=1)
    figures: list[str] = []
    load = Load(Reader(manager), expected)

    async def all_cached() -> bool:
        """Every reader's cache is complete again, and no rebuild is still running
        (a rebuild counts once it has returned)."""
        return (await _cached(probe, readers) == READERS
                and not any(running.values()))

    # Warm: every reader read once, every cache built once.
    await asyncio.gather(*(load.read(r) for r in readers))
    await load.until(all_cached, PHASE_SECONDS)
    assert not load.failures, load.failures[:5]
    rebuilds.clear()
    attempts.clear()

    loops = [asyncio.create_task(load.loop(r)) for r in readers
             for _ in range(READS_PER_READER)]
    try:
        async def reads_past(target: int) -> bool:
            return load.reads >= target

        # 1. Flushed under load.
        await load.until(lambda: reads_past(len(loops)), PHASE_SECONDS)
        started, before = time.monotonic(), load.reads
        await probe.flushdb()
        await load.until(all_cached, PHASE_SECONDS)
        target = load.reads + len(loops)  # every loop read once more after that
        await load.until(lambda: reads_past(target), PHASE_SECONDS)
        figures.append(f"flush: {load.reads - before} reads, caches back in "
                       f"{time.monotonic() - started:.1f} s, {sum(rebuilds.values())} "
                       f"rebuilds of {sum(attempts.values())} attempts")
        flush_rebuilds = dict(rebuilds)
        rebuilds.clear()
        attempts.clear()

        # 2. Killed and started again, empty, under load.
        started, before = time.monotonic(), load.reads
        cache_server.kill()
        target = load.reads + ANSWERED_WHILE_DOWN
        await load.until(lambda: reads_past(target), PHASE_SECONDS)
        down_for, during_outage = time.monotonic() - started, load.reads - before
        cache_server.start()
        await cache_server.ready()
        await load.until(all_cached, PHASE_SECONDS)
        target = load.reads + len(loops)
        await load.until(lambda: reads_past(target), PHASE_SECONDS)
        figures.append(f"restart: {during_outage} reads answered in the {down_for:.1f} s "
                       "down, "
                       f"{load.reads - before} in all, caches back in "
                       f"{time.monotonic() - started:.1f} s, {sum(rebuilds.values())} "
                       f"rebuilds of {sum(attempts.values())} attempts")
        restart_rebuilds = dict(rebuilds)
    finally:
        load.stop.set()
        await asyncio.gather(*loops, return_exceptions=True)
        await probe.aclose()
    print("; ".join(figures))
    assert not load.failures, load.failures[:5]
    for phase, counts in (("flush", flush_rebuilds), ("restart", restart_rebuilds)):
        assert set(counts) == set(readers), f"{phase}: not every reader was rebuilt"
        twice = {r: n for r, n in counts.items() if n > 1}
        assert not twice, f"{phase}: rebuilt more than once: {twice}"
