"""The queue's Redis restarted while koos are published over HTTP.

The queue Redis is a `redis-server` of the test's own with the append-only file
on and fsynced on every write (as docs/operations.md asks for the queue), so what it
acknowledged survives a SIGKILL. Producers keep posting koos to
``POST /v1/events`` while it is killed and started again; a `feed worker`
process consumes the queue throughout.
"""

from __future__ import annotations

import asyncio
import signal
import time
from collections import Counter
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
from arq.constants import (
    in_progress_key_prefix,
    job_key_prefix,
    result_key_prefix,
    retry_key_prefix,
)

from feed import keys
from feed._embedded import free_port
from feed.api.app import create_app
from feed.models import User
from feed.services import Services, open_services
from tests.conftest import uid
from tests.fault._procs import RedisServer, scrape_metric, spawn_worker, stop_process, tail
from tests.helpers import event_job, in_ledger, koo, now_ms

pytestmark = [pytest.mark.fault, pytest.mark.default_client_only, pytest.mark.slow]

PRODUCERS = 2
PAUSE_SECONDS = 0.2  # between a producer's requests: a steady stream the worker keeps up with
KOOS_PER_REQUEST = 5
FOLLOWERS = 5
DOWN_SECONDS = 1.0
DELIVERY_SECONDS = 90.0
AUTH = {"Authorization": "Bearer test-token-123456"}


@pytest.fixture
async def queue_server(tmp_path: Path) -> AsyncIterator[RedisServer]:
    async with RedisServer(tmp_path / "queue", aof=True).serving() as server:
        yield server


@pytest.fixture
async def queue_services(services: Services, queue_server: RedisServer
                         ) -> AsyncIterator[Services]:
    """Services whose queue is the test's own Redis."""
    async with open_services(services.settings.replace(redis_url=queue_server.url(0))) as svc:
        yield svc


class Producers:
    """Loops posting batches of koos until stopped; they remember what got a 202."""

    def __init__(self, client: httpx.AsyncClient, author: str) -> None:
        self.client = client
        self.author = author
        self.stop = asyncio.Event()
        self.acknowledged: list[str] = []
        self.event_of: dict[str, str] = {}
        self.job_of: dict[str, str] = {}
        self.statuses: Counter[str] = Counter()

    async def loop(self) -> None:
        while not self.stop.is_set():
            batch = [koo(uid("k"), self.author) for _ in range(KOOS_PER_REQUEST)]
            try:
                reply = await self.client.post("/v1/events", json={"events": batch},
                                               headers=AUTH)
            except httpx.TransportError as exc:  # no answer at all: not acknowledged
                self.statuses[type(exc).__name__] += 1
                continue
            self.statuses[str(reply.status_code)] += 1
            if reply.status_code == 202:
                assert reply.json() == {"accepted": KOOS_PER_REQUEST}
                self.acknowledged += [e["koo_id"] for e in batch]
                self.event_of.update((e["koo_id"], e["event_id"]) for e in batch)
                self.job_of.update((e["koo_id"], event_job(e)) for e in batch)
            await asyncio.sleep(PAUSE_SECONDS)

    async def until_acknowledged(self, more: int, within: float = 30) -> None:
        target = len(self.acknowledged) + more
        deadline = time.monotonic() + within
        while len(self.acknowledged) < target:
            assert time.monotonic() < deadline, f"no 202 in {within} s: {self.statuses}"
            await asyncio.sleep(0.05)


async def _delivered(services: Services, readers: list[str], koo_ids: set[str]) -> int:
    """How many of ``koo_ids`` are in every reader's stored timeline."""
    found: set[str] | None = None
    for reader in readers:
        mine = {e.koo_id for e in (await services.stores.timelines.page(reader, limit=5000))[0]}
        found = mine if found is None else found & mine
    return len(koo_ids & (found or set()))


async def _whereabouts(services: Services, readers: list[str], producers: Producers,
                       acknowledged: set[str]) -> list[object]:
    """Where the jobs of undelivered koos are (for the failure message)."""
    found: set[str] | None = None
    for reader in readers:
        mine = {e.koo_id for e in (await services.stores.timelines.page(reader, limit=5000))[0]}
        found = mine if found is None else found & mine
    missing = sorted(acknowledged - (found or set()))
    redis = services.queue_redis
    out: list[object] = []
    for koo_id in missing[:10]:
        job = producers.job_of[koo_id]
        out.append((koo_id, await redis.zscore(keys.QUEUE_REALTIME, job),
                    await redis.pttl(job_key_prefix + job),
                    await redis.pttl(in_progress_key_prefix + job),
                    await redis.get(retry_key_prefix + job),
                    await redis.exists(result_key_prefix + job),
                    await in_ledger(services, producers.event_of[koo_id])))
    return out


