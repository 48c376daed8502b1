"""The fan-out jobs (workers/fanout.py): a chunk delivery, resuming an unfinished fan-out
until every follower has the koo, and the sweeper that re-enqueues a fan-out whose jobs
were lost."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest

from config.settings import Settings
from feed.services import Services, open_services
from tests.conftest import uid
from tests.helpers import drain, follow, koo, signup
from tests.workers._support import activate, apply, cached, job_ctx, stored
from workers.fanout import deliver_koo_chunk, fan_out_koo, sweep_fanouts

pytestmark = pytest.mark.timeout(120)

CHUNK = 2


@pytest.fixture
async def chunked(settings: Settings) -> AsyncIterator[Services]:
    """Services that fan out in chunks of two followers, with a one-second deadline."""
    async with open_services(settings.replace(fanout_chunk_size=CHUNK,
                                              fanout_deadline_seconds=1)) as svc:
        yield svc


async def author_with_followers(svc: Services, n: int) -> tuple[str, list[str]]:
    author, followers = uid(), [uid() for _ in range(n)]
    await apply(svc, signup(author), *(signup(f) for f in followers),
                *(follow(f, author) for f in followers))
    return author, followers


async def test_a_chunk_is_delivered_to_its_readers_storage_and_cache(
    services: Services,
) -> None:
    author, active, idle, outside = uid(), uid(), uid(), uid()
    await apply(services, *(signup(u) for u in (author, active, idle, outside)))
    await activate(services, active)
    k = uid("k")
    await apply(services, koo(k, author))  # no followers yet: nobody else has it
    item = await services.stores.koos.get(k, consistent=True)
    assert item is not None
    assert k not in await stored(services, active)
    result = await deliver_koo_chunk(job_ctx(services), k, "c-2", [active, idle], author,
                                     int(item["created_at"]))
    assert result in {"done", "delivered"}
    for reader in (active, idle):
        assert k in await stored(services, reader)
    assert k not in await stored(services, outside)
    assert k in (await cached(services, active) or set())
    assert await cached(services, idle) is None  # an inactive reader gets no cache
    # Delivered again (a retried job): still one row each.
    await deliver_koo_chunk(job_ctx(services), k, "c-2", [active, idle], author,
                            int(item["created_at"]))
    rows, _ = await services.stores.timelines.page(active, limit=1000)
    assert [e.koo_id for e in rows].count(k) == 1


async def test_a_chunk_of_a_koo_that_is_not_stored_delivers_nothing(
    services: Services,
) -> None:
    reader = uid()
    missing = uid("k")
    assert await deliver_koo_chunk(job_ctx(services), missing, "c-1", [reader]) == "gone"
    assert missing not in await stored(services, reader)


async def test_a_chunk_job_without_the_koos_author_reads_it(services: Services) -> None:
    author, (reader,) = await author_with_followers(services, 1)
    k = uid("k")
    await apply(services, koo(k, author))
    late = uid()
    await apply(services, signup(late))
    assert await deliver_koo_chunk(job_ctx(services), k, "c-late", [late]) in {
        "done", "delivered"}
    assert k in await stored(services, late)
    assert k in await stored(services, reader)


async def test_resuming_an_unfinished_fan_out_reaches_every_follower_once(
    chunked: Services,
) -> None:
    author, followers = await author_with_followers(chunked, 5)
    k = uid("k")
    await apply(chunked, koo(k, author))
    await chunked.queue_redis.flushdb()  # the chunk jobs are lost
    missing = [f for f in followers if k not in await stored(chunked, f)]
    assert missing, "one job delivered every chunk: nothing left to resume"
    outcomes = []
    for attempt in range(1, 10):
        outcomes.append(await fan_out_koo(job_ctx(chunked), k, attempt))
        if outcomes[-1] == "done":
            break
        await drain(chunked)
    for reader in [author, *followers]:
        assert k in await stored(chunked, reader), reader
    # Once done, running it again changes nothing.
    assert await fan_out_koo(job_ctx(chunked), k, 99) != "running"
    for reader in followers:
        rows, _ = await chunked.stores.timelines.page(reader, limit=1000)
        assert [e.koo_id for e in rows].count(k) == 1


async def test_fanning_out_a_koo_that_is_not_stored_does_nothing(services: Services) -> None:
    assert await fan_out_koo(job_ctx(services), uid("k")) == "gone"


async def test_the_sweeper_re_enqueues_a_fan_out_whose_jobs_were_lost(
    chunked: Services,
) -> None:
    author, followers = await author_with_followers(chunked, 5)
    k = uid("k")
    await apply(chunked, koo(k, author))
    await chunked.queue_redis.flushdb()  # a lost queue
    assert any([k not in await stored(chunked, f) for f in followers])
    await asyncio.sleep(2.2)  # past the one-second deadline
    assert await sweep_fanouts(job_ctx(chunked)) >= 1
    await drain(chunked)
    for reader in followers:
        assert k in await stored(chunked, reader), reader
