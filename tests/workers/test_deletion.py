"""The ``purge_deleted_koo`` job (workers/deletion.py): a deleted koo, already hidden
from reads, leaves its author's and followers' stored timelines."""

from __future__ import annotations

import pytest

from feed.reader import Reader
from feed.services import Services
from tests.conftest import uid
from tests.helpers import event, follow, koo, signup
from tests.workers._support import activate, apply, cached, job_ctx, stored
from workers.deletion import purge_deleted_koo

pytestmark = pytest.mark.timeout(120)


async def test_a_deleted_koo_leaves_every_timeline_that_held_it(services: Services) -> None:
    author, active, idle = uid(), uid(), uid()
    await apply(services, signup(author), signup(active), signup(idle),
                follow(active, author), follow(idle, author))
    doomed, kept = uid("k"), uid("k")
    await apply(services, koo(doomed, author), koo(kept, author))
    await activate(services, active)
    assert doomed in (await cached(services, active) or set())
    await apply(services, event("koo_deleted", koo_id=doomed, author_id=author))
    # Hidden from reads at once; the rows go with the purge job (left queued above).
    assert doomed in await stored(services, idle)
    assert await purge_deleted_koo(job_ctx(services), doomed) >= 3  # author and followers
    for reader in (author, active, idle):
        rows = await stored(services, reader)
        assert doomed not in rows, reader
        assert kept in rows, reader
    # A cached window keeps the entry (taking it out could open a gap below the window);
    # reads drop it, cache or not.
    for reader in (active, idle):
        shown = {i.koo.koo_id for i in (await Reader(services.manager).feed(reader)).items}
        assert kept in shown, reader
        assert doomed not in shown, reader
    # A duplicate job finds nothing more to remove and keeps the rest.
    await purge_deleted_koo(job_ctx(services), doomed)
    assert kept in await stored(services, idle)


async def test_purging_a_koo_that_was_never_stored_touches_nothing(
    services: Services,
) -> None:
    assert await purge_deleted_koo(job_ctx(services), uid("k")) == 0
