"""The backfill-queue jobs (workers/backfill.py): a reader's timeline rebuilt from whom
they follow, trimmed to the per-reader cap, recommendations computed and stored, and one
chunk of a ``feed backfill`` run, which records itself done."""

from __future__ import annotations

from typing import Any

import pytest

from config.settings import Settings
from feed import keys
from feed.services import Services, open_services
from tests.conftest import uid
from tests.helpers import follow, koo, relation, signup
from tests.workers._support import activate, apply, cached, job_ctx, stored
from workers.backfill import (
    backfill_chunk,
    compute_recommendations,
    rebuild_timeline,
    trim_timeline,
)

pytestmark = pytest.mark.timeout(120)


async def lost_timeline(svc: Services) -> tuple[str, set[str], set[str]]:
    """A reader who follows two authors and mutes one, with every timeline row lost:
    (reader, the koos a rebuild must bring, the koos it must not)."""
    reader, seen, muted = uid(), uid(), uid()
    own, theirs, hidden = uid("k"), uid("k"), uid("k")
    await apply(svc, signup(reader), signup(seen), signup(muted),
                follow(reader, seen), follow(reader, muted),
                koo(own, reader), koo(theirs, seen), koo(hidden, muted),
                relation("user_muted", reader, muted))
    rows, _ = await svc.stores.timelines.page(reader, limit=1000)
    await svc.stores.timelines.remove_keys(reader, [e.sort_key for e in rows])
    assert await stored(svc, reader) == set()
    return reader, {own, theirs}, {hidden}


async def test_a_rebuild_restores_what_the_reader_sees_in_storage_and_cache(
    services: Services,
) -> None:
    reader, wanted, unwanted = await lost_timeline(services)
    await activate(services, reader)
    assert await rebuild_timeline(job_ctx(services), reader) >= len(wanted)
    rows = await stored(services, reader)
    assert wanted <= rows
    assert not unwanted & rows
    assert wanted <= (await cached(services, reader) or set())
    # Twice is the same as once.
    await rebuild_timeline(job_ctx(services), reader)
    assert await stored(services, reader) == rows


async def test_a_trim_keeps_the_newest_rows_up_to_the_cap(settings: Settings) -> None:
    async with open_services(settings.replace(timeline_max_items=3)) as svc:
        reader, author = uid(), uid()
        ids = [uid("k") for _ in range(5)]
        await apply(svc, signup(reader), signup(author), follow(reader, author),
                    *(koo(k, author) for k in ids))
        before = await stored(svc, reader)
        assert await trim_timeline(job_ctx(svc), reader) == len(before) - 3
        assert await stored(svc, reader) == set(ids[-3:])
        assert await trim_timeline(job_ctx(svc), reader) == 0


async def test_recommendations_are_computed_and_stored(services: Services) -> None:
    reader, friend, suggested = uid(), uid(), uid()
    await apply(services, signup(reader), signup(friend), signup(suggested),
                follow(reader, friend), follow(friend, suggested))
    assert await compute_recommendations(job_ctx(services), reader) >= 1
    follows = await services.stores.recommendations.load(reader, "follows")
    targets = [f["target"] for f in follows]
    assert suggested in targets
    assert friend not in targets
    assert reader not in targets


async def test_recommendations_for_an_unknown_user_are_nothing(services: Services) -> None:
    nobody = uid()
    assert await compute_recommendations(job_ctx(services), nobody) == 0
    assert await services.stores.recommendations.load(nobody, "follows") == []


async def test_a_backfill_chunk_rebuilds_its_users_and_records_itself_done(
    services: Services,
) -> None:
    first, wanted_first, _ = await lost_timeline(services)
    second, wanted_second, _ = await lost_timeline(services)
    run_id = uid("run")
    assert await backfill_chunk(job_ctx(services), run_id, "timelines", "c0",
                                [first, second]) == 2
    assert wanted_first <= await stored(services, first)
    assert wanted_second <= await stored(services, second)
    members: Any = services.queue_redis.smembers(keys.backfill_done(run_id))
    done = await members
    assert {d.decode() if isinstance(d, bytes) else d for d in done} == {"c0"}


async def test_a_recommendations_chunk_skips_unknown_users_and_still_finishes(
    services: Services,
) -> None:
    reader, friend, suggested = uid(), uid(), uid()
    await apply(services, signup(reader), signup(friend), signup(suggested),
                follow(reader, friend), follow(friend, suggested))
    run_id = uid("run")
    assert await backfill_chunk(job_ctx(services), run_id, "recommendations", "c1",
                                [uid(), reader]) == 2
    follows = await services.stores.recommendations.load(reader, "follows")
    assert suggested in [f["target"] for f in follows]
    members: Any = services.queue_redis.smembers(keys.backfill_done(run_id))
    done = await members
    assert {d.decode() if isinstance(d, bytes) else d for d in done} == {"c1"}
