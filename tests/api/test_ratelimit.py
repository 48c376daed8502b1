"""The API's token buckets in the cache Redis.

Pass criteria: a bucket lets ``burst`` requests through at once and then says how long
to wait; it refills one request per interval; buckets of different keys are separate;
a key expires once its bucket is full again; the script is loaded again after the
Redis lost it; an unreachable Redis is StorageUnavailable, then skipped for a moment.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from redis.asyncio import Redis

from feed import keys
from feed._embedded import free_port
from feed.api.ratelimit import TokenBuckets
from feed.cache import OUTAGE_BACKOFF_SECONDS
from feed.errors import StorageUnavailable
from tests.conftest import CACHE_URL

NOW = 1_000_000.0
BUCKET = keys.rate_limit(keys.token_digest("token-one-0000"))
OTHER = keys.rate_limit(keys.token_digest("token-two-0000"))


@pytest.fixture
async def redis() -> AsyncIterator[Redis]:
    client: Redis = Redis.from_url(CACHE_URL, decode_responses=True)
    await client.flushdb()
    try:
        yield client
    finally:
        await client.aclose()


async def take(buckets: TokenBuckets, key: str = BUCKET, at: float = NOW) -> float:
    return await buckets.take(key, interval_ms=200, burst=5, now_ms=at)


async def test_a_burst_goes_through_then_the_wait_is_one_interval(redis: Redis) -> None:
    buckets = TokenBuckets(redis)
    assert [await take(buckets) for _ in range(5)] == [0.0] * 5
    assert await take(buckets) == 0.2
    assert await take(buckets) == 0.2  # a refused request takes nothing from the bucket


async def test_the_bucket_refills_one_request_per_interval(redis: Redis) -> None:
    buckets = TokenBuckets(redis)
    for _ in range(5):
        await take(buckets)
    assert await take(buckets, at=NOW + 100) == 0.1
    assert await take(buckets, at=NOW + 200) == 0.0
    assert await take(buckets, at=NOW + 200) == 0.2
    assert [await take(buckets, at=NOW + 5_000) for _ in range(6)] == [0.0] * 5 + [0.2]


async def test_keys_are_separate_buckets(redis: Redis) -> None:
    buckets = TokenBuckets(redis)
    for _ in range(5):
        await take(buckets)
    assert await take(buckets) > 0
    assert await take(buckets, OTHER) == 0.0
    address = keys.auth_failures("192.0.2.7")
    assert await buckets.take(address, interval_ms=2_000, burst=1, now_ms=NOW) == 0.0
    assert await buckets.take(address, interval_ms=2_000, burst=1, now_ms=NOW) == 2.0


async def test_a_bucket_expires_soon_after_it_is_full_again(redis: Redis) -> None:
    buckets = TokenBuckets(redis)
    await take(buckets)
    ttl = await redis.pttl(BUCKET)
    assert 0 < ttl <= 200 + 1000


async def test_the_script_is_loaded_again_after_redis_lost_it(redis: Redis) -> None:
    buckets = TokenBuckets(redis)
    assert await take(buckets) == 0.0
    await redis.script_flush()
    assert await take(buckets) == 0.0
    assert await redis.exists(BUCKET)


async def test_an_unreachable_redis_is_unavailable_then_skipped_for_a_moment() -> None:
    dead: Redis = Redis.from_url(f"redis://127.0.0.1:{free_port()}/0",
                                 decode_responses=True, socket_connect_timeout=0.5)
    buckets = TokenBuckets(dead)
    try:
        with pytest.raises(StorageUnavailable) as first:
            await take(buckets)
        assert first.value.code != "CacheSkipped"
        with pytest.raises(StorageUnavailable) as skipped:
            await take(buckets)
        assert skipped.value.code == "CacheSkipped"
        buckets._skip_until -= OUTAGE_BACKOFF_SECONDS
        with pytest.raises(StorageUnavailable) as again:
            await take(buckets)
        assert again.value.code != "CacheSkipped", "after the pause Redis is tried again"
    finally:
        await dead.aclose()
