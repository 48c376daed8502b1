"""The cached timeline knows when it holds the reader's whole stored timeline.

Pass criteria: a reader whose stored timeline fits the cache window is served
from Redis alone (no DynamoDB timeline query), first page and later pages;
the "whole history" mark goes as soon as a push or a merge trims the set, and
reads then reach into DynamoDB again and still return every entry once; an
unreachable cache is skipped for a moment instead of reconnecting per call.
"""

from __future__ import annotations

from typing import Any

import pytest
from redis.asyncio import Redis

from feed import keys
from feed._embedded import free_port
from feed.cache import OUTAGE_BACKOFF_SECONDS, Cache
from feed.errors import StorageUnavailable
from feed.services import Services
from feed.store import Entry
from feed.store.timelines import Timelines
from tests.conftest import uid


def _count_pages(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    calls: list[str] = []
    original = Timelines.page

    async def counting(self: Timelines, reader: str, **kw: Any) -> Any:
        calls.append(reader)
        return await original(self, reader, **kw)

    monkeypatch.setattr(Timelines, "page", counting)
    return calls


async def test_a_whole_timeline_in_the_cache_is_read_without_dynamodb(
    services: Services, monkeypatch: pytest.MonkeyPatch
) -> None:
    svc = services
    reader, author = uid(), uid()
    for i in range(5):
        await svc.stores.timelines.add([reader], Entry(uid("k"), author, 1_000 + i))
    assert await svc.manager.populate(reader)
    pages = _count_pages(monkeypatch)

    window = await svc.cache.window(reader, limit=3)
    assert window.ready
    assert window.complete
    first = await svc.manager._timeline_slice(reader, None, 3)
    assert len(first[0]) == 3
    assert first[1] is True
    rest = await svc.manager._timeline_slice(reader, (first[0][-1][1], first[0][-1][0]), 10)
    assert len(rest[0]) == 2
    assert rest[1] is False
    assert pages == [], "a complete cached timeline must not send reads to DynamoDB"


async def test_a_trim_drops_the_mark_and_reads_go_on_into_dynamodb(
    services: Services, monkeypatch: pytest.MonkeyPatch
) -> None:
    svc = services
    svc.cache.keep = 4  # three entries and the sentinel, as FEED_TIMELINE_CACHE_ITEMS=3 would
    reader, author = uid(), uid()
    stored = [Entry(uid("k"), author, 2_000 + i) for i in range(2)]
    for entry in stored:
        await svc.stores.timelines.add([reader], entry)
    assert await svc.manager.populate(reader)
    assert (await svc.cache.window(reader, limit=10)).complete

    newer = [Entry(uid("k"), author, 3_000 + i) for i in range(3)]
    for entry in newer:
        await svc.manager.push(entry, [reader])
    assert await svc.cache.redis.zscore(keys.timeline(reader), keys.COMPLETE) is None

    pages = _count_pages(monkeypatch)
    seen: list[str] = []
    before = None
    while True:
        found, more = await svc.manager._timeline_slice(reader, before, 2)
        seen += [k for k, _, _ in found]
        if not more or not found:
            break
        before = (found[-1][1], found[-1][0])
    expected = [e.koo_id for e in sorted([*stored, *newer], key=lambda e: -e.created_at)]
    assert seen == expected
    assert pages, "entries trimmed from the cache are only in DynamoDB: it must be read"


async def test_a_merge_that_trims_drops_the_mark(services: Services) -> None:
    svc = services
    svc.cache.keep = 4
    reader = uid()
    assert await svc.manager.populate(reader)  # empty, and complete
    assert (await svc.cache.window(reader, limit=10)).complete
    await svc.cache.merge(reader, [(uid("k"), 4_000 + i) for i in range(5)])
    window = await svc.cache.window(reader, limit=10)
    assert len(window.entries) == 3
    assert not window.complete


async def test_an_unreachable_cache_is_skipped_for_a_moment(services: Services) -> None:
    """After a connection failure, cache calls fail at once (no reconnect attempt each)
    for OUTAGE_BACKOFF_SECONDS, then the cache is tried again."""
    dead = Redis.from_url(f"redis://127.0.0.1:{free_port()}/0", decode_responses=True,
                          socket_connect_timeout=0.5)
    cache = Cache(dead, services.settings)
    try:
        with pytest.raises(StorageUnavailable) as first:
            await cache.profile("u1")
        assert first.value.code != "CacheSkipped"
        for _ in range(20):
            with pytest.raises(StorageUnavailable) as skipped:
                await cache.window("u1", limit=5)
            assert skipped.value.code == "CacheSkipped"
        cache._skip_until -= OUTAGE_BACKOFF_SECONDS
        with pytest.raises(StorageUnavailable) as again:
            await cache.profile("u1")
        assert again.value.code != "CacheSkipped", "after the pause the cache is tried again"
    finally:
        await dead.aclose()
