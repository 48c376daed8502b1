"""The cache's Lua scripts: one trim shared by every timeline-like write.

Pass criteria: a push or a merge adds only to sets that exist; a set that outgrows
``keep`` is trimmed to exactly ``keep`` members, oldest entries first, and loses its
"whole history" mark, which is dropped before the trim so it never costs an entry;
the ready and building sentinels survive every trim; a push over many timelines on a
standalone Redis, in batches, counts exactly the active ones.
"""

from __future__ import annotations

import math
import re
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from redis.asyncio import Redis

from config.settings import Settings
from feed import keys
from feed.cache import Cache
from feed.cache._scripts import MERGE, PUSH, SCRIPTS
from feed.cache.timelines import PUSH_BATCH
from tests.conftest import CACHE_URL

KEY = keys.timeline("reader")


@pytest.fixture
async def redis() -> AsyncIterator[Redis]:
    client: Redis = Redis.from_url(CACHE_URL, decode_responses=True)
    await client.flushdb()
    try:
        yield client
    finally:
        await client.aclose()


async def run(redis: Redis, script: str, script_keys: list[str], *args: Any) -> Any:
    call: Any = redis.eval
    return await call(script, len(script_keys), *script_keys, *args)


async def push(redis: Redis, key: str, member: str, score: int, keep: int) -> int:
    return int(await run(redis, PUSH, [key], score, member, keep))


async def merge(redis: Redis, key: str, member: str, score: int, keep: int) -> int:
    return int(await run(redis, MERGE, [key], keep, score, member))


WRITES = [pytest.param(push, id="push"), pytest.param(merge, id="merge")]


async def members(redis: Redis, key: str = KEY) -> list[str]:
    return list(await redis.zrange(key, 0, -1))


async def seed(redis: Redis, entries: int, *sentinels: str) -> None:
    mapping: dict[str, float] = {f"k{i}": 1_000 + i for i in range(entries)}
    mapping.update(dict.fromkeys(sentinels, math.inf))
    await redis.zadd(KEY, mapping)


@pytest.mark.parametrize("write", WRITES)
async def test_a_write_reaches_only_a_set_that_exists(redis: Redis, write: Any) -> None:
    assert await write(redis, KEY, "k1", 1_000, 10) == 0
    assert not await redis.exists(KEY)
    await seed(redis, 0, keys.TIMELINE_READY)
    assert await write(redis, KEY, "k1", 1_000, 10) == 1
    assert await members(redis) == ["k1", keys.TIMELINE_READY]


@pytest.mark.parametrize("write", WRITES)
async def test_within_keep_nothing_is_trimmed_and_the_mark_stays(redis: Redis, write: Any
                                                                 ) -> None:
    await seed(redis, 2, keys.TIMELINE_READY, keys.COMPLETE)
    await write(redis, KEY, "new", 5_000, 5)
    assert set(await members(redis)) == {"k0", "k1", "new", keys.TIMELINE_READY,
                                         keys.COMPLETE}


@pytest.mark.parametrize("write", WRITES)
async def test_an_overflow_trims_to_keep_oldest_first_and_drops_the_mark(
    redis: Redis, write: Any
) -> None:
    await seed(redis, 5, keys.TIMELINE_READY, keys.COMPLETE)
    await write(redis, KEY, "new", 5_000, 4)
    assert await members(redis) == ["k3", "k4", "new", keys.TIMELINE_READY]


@pytest.mark.parametrize("write", WRITES)
async def test_the_mark_goes_first_so_it_costs_no_entry(redis: Redis, write: Any) -> None:
    """Three entries, the ready sentinel and the mark, keep 4: only the mark goes."""
    await seed(redis, 2, keys.TIMELINE_READY, keys.COMPLETE)
    await write(redis, KEY, "new", 5_000, 4)
    assert await members(redis) == ["k0", "k1", "new", keys.TIMELINE_READY]


@pytest.mark.parametrize("write", WRITES)
async def test_a_set_being_rebuilt_keeps_its_sentinel_through_a_trim(
    redis: Redis, write: Any
) -> None:
    await seed(redis, 4, keys.TIMELINE_BUILDING)
    await write(redis, KEY, "new", 5_000, 3)
    assert await members(redis) == ["k3", "new", keys.TIMELINE_BUILDING]


async def test_merge_adds_every_pair_then_trims_once(redis: Redis) -> None:
    await seed(redis, 1, keys.TIMELINE_READY, keys.COMPLETE)
    added = await run(redis, MERGE, [KEY], 4, 3_000, "a", 2_000, "b", 4_000, "c")
    assert added == 1
    assert await members(redis) == ["b", "a", "c", keys.TIMELINE_READY]


async def test_one_push_call_covers_many_timelines(redis: Redis) -> None:
    for reader in ("r1", "r3"):
        await redis.zadd(keys.timeline(reader), {keys.TIMELINE_READY: math.inf})
    pushed = await run(redis, PUSH, [keys.timeline(r) for r in ("r1", "r2", "r3")],
                       7_000, "k", 10)
    assert pushed == 2
    assert not await redis.exists(keys.timeline("r2"))


async def test_cache_push_batches_many_readers(redis: Redis) -> None:
    cache = Cache(redis, Settings(timeline_cache_items=3))
    readers = [f"r{i}" for i in range(2 * PUSH_BATCH + 7)]
    active = readers[::97]
    for reader in active:
        await redis.zadd(keys.timeline(reader), {keys.TIMELINE_READY: math.inf})
    assert await cache.push(readers, "k", 1_000) == len(active)
    for reader in active:
        assert await redis.zrange(keys.timeline(reader), 0, -1) == ["k", keys.TIMELINE_READY]


async def test_the_scripts_load(redis: Redis) -> None:
    cache = Cache(redis, Settings())
    await cache.load_scripts()
    assert set(cache._sha) == set(SCRIPTS)
    assert all(await redis.script_exists(*cache._sha.values()))


def test_no_sentinel_is_spelled_out_in_the_cache_package() -> None:
    """Sentinels come from feed.keys only, so the scripts cannot drift from the reads."""
    package = Path(__file__).resolve().parents[2] / "feed" / "cache"
    sentinels = {keys.TIMELINE_READY, keys.TIMELINE_BUILDING, keys.COMPLETE}
    pattern = re.compile("|".join(rf"""['"]{re.escape(s)}['"]""" for s in sentinels))
    sources = sorted(package.glob("*.py"))
    assert sources
    for source in sources:
        assert not pattern.search(source.read_text()), source.name
