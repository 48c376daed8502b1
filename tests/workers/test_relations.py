"""The jobs that follow relation changes (workers/relations.py): an author merged into a
reader's timeline after a follow, purged out after an unfollow or a mute, and a celebrity
who falls below the threshold fanned out to the followers who were pulling them."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from config.settings import Settings
from feed.services import Services, open_services
from tests.conftest import uid
from tests.helpers import follow, koo, relation, signup, unfollow
from tests.workers._support import activate, apply, cached, job_ctx, stored
from workers.relations import (
    demote_celebrity,
    merge_author_into_timeline,
    purge_author_from_timeline,
)

pytestmark = pytest.mark.timeout(120)


async def posts(svc: Services, author: str, n: int) -> list[str]:
    """``n`` koos by ``author``, oldest first."""
    ids = [uid("k") for _ in range(n)]
    await apply(svc, *(koo(k, author) for k in ids))
    return ids


async def test_a_follow_merges_the_authors_recent_koos_into_storage_and_cache(
    services: Services,
) -> None:
    reader, author = uid(), uid()
    await apply(services, signup(reader), signup(author))
    older = await posts(services, author, 2)
    await activate(services, reader)
    await apply(services, follow(reader, author))  # its merge job is left queued
    assert not set(older) & await stored(services, reader)
    assert await merge_author_into_timeline(job_ctx(services), reader, author) >= 1
    assert set(older) <= await stored(services, reader)
    assert set(older) <= (await cached(services, reader) or set())
    # Run again (a duplicate job): the same rows, once each.
    await merge_author_into_timeline(job_ctx(services), reader, author)
    rows, _ = await services.stores.timelines.page(reader, limit=1000)
    assert sorted(e.koo_id for e in rows if e.koo_id in older) == sorted(older)


async def test_a_merge_brings_at_most_the_configured_number_of_koos(
    settings: Settings,
) -> None:
    async with open_services(settings.replace(backfill_on_follow=2)) as svc:
        reader, author = uid(), uid()
        await apply(svc, signup(reader), signup(author))
        ids = await posts(svc, author, 3)
        await apply(svc, follow(reader, author))
        await merge_author_into_timeline(job_ctx(svc), reader, author)
        assert await stored(svc, reader) & set(ids) == set(ids[1:])  # the newest two


async def test_an_unfollow_purges_the_author_and_only_the_author(services: Services) -> None:
    reader, gone, kept = uid(), uid(), uid()
    await apply(services, signup(reader), signup(gone), signup(kept),
                follow(reader, gone), follow(reader, kept))
    theirs = await posts(services, gone, 2)
    ours = await posts(services, kept, 1)
    await activate(services, reader)
    assert set(theirs + ours) <= await stored(services, reader)
    await apply(services, unfollow(reader, gone))  # its purge job is left queued
    assert await purge_author_from_timeline(job_ctx(services), reader, gone) >= 1
    rows = await stored(services, reader)
    assert not set(theirs) & rows
    assert set(ours) <= rows
    assert not set(theirs) & (await cached(services, reader) or set())
    # Again (a duplicate job): nothing left to take out.
    assert await purge_author_from_timeline(job_ctx(services), reader, gone) == 0
    assert set(ours) <= await stored(services, reader)


async def test_a_mute_purges_the_author_though_the_reader_still_follows(
    services: Services,
) -> None:
    reader, author = uid(), uid()
    await apply(services, signup(reader), signup(author), follow(reader, author))
    ids = await posts(services, author, 2)
    await apply(services, relation("user_muted", reader, author))
    await purge_author_from_timeline(job_ctx(services), reader, author)
    assert not set(ids) & await stored(services, reader)


async def test_a_purge_leaves_an_author_the_reader_sees_again(services: Services) -> None:
    reader, author = uid(), uid()
    await apply(services, signup(reader), signup(author), follow(reader, author))
    ids = await posts(services, author, 2)
    # Unfollowed, then followed again before the purge job ran.
    await apply(services, unfollow(reader, author), follow(reader, author))
    assert await purge_author_from_timeline(job_ctx(services), reader, author) == 0
    assert set(ids) <= await stored(services, reader)


@pytest.fixture
async def celebrity_at_two(settings: Settings) -> AsyncIterator[Services]:
    """Services whose authors become celebrities at two followers."""
    async with open_services(settings.replace(celebrity_followers=2)) as svc:
        yield svc


async def test_a_demoted_celebrity_is_fanned_out_to_their_followers(
    celebrity_at_two: Services,
) -> None:
    svc = celebrity_at_two
    author, stays, leaves = uid(), uid(), uid()
    await apply(svc, signup(author), signup(stays), signup(leaves),
                follow(stays, author), follow(leaves, author))
    pulled = await posts(svc, author, 2)
    assert not set(pulled) & await stored(svc, stays)  # a celebrity's koos are pulled
    # Still a celebrity: nothing to do.
    assert await demote_celebrity(job_ctx(svc), author) == 0
    assert not set(pulled) & await stored(svc, stays)
    await apply(svc, unfollow(leaves, author))  # one follower left: below the threshold
    assert await demote_celebrity(job_ctx(svc), author) >= 1
    assert set(pulled) <= await stored(svc, stays)
    assert not set(pulled) & await stored(svc, leaves)
    # Once demoted, new koos are fanned out as anyone's.
    (fresh,) = await posts(svc, author, 1)
    assert fresh in await stored(svc, stays)
