"""The demo's in-process Redis stand-in runs the cache's Lua scripts.

Pass criterion: on the stand-in, Cache.push adds a koo to a timeline that exists
(and not to one that does not), and koo bodies come back through the batched
read script: the demo needs scripting, which the stand-in has only with Lua
installed (fakeredis[lua]).
"""

from __future__ import annotations

from config.settings import Settings
from feed import keys
from feed._embedded import InProcessRedis
from feed.cache import Cache
from feed.models import Koo


async def test_the_stand_in_runs_the_cache_scripts() -> None:
    redis = InProcessRedis().cache_client()
    cache = Cache(redis, Settings())
    try:
        await redis.zadd(keys.timeline("active"), {keys.TIMELINE_READY: float("inf")})
        assert await cache.push(["active", "inactive"], "k1", 1_000) == 1
        window = await cache.window("active", limit=5)
        assert window.entries == [("k1", 1_000)]
        assert not await redis.exists(keys.timeline("inactive"))
        await cache.put_koos([Koo("k1", "a1", "hello", "en", 1_000)])
        found = await cache.get_koos(["k1", "k2"])
        assert set(found) == {"k1"}
        assert found["k1"].text == "hello"
    finally:
        await redis.aclose()
