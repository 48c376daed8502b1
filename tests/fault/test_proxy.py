"""A TCP fault proxy between the service and DynamoDB / Redis (issue 7, item 8).

Pass criteria, asserted below:

- DynamoDB behind the proxy, workers applying events while it adds 200 ms of latency,
  resets connections (before and after the request reached DynamoDB) and blackholes
  them: a call during the blackhole fails (StorageUnavailable) within its configured
  timeouts; afterwards every event is applied once, every follower's timeline holds
  every koo exactly once, and the follower and like counters are exact; nothing is
  dead-lettered. The proxy's counters show each fault really happened.
- The cache and queue Redis behind the proxy: with latency, resets and a blackhole on
  the cache, every feed read answers within 1 s (200, or 503 with the contract's body);
  with the queue blackholed, ``POST /v1/events`` answers 503 (not 500) once the queue's
  timeout fires, and the producer's retry of the same batch afterwards is applied
  exactly once.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Iterator
from urllib.parse import urlsplit

import httpx
import orjson
import pytest

from config.settings import Settings
from feed import keys
from feed.api.app import create_app
from feed.errors import StorageUnavailable
from feed.models import User
from feed.services import Services, open_services
from tests.conftest import CACHE_URL, QUEUE_URL, uid
from tests.fault._proxy import FaultProxy, Mode
from tests.fault.conftest import DynamoDBLocal, dynamodb_local, fault_settings
from tests.fault.test_dynamodb_outage import call_bound, wait_applied
from tests.helpers import follow, koo, now_ms, react, signup, user_counters
from workers.runner import run_workers

pytestmark = [pytest.mark.fault, pytest.mark.slow]

AUTH = {"Authorization": "Bearer test-token-123456"}
FOLLOWERS = 8
ANSWER_WITHIN = 1.0


@pytest.fixture(scope="module")
def ddb(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DynamoDBLocal]:
    with dynamodb_local(tmp_path_factory.mktemp("dynamodb-data")) as instance:
        yield instance


@pytest.fixture
async def settings(ddb: DynamoDBLocal) -> Settings:
    return await fault_settings(ddb.endpoint)


async def load_graph(svc: Services) -> tuple[str, list[str]]:
    author, followers = uid("a"), [uid("f") for _ in range(FOLLOWERS)]
    at = now_ms()
    await svc.stores.users.load_many(
        [(User(author, "@a", "hi", "ap-south-1", at, FOLLOWERS, 0), False)]
        + [(User(f, "@f", "hi", "ap-south-1", at, 0, 1), False) for f in followers],
        at=at,
    )
    await svc.stores.relations.load_many([(f, keys.REL_FOLLOW, author) for f in followers],
                                         at=at)
    return author, followers


@pytest.fixture
async def patient(settings: Settings) -> AsyncIterator[Services]:
    """Services straight to DynamoDB with long timeouts, for seeding and checking."""
    async with open_services(settings.replace(dynamodb_read_timeout=30.0,
                                              dynamodb_max_attempts=4)) as svc:
        yield svc


async def test_dynamodb_behind_a_faulty_proxy(settings: Settings, patient: Services) -> None:
    """Latency, resets and a blackhole between the workers and DynamoDB: timeouts fire,
    and nothing is lost or doubled (see the module's pass criteria)."""
    author, followers = await load_graph(patient)
    port = urlsplit(settings.dynamodb_endpoint or "").port
    assert port is not None
    with FaultProxy("127.0.0.1", port) as proxy:
        proxied = settings.replace(dynamodb_endpoint=f"http://127.0.0.1:{proxy.port}")
        async with open_services(proxied) as svc:
            stop = asyncio.Event()
            workers = asyncio.create_task(
                run_workers(proxied, services=svc, stop=stop, handle_signals=False))
            try:
                koos = [uid("k") for _ in range(6)]
                newcomers = [uid("n") for _ in range(3)]
                events = [
                    *(signup(n) for n in newcomers),
                    *(koo(k, author) for k in koos),
                    *(follow(n, author) for n in newcomers),
                    *(react("like", k, followers[i]) for i, k in enumerate(koos)),
                ]
                await svc.publisher.publish(events)
                for mode, seconds in [(Mode.latency(200), 2.0), (Mode.reset(), 1.5),
                                      (Mode.reset(lose_reply=True), 1.5)]:
                    proxy.set_mode(mode)
                    await asyncio.sleep(seconds)
                proxy.set_mode(Mode.blackhole())
                started = time.perf_counter()
                with pytest.raises(StorageUnavailable):
                    await svc.stores.db.get("users", {"user_id": author}, consistent=True)
                took = time.perf_counter() - started
                assert took < call_bound(proxied), f"a blackholed call took {took:.2f} s"
                await asyncio.sleep(1.0)
                proxy.set_mode(Mode.passing())
                await wait_applied(patient, events, within=45)
                deadline = time.monotonic() + 30
                while True:
                    counts = [await _counts(patient, f, koos) for f in (*followers, *newcomers)]
                    if all(c >= 1 for row in counts for c in row):
                        break
                    assert time.monotonic() < deadline, counts
                    await asyncio.sleep(0.25)
            finally:
                stop.set()
                await workers
        stats = proxy.stats
    assert counts == [[1] * len(koos)] * (FOLLOWERS + len(newcomers)), counts
    assert (await user_counters(patient, author))[0] == FOLLOWERS + len(newcomers)
    for k in koos:
        item = await patient.stores.koos.get(k, consistent=True)
        assert item is not None
        assert int(item.get("likes", 0)) == 1, item
    assert await patient.stores.dead_letters.all() == []
    assert stats.delayed_chunks > 0, stats
    assert stats.resets > 0, stats
    assert stats.swallowed > 0, stats


async def _counts(svc: Services, reader: str, koo_ids: list[str]) -> list[int]:
    entries, _ = await svc.stores.timelines.page(reader, limit=500)
    return [sum(e.koo_id == k for e in entries) for k in koo_ids]


def _via(url: str, port: int) -> str:
    """``url`` with its host and port replaced by the proxy's."""
    parts = urlsplit(url)
    return parts._replace(netloc=f"127.0.0.1:{port}").geturl()


async def test_redis_behind_a_faulty_proxy(settings: Settings, patient: Services) -> None:
    """Latency, resets and a blackhole between the API and Redis: answers within 1 s
    (200 or 503), a 503 for events the queue cannot take, nothing lost or doubled."""
    author, followers = await load_graph(patient)
    koos = [koo(uid("k"), author) for _ in range(20)]
    await patient.publisher.publish(koos)
    await run_workers(settings, burst=True, services=patient)
    await wait_applied(patient, koos, within=45)
    redis_port = urlsplit(CACHE_URL).port or 6379
    with FaultProxy("127.0.0.1", redis_port) as cache_proxy, \
            FaultProxy("127.0.0.1", redis_port) as queue_proxy:
        proxied = settings.replace(cache_redis_url=_via(CACHE_URL, cache_proxy.port),
                                   redis_url=_via(QUEUE_URL, queue_proxy.port))
        async with open_services(proxied) as svc:
            app = create_app(proxied, svc)
            async with app.router.lifespan_context(app):
                transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
                async with httpx.AsyncClient(transport=transport, base_url="http://test",
                                             headers=AUTH) as client:
                    reader = followers[0]
                    path = f"/v1/users/{reader}/feed?limit=5"
                    assert (await client.get(path)).status_code in (200, 503)
                    await svc.manager.drain()
                    for mode in (Mode.passing(), Mode.latency(100), Mode.reset(),
                                 Mode.blackhole(), Mode.passing()):
                        cache_proxy.set_mode(mode)
                        for _ in range(3):
                            started = time.perf_counter()
                            response = await client.get(path)
                            took = time.perf_counter() - started
                            assert took < ANSWER_WITHIN, (mode, took)
                            assert response.status_code in (200, 503), response.text
                            if response.status_code == 503:
                                assert response.json()["error"]["code"] == "unavailable"
                    newcomer = uid("n")
                    batch = [signup(newcomer), follow(newcomer, author),
                             react("like", koos[0]["koo_id"], followers[1])]
                    body = orjson.dumps({"events": batch})
                    with queue_proxy.fault(Mode.blackhole()):
                        started = time.perf_counter()
                        response = await client.post("/v1/events", content=body)
                        took = time.perf_counter() - started
                    assert response.status_code == 503, response.text
                    assert response.json()["error"]["code"] == "unavailable"
                    # The producer retries the same batch (same event ids).
                    response = await client.post("/v1/events", content=body)
                    assert response.status_code == 202, response.text
        cache_stats, queue_stats = cache_proxy.stats, queue_proxy.stats
    assert took < 5.0 + 1.0 + ANSWER_WITHIN, took  # the queue's socket timeout is 5 s
    await run_workers(settings, burst=True, services=patient)
    await wait_applied(patient, batch, within=45)
    assert (await user_counters(patient, author))[0] == FOLLOWERS + 1
    item = await patient.stores.koos.get(koos[0]["koo_id"], consistent=True)
    assert item is not None
    assert int(item.get("likes", 0)) == 1, item
    assert cache_stats.delayed_chunks > 0, cache_stats
    assert cache_stats.resets > 0, cache_stats
    assert queue_stats.swallowed > 0, queue_stats
