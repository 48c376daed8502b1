"""A read naming a user or koo that does not exist answers 404 and leaves nothing in the
cache: by default the cache shares the queue's Redis, which never evicts, so a crawler
of unknown ids must not be able to fill it (docs/api.md)."""

from __future__ import annotations

import asyncio

import httpx
import pytest

from feed.services import Services
from tests.api.conftest import assert_error
from tests.conftest import uid
from tests.helpers import apply_all, follow, relation, signup

USER_ROUTES = ["/v1/users/{id}", "/v1/users/{id}/feed", "/v1/users/{id}/koos",
               "/v1/users/{id}/recommendations/follows", "/v1/users/{id}/recommendations/koos"]
KOO_ROUTES = ["/v1/koos/{id}", "/v1/koos/{id}/reactions"]


async def cache_keys(services: Services) -> set[bytes]:
    return {k async for k in services.cache.redis.scan_iter(count=1000)}


@pytest.mark.parametrize("route", USER_ROUTES + KOO_ROUTES)
async def test_an_unknown_id_is_404_and_leaves_no_key_behind(
    services: Services, client: httpx.AsyncClient, route: str,
) -> None:
    """Pass: 200 reads of unknown ids add no key to the cache. Before: a feed read of an
    unknown user left 5 keys with a one-hour TTL (1,002 keys for 200 reads)."""
    known = uid("known")
    # An id that never signed up may still have relations stored (events about it
    # arrived): they must not be read into the cache for a 404 either.
    ghost = uid("ghost")
    await apply_all(services, signup(known), follow(ghost, known),
                    relation("user_blocked", known, ghost))
    await client.get(f"/v1/users/{known}/feed")  # the shared sets a feed read caches
    await services.manager.drain()
    before = await cache_keys(services)
    ids = [ghost] + [uid("nobody") for _ in range(199)]
    for some_id in ids:
        assert_error(await client.get(route.format(id=some_id)), 404, "not_found")
    await services.manager.drain()
    await asyncio.sleep(0.1)  # a stray write of a load the 404 did not wait for
    added = await cache_keys(services) - before
    assert added == set(), sorted(added)[:10]
