"""The realtime stream with the hot cache on a 3-master Redis Cluster (the cluster of
tests/test_cluster.py): live streams on the reader's slot, wake-ups reaching an API
process subscribed on any node, fan-out and celebrity koos and removes streamed."""

from __future__ import annotations

import pytest
from redis.crc import key_slot

from feed import keys
from feed.api.app import create_app
from feed.services import Services, open_services
from tests.api.conftest import seed
from tests.conftest import uid
from tests.helpers import event, follow, koo, signup
from tests.stream_client import open_stream, serve
from tests.test_cluster import cluster_url, on_cluster  # noqa: F401  (fixtures)

pytestmark = pytest.mark.slow


def test_live_keys_share_the_readers_slot() -> None:
    reader = uid("r")
    slot = key_slot(keys.timeline(reader).encode())
    assert key_slot(keys.live_stream(reader).encode()) == slot
    assert key_slot(keys.live_seen(reader).encode()) == slot


async def test_streams_on_a_cluster_across_two_api_processes(
    on_cluster: Services,  # noqa: F811
) -> None:
    """Pass: two API apps (each its own hub and subscriber) over the Cluster each stream
    their reader's fan-out koo, a celebrity's pulled koo and a delete's ``remove``."""
    settings = on_cluster.settings.replace(celebrity_followers=2)
    p = {n: uid(n) for n in ("r1", "r2", "a", "c")}
    await seed(settings, [signup(u) for u in p.values()],
               [follow(p["r1"], p["a"]), follow(p["r2"], p["a"]),
                follow(p["r1"], p["c"]), follow(p["r2"], p["c"])])
    async with open_services(settings) as one, open_services(settings) as two:
        apps = [create_app(settings, one), create_app(settings, two)]
        async with apps[0].router.lifespan_context(apps[0]), \
                apps[1].router.lifespan_context(apps[1]), \
                serve(apps[0]) as url1, serve(apps[1]) as url2, \
                open_stream(url1, p["r1"]) as s1, open_stream(url2, p["r2"]) as s2:
            assert s1.status == s2.status == 200
            fanned, pulled = uid("k"), uid("k")
            await seed(settings, [koo(fanned, p["a"]), koo(pulled, p["c"])])
            for stream in (s1, s2):
                got = {(await stream.next_of("koo", 20)).data["koo_id"] for _ in range(2)}
                assert got == {fanned, pulled}
            await seed(settings, [event("koo_deleted", koo_id=fanned, author_id=p["a"])])
            for stream in (s1, s2):
                assert (await stream.next_of("remove", 20)).data == {"koo_id": fanned}
