"""Trending lists: no stampede when they expire or the cache is lost.

Pass criteria: 20 concurrent reads with no cached list make one computation
(two DynamoDB day queries), not twenty; a list older than
TRENDING_FRESH_SECONDS is still served at once, and one background refresh
replaces it; a page's recommendations read only the top of the list.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest

from config.tables import KOOS
from feed.events import KooCreated
from feed.reader import Reader
from feed.recommend import TRENDING_PER_AUTHOR
from feed.services import Services
from feed.store.koos import Koos
from feed.trending import TRENDING_FRESH_SECONDS, Trends
from tests.conftest import uid
from tests.helpers import apply_all, koo, signup


def _count_day_queries(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    calls: list[str] = []
    original = Koos.recent_in_lang

    async def counting(self: Koos, lang: str, *args: Any, **kw: Any) -> Any:
        calls.append(lang)
        return await original(self, lang, *args, **kw)

    monkeypatch.setattr(Koos, "recent_in_lang", counting)
    return calls


async def test_concurrent_reads_share_one_computation(
    services: Services, monkeypatch: pytest.MonkeyPatch
) -> None:
    author = uid()
    ids = [uid("k") for _ in range(3)]
    await apply_all(services, signup(author, lang="pt"),
                    *(koo(k, author, lang="pt") for k in ids))
    await services.cache.redis.flushdb()
    queries = _count_day_queries(monkeypatch)
    reader = Reader(services.manager)
    now = int(time.time() * 1000)
    results = await asyncio.gather(*(reader.trends.ids("pt", now_ms=now) for _ in range(20)))
    assert len(queries) == 2, "one computation: today's and yesterday's koos"
    assert all(r == results[0] for r in results), "every read got the one computed list"
    assert set(ids) <= {k for k, _ in results[0]}  # other tests' koos may trend too


async def test_a_stale_list_is_served_and_refreshed_once(
    services: Services, monkeypatch: pytest.MonkeyPatch
) -> None:
    author = uid()
    old, new = uid("k"), uid("k")
    await apply_all(services, signup(author, lang="en"), koo(new, author, lang="en"))
    now = int(time.time() * 1000)
    stale_at = now - (TRENDING_FRESH_SECONDS + 5) * 1000
    await services.cache.store_trending("en", [(old, 1.0)], ttl=600, computed_ms=stale_at)
    queries = _count_day_queries(monkeypatch)
    reader = Reader(services.manager)

    served = await asyncio.gather(*(reader.trends.ids("en", now_ms=now) for _ in range(10)))
    assert all(s == [(old, 1.0)] for s in served), "the stale list is served at once"
    await reader.trends._tasks["en"]
    assert len(queries) == 2, "one refresh for ten stale reads"
    cached = await services.cache.trending("en", 10)
    assert cached is not None
    entries, computed = cached
    assert old not in {k for k, _ in entries}, "the refresh replaced the stale list"
    assert new in {k for k, _ in entries}
    assert computed == now


async def test_a_page_reads_only_the_top_of_the_list(services: Services) -> None:
    now = int(time.time() * 1000)
    scored = [(uid("k"), float(1000 - i)) for i in range(400)]
    await services.cache.store_trending("hi", scored, ttl=600, computed_ms=now)
    reader = Reader(services.manager)
    top = await reader.trends.ids("hi", now_ms=now, limit=50)
    assert top == scored[:50]


async def test_a_read_that_gives_up_does_not_cancel_the_shared_computation(
    services: Services, monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Reads past their time limit are cancelled; the others waiting on the same
    computation still get its list (they used to fail with CancelledError: a 500)."""
    reader = Reader(services.manager)
    computed = 0

    async def slow(self: Reader, lang: str, now_ms: int, *, refresh: bool
                   ) -> list[tuple[str, float]]:
        nonlocal computed
        computed += 1
        await asyncio.sleep(0.2)
        return [("k1", 2.0), ("k2", 1.0)]

    monkeypatch.setattr(Trends, "_compute", slow)
    now = int(time.time() * 1000)
    impatient = asyncio.ensure_future(reader.trends.ids("xx", now_ms=now))
    patient = asyncio.ensure_future(reader.trends.ids("xx", now_ms=now))
    await asyncio.sleep(0.05)
    impatient.cancel()
    assert await patient == [("k1", 2.0), ("k2", 1.0)]
    assert impatient.cancelled()
    assert computed == 1


@pytest.mark.slow_on_moto
async def test_a_burst_by_one_author_does_not_crowd_out_the_others(
    services: Services,
) -> None:
    """Before: one author's 500-koo batch was the whole trending sample of its language,
    so every reader's recommended koos came from that author. Pass: the others' older
    koos are still found, and the flooder has at most TRENDING_PER_AUTHOR entries."""
    lang, now = "zu", int(time.time() * 1000)
    flooder, others = uid("flood"), [uid("other") for _ in range(5)]

    def item(koo_id: str, author: str, at: int) -> dict[str, Any]:
        event = KooCreated(event_id=uid("e"), koo_id=koo_id, author_id=author, text="t",
                           lang=lang, occurred_at=at)
        return dict(services.stores.koos.create_item(event, pull=True)["Put"]["Item"])

    older = [item(uid("k"), author, now - 60_000) for author in others]
    burst = [item(uid("k"), flooder, now - 1_000 + i) for i in range(1_100)]
    await services.stores.db.batch_write(KOOS, puts=older + burst)
    ranked = await Reader(services.manager).trends.ids(lang, now_ms=now)
    found = {k for k, _ in ranked}
    assert {i["koo_id"] for i in older} <= found
    assert len(found & {i["koo_id"] for i in burst}) == TRENDING_PER_AUTHOR