async def test_queue_redis_restarted_while_koos_are_published(
    queue_services: Services, queue_server: RedisServer, tmp_path: Path,
) -> None:
    """Pass criterion: while producers post koos to POST /v1/events and the queue's
    Redis (AOF, fsync always) is SIGKILLed and started again, every request is answered
    (202, or a 5xx error), the worker rides the restart out, and every koo acknowledged
    with 202 is delivered, into the author's and every follower's timeline, within 90 s
    of the restart (jobs cut off by the kill run again as soon as the worker finds the
    restarted server, whose run id is new, rather than when arq's in-progress mark
    expires after 40 s)."""
    services = queue_services
    author = uid("author")
    followers = [f"{author}-f{i}" for i in range(FOLLOWERS)]
    at = now_ms()
    await services.stores.users.load_many(
        [(User(author, "@a", "hi", "ap-south-1", at, FOLLOWERS, 0), False)]
        + [(User(f, "@f", "hi", "ap-south-1", at, 0, 1), False) for f in followers], at=at)
    await services.stores.relations.load_many(
        [(f, keys.REL_FOLLOW, author) for f in followers], at=at)

    log = tmp_path / "worker.log"
    port = free_port()
    worker = spawn_worker(services.settings, log, "--queue", "realtime",
                          FEED_WORKER_METRICS_PORT=str(port))
    app = create_app(services.settings, services)
    try:
        # The worker is up (it serves its metrics once its services are open).
        await scrape_metric(worker, log, port, "feed_events_total", wait=60)
        async with app.router.lifespan_context(app), httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app, raise_app_exceptions=False),
            base_url="http://test", timeout=30,
        ) as client:
            producers = Producers(client, author)
            loops = [asyncio.create_task(producers.loop()) for _ in range(PRODUCERS)]
            try:
                await producers.until_acknowledged(4 * KOOS_PER_REQUEST)
                # ... and the worker is consuming them when the queue goes away.
                deadline = time.monotonic() + 30
                while not (applied := await scrape_metric(worker, log, port,
                                                          "feed_events_total")):
                    assert time.monotonic() < deadline, "the worker consumed nothing"
                    await asyncio.sleep(0.05)
                before_kill = len(producers.acknowledged)
                queue_server.kill()
                await asyncio.sleep(DOWN_SECONDS)
                queue_server.start()
                await queue_server.ready()
                restarted = time.monotonic()
                await producers.until_acknowledged(4 * KOOS_PER_REQUEST)
            finally:
                producers.stop.set()
                await asyncio.gather(*loops)
        acknowledged = set(producers.acknowledged)
        assert len(acknowledged) == len(producers.acknowledged)
        errors = {s: n for s, n in producers.statuses.items() if s != "202"}
        assert all(s.startswith("5") for s in errors), producers.statuses

        readers = [author, *followers]
        while (delivered := await _delivered(services, readers, acknowledged)) \
                < len(acknowledged):
            if time.monotonic() - restarted >= DELIVERY_SECONDS:
                print(await _whereabouts(services, readers, producers, acknowledged))
            assert time.monotonic() - restarted < DELIVERY_SECONDS, (
                f"{len(acknowledged) - delivered} of {len(acknowledged)} acknowledged koos "
                f"not delivered {DELIVERY_SECONDS} s after the restart; worker: {tail(log)}")
            assert worker.poll() is None, tail(log)
            await asyncio.sleep(0.25)
        took = time.monotonic() - restarted
        worker.send_signal(signal.SIGTERM)
        assert await asyncio.to_thread(worker.wait, 40) == 0, tail(log)
    finally:
        stop_process(worker)
    print(f"{len(acknowledged)} koos acknowledged ({before_kill} before the kill, "
          f"{applied:.0f} applied by then), requests "
          f"{dict(producers.statuses)}; all delivered {took:.1f} s after the restart")
