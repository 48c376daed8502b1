"""Opening the clients: a cache that does not answer is named, not fatal."""

from __future__ import annotations

import logging

import pytest

from config.settings import Settings
from feed.services import open_cache_redis


async def test_a_silent_cache_redis_is_named_and_not_fatal(
    settings: Settings, caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.WARNING, logger="feed.services")
    closed = settings.replace(cache_redis_url="redis://:secret@127.0.0.1:1/0",
                              redis_timeout=0.5)
    client = await open_cache_redis(closed)
    await client.aclose()
    warned = [r for r in caplog.records if "FEED_CACHE_REDIS_URL" in r.getMessage()]
    assert len(warned) == 1
    assert "secret" not in str(warned[0].__dict__)
